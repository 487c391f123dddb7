// clipkit::Tokenizer — CLIP's SimpleTokenizer and clip.tokenize.
#include "clipkit/tokenizer.h"

#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "clipkit/error.h"
#include "text/bpe.h"
#include "text/clean.h"
#include "text/normalize.h"
#include "text/utf8.h"

namespace clipkit {

namespace {

constexpr size_t kMaxCacheEntries = 1 << 18;
constexpr size_t kMaxCachedPieceBytes = 256;
constexpr int kMaxContextLength = 1 << 20;

// A one-line rendering of `text` for error messages: control characters escaped, long texts cut.
std::string abbreviate(const std::string& text) {
  const std::u32string cps = text::decode_utf8(text);
  constexpr size_t kKeep = 60;
  std::string out;
  for (size_t i = 0; i < cps.size() && i < kKeep; ++i) {
    const char32_t c = cps[i];
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7F || (c >= 0x80 && c < 0xA0) || c == 0x2028 || c == 0x2029) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      text::append_utf8(out, c);
    }
  }
  if (cps.size() > kKeep) out += "... (" + std::to_string(cps.size()) + " characters)";
  return out;
}

}  // namespace

struct Tokenizer::Impl {
  text::BpeVocab vocab{text::BpeVocab::embedded_merges_text()};
  mutable std::shared_mutex mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  void bpe_cached(const std::string& piece, std::vector<int32_t>& out) const {
    if (piece == "<|startoftext|>") {
      out.push_back(kStartOfText);
      return;
    }
    if (piece == "<|endoftext|>") {
      out.push_back(kEndOfText);
      return;
    }
    {
      std::shared_lock lock(mu);
      const auto it = cache.find(piece);
      if (it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> ids;
    vocab.bpe(piece, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    if (piece.size() > kMaxCachedPieceBytes) return;  // rare giant words are not worth keeping
    std::unique_lock lock(mu);
    if (cache.size() >= kMaxCacheEntries) cache.clear();  // bounded: a long-running process stays small
    cache.emplace(piece, std::move(ids));
  }
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;

const Tokenizer& Tokenizer::instance() {
  static const Tokenizer tok;
  return tok;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool normalize) const {
  std::u32string cps = text::decode_utf8(text);
  if (normalize) cps = text::normalize_codepoints(cps);
  const std::u32string clean = text::clean_text(cps);
  std::vector<text::Piece> pieces;
  text::split_pieces(clean, pieces);
  std::vector<int32_t> ids;
  ids.reserve(clean.size() / 3 + 4);
  std::string piece;
  for (const auto& p : pieces) {
    piece.clear();
    for (size_t i = p.begin; i < p.end; ++i) text::append_utf8(piece, clean[i]);
    impl_->bpe_cached(piece, ids);
  }
  return ids;
}

std::vector<std::vector<int32_t>> Tokenizer::tokenize(const std::vector<std::string>& texts, int context_length,
                                                      bool truncate, bool normalize) const {
  if (context_length < 1)
    throw Error(ErrorCode::InvalidArgument,
                "context length must be at least 1, got " + std::to_string(context_length));
  if (context_length > kMaxContextLength)
    throw Error(ErrorCode::Limit, "context length " + std::to_string(context_length) + " is above the limit of " +
                                      std::to_string(kMaxContextLength));
  const size_t ctx = static_cast<size_t>(context_length);
  std::vector<std::vector<int32_t>> rows;
  rows.reserve(texts.size());
  for (const auto& t : texts) {
    const std::vector<int32_t> bpe = encode(t, normalize);
    const size_t total = bpe.size() + 2;
    std::vector<int32_t> row(ctx, 0);
    if (total > ctx) {
      if (!truncate)
        throw Error(ErrorCode::Limit, "text \"" + abbreviate(t) + "\" is too long for context length " +
                                          std::to_string(context_length) + ": " + std::to_string(total) +
                                          " tokens including start and end");
      row[0] = kStartOfText;
      for (size_t i = 1; i < ctx; ++i) row[i] = bpe[i - 1];
      row[ctx - 1] = kEndOfText;
    } else {
      row[0] = kStartOfText;
      std::copy(bpe.begin(), bpe.end(), row.begin() + 1);
      row[total - 1] = kEndOfText;
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string bytes;
  for (const int32_t id : ids) {
    if (id < 0 || id >= kVocabSize)
      throw Error(ErrorCode::InvalidArgument,
                  "token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(kVocabSize) + ")");
    bytes += impl_->vocab.token_bytes(id);
  }
  std::string text = text::sanitize_utf8(bytes);
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 4, "</w>") == 0) {
      out.push_back(' ');
      i += 4;
    } else {
      out.push_back(text[i++]);
    }
  }
  return out;
}

const std::string& Tokenizer::token_string(int32_t id) const {
  if (id < 0 || id >= kVocabSize)
    throw Error(ErrorCode::InvalidArgument,
                "token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(kVocabSize) + ")");
  return impl_->vocab.token_string(id);
}

std::string normalize_text(std::string_view text) {
  return text::encode_utf8(text::normalize_codepoints(text::decode_utf8(text)));
}

}  // namespace clipkit
