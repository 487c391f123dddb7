// clipkit/sentencepiece_tokenizer.h — XLM-RoBERTa's tokenizer: a SentencePiece model
// (`sentencepiece.bpe.model`) read by the sentencepiece library, with Hugging Face's
// XLMRobertaTokenizer id mapping (fairseq's alignment):
//
//   <s> = 0, <pad> = 1, </s> = 2, <unk> = 3, SentencePiece piece k -> k + 1,
//   SentencePiece's unknown piece -> 3, <mask> = pieces + 1 (the last row of the vocabulary).
//
//   auto tok = clipkit::SentencePieceTokenizer::load("sentencepiece.bpe.model");
//   std::vector<int32_t> ids = tok->encode("eine Katze");             // <s> ... </s>, as M-CLIP
//   std::vector<int32_t> row = tok->encode_openclip("eine Katze", 77); // cleaned, cut, padded
//
// Immutable after load: share one across threads.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace clipkit {

class SentencePieceTokenizer {
 public:
  static constexpr int32_t kBos = 0;  // <s>
  static constexpr int32_t kPad = 1;  // <pad>
  static constexpr int32_t kEos = 2;  // </s>
  static constexpr int32_t kUnk = 3;  // <unk>

  // Reads a SentencePiece model file. Throws Error(NotFound) when it does not exist and
  // Error(Format) when it is not a SentencePiece model.
  static std::shared_ptr<const SentencePieceTokenizer> load(const std::string& path);

  ~SentencePieceTokenizer();
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  // The ids of `text` as XLMRobertaTokenizer gives them (what M-CLIP feeds its encoder): no
  // cleaning, no truncation; the literal strings <s>, </s>, <unk>, <pad> and <mask> are their
  // special ids (whitespace before <mask> is dropped), every other stretch is encoded by
  // SentencePiece on its own; the result is wrapped as <s> ... </s>.
  std::vector<int32_t> encode(std::string_view text) const;

  // open_clip's HFTokenizer (clean='whitespace'): the text repaired as by ftfy (normalize_text),
  // HTML-unescaped twice, whitespace runs (Python's str.split) joined by one space, stripped;
  // then encode(); more than context_length ids are cut to the first context_length - 1 followed
  // by </s>; shorter rows are padded with <pad> to context_length. context_length >= 2.
  std::vector<int32_t> encode_openclip(std::string_view text, int context_length) const;

  // The cleaning step of encode_openclip alone.
  static std::string clean_openclip(std::string_view text);

  // SentencePiece pieces + 2 (<pad> and <mask> are added to the model's own pieces).
  int32_t vocab_size() const { return vocab_size_; }
  int32_t mask_id() const { return vocab_size_ - 1; }
  const std::string& path() const { return path_; }

 private:
  SentencePieceTokenizer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int32_t vocab_size_ = 0;
  std::string path_;
};

}  // namespace clipkit
