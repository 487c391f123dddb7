// The byte-level BPE vocabulary of CLIP (bpe_simple_vocab_16e6), decoded from the embedded file.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace clipkit::text {

class BpeVocab {
 public:
  static constexpr int kNumMerges = 48894;
  static constexpr int kVocabSize = 49408;

  // Parses the (gunzipped) merges file. Throws Error(Format) on malformed content.
  explicit BpeVocab(const std::string& merges_text);
  // The vocabulary compiled into the library.
  static std::string embedded_merges_text();

  // BPE of one pre-token given as raw UTF-8 bytes; appends ids to `out`. O(n log n) in the piece
  // length; same result as the reference's quadratic loop.
  void bpe(const std::string& piece, std::vector<int32_t>& out) const;
  // The reference algorithm, step by step as SimpleTokenizer.bpe (quadratic; used by tests).
  void bpe_reference(const std::string& piece, std::vector<int32_t>& out) const;

  int32_t byte_id(uint8_t b) const { return byte_id_[b]; }
  const std::string& token_string(int32_t id) const { return token_str_[static_cast<size_t>(id)]; }
  const std::string& token_bytes(int32_t id) const { return token_bytes_[static_cast<size_t>(id)]; }

 private:
  struct Merge {
    int32_t rank;
    int32_t id;
  };
  const Merge* find_merge(int32_t a, int32_t b) const {
    const auto it = merges_.find((static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b));
    return it == merges_.end() ? nullptr : &it->second;
  }
  int32_t byte_id_[256];
  std::vector<std::string> token_str_;    // vocabulary entry (byte-to-unicode form), UTF-8
  std::vector<std::string> token_bytes_;  // the raw bytes it stands for, "</w>" kept literally
  std::unordered_map<uint64_t, Merge> merges_;
};

}  // namespace clipkit::text
