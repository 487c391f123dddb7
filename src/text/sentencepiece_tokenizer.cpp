// XLM-RoBERTa's tokenizer: the sentencepiece library for the pieces, Hugging Face's
// XLMRobertaTokenizer rules for the special tokens and ids, open_clip's HFTokenizer cleaning.
#include "clipkit/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/tokenizer.h"
#include "text/clean.h"
#include "text/html_entities.h"
#include "text/utf8.h"

namespace clipkit {

struct SentencePieceTokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

namespace {

// The special-token strings XLMRobertaTokenizer matches in raw text, with their ids (<mask>'s is
// set at load).
struct Special {
  std::string_view text;
  int32_t id;
};

// A model file that is not protobuf, and one whose content the sentencepiece library cannot take.
struct NotProtobuf : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct Unusable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The fields of one protobuf message, in file order (wire format: varint keys; varint, 64-bit,
// length-delimited and 32-bit values; groups, long deprecated, are refused).
class ProtoFields {
 public:
  explicit ProtoFields(std::string_view data) : d_(data) {}
  // The next field; false at the end. Throws NotProtobuf on malformed data.
  bool next(uint32_t* field, std::string_view* bytes) {
    if (pos_ == d_.size()) return false;
    const uint64_t key = varint();
    *field = static_cast<uint32_t>(key >> 3);
    *bytes = {};
    switch (key & 7) {
      case 0: varint(); break;
      case 1: skip(8); break;
      case 5: skip(4); break;
      case 2: {
        const uint64_t n = varint();
        if (n > d_.size() - pos_) throw NotProtobuf("a field runs past the end");
        *bytes = d_.substr(pos_, static_cast<size_t>(n));
        pos_ += static_cast<size_t>(n);
        break;
      }
      default: throw NotProtobuf("unsupported wire type");
    }
    return true;
  }

 private:
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ == d_.size()) throw NotProtobuf("a number runs past the end");
      const auto b = static_cast<uint8_t>(d_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    throw NotProtobuf("a number is longer than 10 bytes");
  }
  void skip(size_t n) {
    if (n > d_.size() - pos_) throw NotProtobuf("a field runs past the end");
    pos_ += n;
  }
  std::string_view d_;
  size_t pos_ = 0;
};

// A normalizer's precompiled character map: a 32-bit little-endian size, a double-array trie of
// that many bytes (32-bit units), then the replacement strings, each ending in a NUL. The
// sentencepiece library walks the trie without bounds checks, so a crafted map would make it read
// outside the model: this walks every node reachable from the root, as the library would for any
// input byte, and checks that each unit it would read lies in the trie and that each replacement
// it would return starts inside the strings and ends in a NUL there. Throws Unusable.
void check_charsmap(std::string_view blob) {
  if (blob.empty()) return;  // no map: the normalizer leaves text as it is
  if (blob.size() < 4) throw Unusable("the character map is shorter than its size field");
  uint32_t trie_bytes = 0;
  for (int i = 3; i >= 0; --i) trie_bytes = (trie_bytes << 8) | static_cast<uint8_t>(blob[static_cast<size_t>(i)]);
  if (trie_bytes > blob.size() - 4) throw Unusable("the character map's trie runs past its end");
  const size_t units = trie_bytes / 4;
  const std::string_view strings = blob.substr(4 + trie_bytes);
  auto unit = [&](size_t k) {
    uint32_t u = 0;
    for (int i = 3; i >= 0; --i) u = (u << 8) | static_cast<uint8_t>(blob[4 + 4 * k + static_cast<size_t>(i)]);
    return u;
  };
  auto offset = [](uint32_t u) { return static_cast<size_t>((u >> 10) << ((u & (1u << 9)) >> 6)); };
  if (units == 0) throw Unusable("the character map's trie is empty");
  std::vector<bool> seen(units);
  std::vector<size_t> todo{0};
  seen[0] = true;
  while (!todo.empty()) {
    const size_t node = todo.back();
    todo.pop_back();
    const uint32_t u = unit(node);
    const size_t base = node ^ offset(u);
    if ((base | 0xff) >= units) throw Unusable("the character map's trie points outside itself");
    if (node != 0 && (u >> 8) & 1) {  // a leaf: the replacement's offset is held at `base`
      const size_t at = unit(base) & 0x7fffffffu;
      if (at >= strings.size() || strings.find('\0', at) == std::string_view::npos)
        throw Unusable("the character map names a replacement outside its strings");
    }
    for (uint32_t c = 0; c < 256; ++c) {
      const size_t child = base ^ c;
      if ((unit(child) & 0x800000ffu) == c && !seen[child]) {
        seen[child] = true;
        todo.push_back(child);
      }
    }
  }
}

// Checks a serialized ModelProto before the sentencepiece library reads it: every piece (field 1)
// has a text (its field 1, the last one counting) that is not empty and holds no NUL byte (the
// library builds a trie of the texts as C strings and ends the process on an empty key), and the
// character maps of the normalizer (field 3) and denormalizer (field 5) are sound (their
// precompiled_charsmap, field 2, every occurrence).
void check_model_proto(std::string_view model) {
  ProtoFields top(model);
  uint32_t field = 0;
  std::string_view bytes;
  while (top.next(&field, &bytes)) {
    if (field == 1) {
      ProtoFields piece(bytes);
      uint32_t f = 0;
      std::string_view b, text;
      while (piece.next(&f, &b))
        if (f == 1) text = b;
      if (text.empty()) throw Unusable("a piece has no text");
      if (text.find('\0') != std::string_view::npos) throw Unusable("a piece holds a NUL byte");
    } else if (field == 3 || field == 5) {
      ProtoFields spec(bytes);
      uint32_t f = 0;
      std::string_view b;
      while (spec.next(&f, &b))
        if (f == 2) check_charsmap(b);
    }
  }
}

}  // namespace

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::shared_ptr<const SentencePieceTokenizer> SentencePieceTokenizer::load(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error(ErrorCode::NotFound, "tokenizer '" + path + "' does not exist");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::Io, "cannot read tokenizer '" + path + "'");
  std::ostringstream buf;
  buf << in.rdbuf();
  const std::string bytes = buf.str();
  if (bytes.empty()) throw Error(ErrorCode::Format, "tokenizer '" + path + "' is empty, not a SentencePiece model");
  try {
    check_model_proto(bytes);
  } catch (const NotProtobuf& e) {
    throw Error(ErrorCode::Format, "tokenizer '" + path + "' is not a SentencePiece model (not a readable model protobuf: " +
                                       e.what() + ")");
  } catch (const Unusable& e) {
    throw Error(ErrorCode::Format, "tokenizer '" + path + "' is not a usable SentencePiece model (" + e.what() + ")");
  }
  std::shared_ptr<SentencePieceTokenizer> t(new SentencePieceTokenizer());
  t->impl_ = std::make_unique<Impl>();
  const auto status = t->impl_->sp.LoadFromSerializedProto(bytes);
  if (!status.ok() || t->impl_->sp.GetPieceSize() < 4)
    throw Error(ErrorCode::Format, "tokenizer '" + path + "' is not a SentencePiece model (" +
                                       (status.ok() ? "fewer than 4 pieces" : "not a readable model protobuf") + ")");
  t->vocab_size_ = t->impl_->sp.GetPieceSize() + 2;
  t->path_ = path;
  return t;
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  const Special specials[] = {{"<s>", kBos}, {"</s>", kEos}, {"<unk>", kUnk}, {"<pad>", kPad}, {"<mask>", mask_id()}};
  std::vector<int32_t> ids{kBos};
  std::vector<int> pieces;
  auto encode_chunk = [&](std::string_view chunk) {
    if (chunk.empty()) return;
    pieces.clear();
    const auto status = impl_->sp.Encode(chunk, &pieces);
    // A model that loaded can still be unable to cut a text (a character map whose output no piece
    // covers): an error about the model, not a crash.
    if (!status.ok())
      throw Error(ErrorCode::Format, "the SentencePiece model cannot encode this text (" + std::string(status.message()) + ")");
    for (int p : pieces) ids.push_back(p == 0 || impl_->sp.IsUnknown(p) ? kUnk : static_cast<int32_t>(p) + 1);
  };
  size_t start = 0;  // the chunk not yet encoded begins here
  for (size_t i = 0; i < text.size();) {
    const Special* hit = nullptr;
    if (text[i] == '<')
      for (const Special& s : specials)
        if (text.compare(i, s.text.size(), s.text) == 0) {
          hit = &s;
          break;
        }
    if (!hit) {
      ++i;
      continue;
    }
    std::string_view before = text.substr(start, i - start);
    if (hit->id == mask_id())  // <mask> strips the whitespace on its left (AddedToken lstrip)
      while (!before.empty() && text::is_py_space(static_cast<unsigned char>(before.back()))) before.remove_suffix(1);
    encode_chunk(before);
    ids.push_back(hit->id);
    i += hit->text.size();
    start = i;
  }
  encode_chunk(text.substr(start));
  ids.push_back(kEos);
  return ids;
}

std::string SentencePieceTokenizer::clean_openclip(std::string_view text) {
  const std::u32string fixed = text::decode_utf8(normalize_text(text));
  const std::u32string unescaped = text::html_unescape(text::html_unescape(fixed));
  std::u32string out;
  out.reserve(unescaped.size());
  for (size_t i = 0; i < unescaped.size();) {
    if (text::is_py_space(unescaped[i])) {
      while (i < unescaped.size() && text::is_py_space(unescaped[i])) ++i;
      if (!out.empty() && i < unescaped.size()) out.push_back(U' ');
    } else {
      out.push_back(unescaped[i++]);
    }
  }
  return text::encode_utf8(out);
}

std::vector<int32_t> SentencePieceTokenizer::encode_openclip(std::string_view text, int context_length) const {
  if (context_length < 2)
    throw Error(ErrorCode::InvalidArgument,
                "context length must be at least 2 (<s> and </s>), got " + std::to_string(context_length));
  std::vector<int32_t> ids = encode(clean_openclip(text));
  const size_t n = static_cast<size_t>(context_length);
  if (ids.size() > n) {
    ids.resize(n);
    ids.back() = kEos;
  }
  ids.resize(n, kPad);
  return ids;
}

}  // namespace clipkit
