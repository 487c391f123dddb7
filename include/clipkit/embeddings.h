// clipkit/embeddings.h — a row-major float matrix [rows, dim] of embeddings.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace clipkit {

struct Embeddings {
  int64_t rows = 0;
  int64_t dim = 0;
  std::vector<float> data;  // rows * dim, row-major

  Embeddings() = default;
  Embeddings(int64_t r, int64_t d) : rows(r), dim(d), data(static_cast<size_t>(r * d), 0.0f) {}
  float* row(int64_t i) { return data.data() + i * dim; }
  const float* row(int64_t i) const { return data.data() + i * dim; }
  // L2-normalises every row in place (a zero row stays zero).
  void normalize();
  Embeddings normalized() const {
    Embeddings e = *this;
    e.normalize();
    return e;
  }
};

}  // namespace clipkit
