// The heap-based BPE against the step-by-step reference loop (SimpleTokenizer.bpe restated).
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "text/bpe.h"

namespace {

using clipkit::text::BpeVocab;

const BpeVocab& vocab() {
  static const BpeVocab v(BpeVocab::embedded_merges_text());
  return v;
}

TEST(Bpe, FastEqualsReferenceOnRandomPieces) {
  std::mt19937 rng(1234);
  const std::string alphabets[] = {"abcdefghijklmnopqrstuvwxyz", "aeiou", "ab", "etaoinshrdlu",
                                   "\xe4\xb8\xad\xe6\x96\x87\xf0\x9f\x98\x80\xce\xb1\xce\xb2"};
  for (int iter = 0; iter < 3000; ++iter) {
    const std::string& alpha = alphabets[iter % 5];
    const size_t len = 1 + rng() % 200;
    std::string piece;
    for (size_t i = 0; i < len; ++i) piece.push_back(alpha[rng() % alpha.size()]);
    std::vector<int32_t> fast, ref;
    vocab().bpe(piece, fast);
    vocab().bpe_reference(piece, ref);
    ASSERT_EQ(fast, ref) << "piece " << piece;
  }
  // Repetitions exercise overlapping occurrences of one pair.
  for (size_t len = 1; len < 300; len += 7) {
    for (const char* unit : {"a", "ab", "aab", "ing", "\xf0\x9f\x98\x80"}) {
      std::string piece;
      while (piece.size() < len) piece += unit;
      std::vector<int32_t> fast, ref;
      vocab().bpe(piece, fast);
      vocab().bpe_reference(piece, ref);
      ASSERT_EQ(fast, ref) << "piece " << piece;
    }
  }
}

TEST(Bpe, LongPieceIsNotQuadratic) {
  std::mt19937 rng(99);
  std::string piece;
  for (int i = 0; i < 200000; ++i) piece.push_back(static_cast<char>('a' + rng() % 26));
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> ids;
  vocab().bpe(piece, ids);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GT(ids.size(), 20000u);
  EXPECT_LT(s, 20.0);  // generous for sanitizer builds; the quadratic loop would take minutes
}

}  // namespace
