// XLM-RoBERTa's tokenizer: the sentencepiece library for the pieces, Hugging Face's
// XLMRobertaTokenizer rules for the special tokens and ids, open_clip's HFTokenizer cleaning.
#include "clipkit/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

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
    if (!status.ok()) throw Error(ErrorCode::Internal, "SentencePiece: " + std::string(status.message()));
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
