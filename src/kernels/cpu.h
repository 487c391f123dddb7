// Run-time ISA checks for the hand-vectorised kernels (dispatch on features, never on CPU models).
#pragma once
#include <atomic>

namespace clipkit {

// The instruction sets the hand-written kernels choose between, lowest first.
enum class CpuIsa { Scalar = 0, Avx2 = 1, Avx512 = 2 };

namespace cpu_detail {
inline std::atomic<int> max_isa{static_cast<int>(CpuIsa::Avx512)};
}  // namespace cpu_detail

// Caps the kernels' choice for the whole process (default: Avx512, i.e. whatever the CPU has), so
// that the AVX2 and scalar fallbacks can run and be compared with the AVX-512 kernels on a machine
// that has AVX-512 (the kernel tests do). Set it while no kernel runs; oneDNN's own dispatch is
// not affected (that is ONEDNN_MAX_CPU_ISA).
inline void set_max_cpu_isa(CpuIsa isa) { cpu_detail::max_isa.store(static_cast<int>(isa), std::memory_order_relaxed); }

inline bool cpu_isa_allowed(CpuIsa isa) {
  return cpu_detail::max_isa.load(std::memory_order_relaxed) >= static_cast<int>(isa);
}

// AVX-512 F/BW/DQ/VL: the subset the hand-written kernels use. Cached after the first call.
inline bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return has && cpu_isa_allowed(CpuIsa::Avx512);
}

// AVX2 with FMA: the fallback vector paths. Cached after the first call.
inline bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has && cpu_isa_allowed(CpuIsa::Avx2);
}

}  // namespace clipkit
