// Single-precision GEMM, row-major: C[M,N] = alpha * op(A)[M,K] · op(B)[K,N] + beta * C.
// op(X) = X or Xᵀ. The backend is chosen at build time (see docs/performance.md) and dispatches
// on the CPU's ISA at run time. Thread-safe; uses the library's thread setting.
#pragma once
#include <cstdint>
#include <string>

namespace clipkit {

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Plain triple loop with double accumulation: the reference the tests compare against.
void sgemm_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                     int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Number of threads the kernels use (0 = one per core). The setting is process-wide: every
// thread that calls into the kernels adopts it (OpenMP's own setting is per calling thread).
void set_num_threads(int n);
int num_threads();
// Makes the calling thread's OpenMP team size follow set_num_threads (the kernels call this).
void apply_thread_setting();

// Human-readable description of the GEMM backend and the ISA it runs, e.g. "oneDNN 2.6.3 (avx512_core_amx)".
std::string kernel_description();

}  // namespace clipkit
