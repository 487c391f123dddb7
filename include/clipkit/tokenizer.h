// clipkit/tokenizer.h — CLIP's byte-level BPE tokenizer, identical to OpenAI's SimpleTokenizer.
//
//   const auto& tok = clipkit::Tokenizer::instance();
//   auto rows = tok.tokenize({"a photo of a cat."});      // one row of 77 ids: 49406 ... 49407 0 0 ...
//   std::string text = tok.decode(tok.encode("Hello!"));  // "hello ! "
//
// The vocabulary (bpe_simple_vocab_16e6) is compiled into the library. A Tokenizer is immutable
// after construction apart from an internal, mutex-protected BPE cache: share one across threads.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace clipkit {

// ftfy-style repair applied before tokenization when `normalize` is on (ftfy 6's default fixes
// without its mojibake heuristics): HTML entities (unless the text contains '<'), C1 controls read
// as Windows-1252, Latin ligatures expanded, full-width forms to half-width, curly quotes to ASCII
// (dashes are kept), CRLF/CR/U+2028/U+2029 to LF, terminal escapes and control characters removed,
// NFC; repeated until stable. Deterministic; documented in docs/tokenizer.md.
// Invalid UTF-8 in any input is read as U+FFFD per maximal invalid subsequence, like Python's
// bytes.decode("utf-8", errors="replace").
std::string normalize_text(std::string_view text);

class Tokenizer {
 public:
  static constexpr int32_t kStartOfText = 49406;
  static constexpr int32_t kEndOfText = 49407;
  static constexpr int32_t kVocabSize = 49408;
  static constexpr int kDefaultContextLength = 77;

  // The process-wide tokenizer (built on first use, thread-safe).
  static const Tokenizer& instance();

  Tokenizer();
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // BPE ids of `text` without <|startoftext|>/<|endoftext|> (SimpleTokenizer.encode).
  // With normalize=false the text is only cleaned as the reference does (html-unescape twice,
  // whitespace collapsed, stripped, lower-cased).
  std::vector<int32_t> encode(std::string_view text, bool normalize = true) const;

  // clip.tokenize: one row of `context_length` ids per text: SOT, BPE ids, EOT, zero padding.
  // truncate=true cuts over-long texts and forces the last id to EOT; truncate=false throws
  // Error(Limit) naming the text and its token count.
  std::vector<std::vector<int32_t>> tokenize(const std::vector<std::string>& texts,
                                             int context_length = kDefaultContextLength,
                                             bool truncate = true, bool normalize = true) const;

  // SimpleTokenizer.decode: ids back to text ("</w>" becomes a space; special ids are kept as
  // their literal strings; padding zeros are not skipped). Throws Error(InvalidArgument) for ids
  // outside [0, 49408).
  std::string decode(const std::vector<int32_t>& ids) const;

  // The string form of one id (e.g. "cat</w>").
  const std::string& token_string(int32_t id) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace clipkit
