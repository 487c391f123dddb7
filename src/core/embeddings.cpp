#include "clipkit/embeddings.h"

#include <cmath>

namespace clipkit {

void Embeddings::normalize() {
  for (int64_t i = 0; i < rows; ++i) {
    float* r = row(i);
    double ss = 0.0;
    for (int64_t j = 0; j < dim; ++j) ss += static_cast<double>(r[j]) * r[j];
    if (ss <= 0.0) continue;
    const float norm = static_cast<float>(std::sqrt(ss));
    for (int64_t j = 0; j < dim; ++j) r[j] /= norm;  // a division, as the reference does
  }
}

}  // namespace clipkit
