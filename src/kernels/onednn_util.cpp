#include "kernels/onednn_util.h"

#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>

#include "core/half.h"

namespace clipkit::onednn {

const dnnl::engine& cpu_engine() {
  static const dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& thread_stream() {
  thread_local dnnl::stream s(cpu_engine());
  return s;
}

std::string describe(const dnnl::error& e) { return std::string(e.what()) + " (status " + std::to_string(e.status) + ")"; }

namespace {

bool has_f16c() {
  // F16C from CPUID leaf 1 (clang's __builtin_cpu_supports does not know "f16c").
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
  }();
  return has;
}

__attribute__((target("avx2,f16c"))) void widen_f16c(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = half_to_float(src[i]);
}

// Round to nearest even, as float_to_half; NaNs stay NaNs (their payload may differ).
__attribute__((target("avx2,f16c"))) void narrow_f16c(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) dst[i] = float_to_half(src[i]);
}

// Runs convert(begin, length) over [0, n) in 64 Ki-element chunks, in parallel when there are
// several.
template <typename Convert>
void for_each_chunk(size_t n, Convert convert) {
  constexpr size_t kChunk = size_t{1} << 16;
  const int64_t pieces = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (pieces > 1)
  for (int64_t p = 0; p < pieces; ++p) {
    const size_t b = static_cast<size_t>(p) * kChunk;
    convert(b, std::min(kChunk, n - b));
  }
}

}  // namespace

std::vector<uint16_t> narrow_to_half(const float* src, size_t n) {
  std::vector<uint16_t> out(n);
  uint16_t* dst = out.data();
  const bool vec = has_f16c();
  for_each_chunk(n, [&](size_t b, size_t len) {
    if (vec) {
      narrow_f16c(src + b, dst + b, len);
    } else {
      for (size_t i = 0; i < len; ++i) dst[b + i] = float_to_half(src[b + i]);
    }
  });
  return out;
}

void half_to_float_n(const uint16_t* src, float* dst, size_t n) {
  const bool vec = has_f16c();
  for_each_chunk(n, [&](size_t b, size_t len) {
    if (vec) {
      widen_f16c(src + b, dst + b, len);
    } else {
      for (size_t i = 0; i < len; ++i) dst[b + i] = half_to_float(src[b + i]);
    }
  });
}

void narrow_to_half_serial(const float* src, uint16_t* dst, size_t n) {
  if (has_f16c()) {
    narrow_f16c(src, dst, n);
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = float_to_half(src[i]);
  }
}

void half_to_float_serial(const uint16_t* src, float* dst, size_t n) {
  if (has_f16c()) {
    widen_f16c(src, dst, n);
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
  }
}

}  // namespace clipkit::onednn
