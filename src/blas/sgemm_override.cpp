// The Fortran BLAS single-precision GEMM, `sgemm_`, answered by oneDNN.
//
// faiss calls `sgemm_` for k-means (IVF and PQ training), exact search with many queries and
// range search. Debian links it to OpenBLAS 0.3.21, which picks its kernels from a table of CPU
// model numbers and falls back to its slowest (SSE3) kernels on CPUs newer than the table unless
// OPENBLAS_CORETYPE is set by hand. oneDNN's GEMM dispatches on ISA features instead. Every
// clipkit program links this definition (as an object file of its own, see CMakeLists.txt); the
// executable's symbol comes first in the dynamic linker's search order, so faiss's calls land
// here. Column-major C = op(A)·op(B) is the row-major product Cᵀ = op(B)ᵀ·op(A)ᵀ.
#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>

#include "kernels/gemm.h"

extern "C" int sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                      const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                      const float* beta, float* c, const int* ldc) {
  if (*m == 0 || *n == 0) return 0;
  clipkit::apply_thread_setting();
  const dnnl_status_t st = dnnl_sgemm(*transb, *transa, *n, *m, *k, *alpha, b, *ldb, a, *lda, *beta, c, *ldc);
  if (st != dnnl_success) {
    // Fortran BLAS has no error return; a bad call would be a programming error in the caller.
    // Fall back to the reference loop rather than leaving C unwritten.
    clipkit::sgemm_reference(*transb == 'T' || *transb == 't', *transa == 'T' || *transa == 't', *n, *m, *k, *alpha, b,
                             *ldb, a, *lda, *beta, c, *ldc);
  }
  return 0;
}

// OpenBLAS (pthread build) starts a worker per core when it is loaded, before main(), and each worker
// spins on sched_yield for about 2^28 cycles waiting for work before it sleeps. With every GEMM
// answered above, those workers have nothing to do but take the cores from the model load that
// follows (measured: 12% of a ViT-B/32 `clipkit bench` start's CPU samples). This initializer runs
// after the BLAS library's own (a program's constructors run after those of the libraries it
// needs): it makes OpenBLAS single-threaded and stops its pool. Looked up by name, so a program
// with another BLAS, or none, is unaffected.
namespace {
struct QuietBlasThreads {
  QuietBlasThreads() {
    using SetThreads = void (*)(int);
    using Shutdown = int (*)();
    if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(1);
    if (auto stop = reinterpret_cast<Shutdown>(dlsym(RTLD_DEFAULT, "blas_thread_shutdown_"))) stop();
  }
};
const QuietBlasThreads quiet_blas_threads;
}  // namespace
