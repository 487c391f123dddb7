// Helpers shared by the files of src/adapt/.
#pragma once
#include <cstdint>
#include <vector>

#include "clipkit/embeddings.h"

namespace clipkit::adapt_detail {

// C[n, k] = A[n, d] · B[k, d]ᵀ. Small products accumulate in double, large ones use sgemm.
void gemm_nt(const float* a, int64_t n, int64_t d, const float* b, int64_t k, float* c);
// C[k, d] = A[n, k]ᵀ · B[n, d].
void gemm_tn(const float* a, int64_t n, int64_t k, const float* b, int64_t d, float* c);
// out[j] = Σᵢ A[i, j] in double, in fixed blocks of rows summed in order (any thread count gives
// the same bits).
void column_sums(const float* a, int64_t n, int64_t k, double* out);
// Fraction of rows whose largest logit (ties: the lower class) is the label.
double top1_accuracy(const Embeddings& logits, const std::vector<int>& labels);
// Index of the largest value, the first on ties.
int argmax(const float* v, int64_t n);

// SplitMix64: the seeded generator behind shots, splits and shuffles (the same numbers everywhere).
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed) {}
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return n ? next() % n : 0; }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(below(i))]);
  }
};

}  // namespace clipkit::adapt_detail
