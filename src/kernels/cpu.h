// Run-time ISA checks for the hand-vectorised kernels (dispatch on features, never on CPU models).
#pragma once

namespace clipkit {

// AVX-512 F/BW/DQ/VL: the subset the hand-written kernels use. Cached after the first call.
inline bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return has;
}

// AVX2 with FMA: the fallback vector paths. Cached after the first call.
inline bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

}  // namespace clipkit
