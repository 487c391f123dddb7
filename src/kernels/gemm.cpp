#include "kernels/gemm.h"

#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <atomic>
#include <thread>

#include "clipkit/error.h"

namespace clipkit {

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  apply_thread_setting();
  const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (st != dnnl_success) throw Error(ErrorCode::Internal, "oneDNN sgemm failed with status " + std::to_string(st));
}

void sgemm_reference(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                     int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const float av = trans_a ? a[p * lda + i] : a[i * lda + p];
        const float bv = trans_b ? b[j * ldb + p] : b[p * ldb + j];
        acc += static_cast<double>(av) * bv;
      }
      float& out = c[i * ldc + j];
      out = static_cast<float>(alpha * acc + (beta == 0.0f ? 0.0 : static_cast<double>(beta) * out));
    }
}

namespace {
std::atomic<int> g_threads{0};     // 0: not set, OpenMP's default
std::atomic<int> g_generation{0};  // bumped on every set_num_threads
}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  g_threads.store(n);
  g_generation.fetch_add(1);
  omp_set_num_threads(n);
}

int num_threads() {
  const int n = g_threads.load();
  return n > 0 ? n : omp_get_max_threads();
}

void apply_thread_setting() {
  thread_local int seen = 0;
  const int gen = g_generation.load();
  if (gen == 0 || seen == gen) return;
  seen = gen;
  omp_set_num_threads(g_threads.load());
}

namespace {

// Name of the oneDNN matmul implementation chosen for a representative CLIP layer, e.g.
// "brg:avx512_core" (f32) or "brg:avx512_core_vnni" (int8): says which ISA really runs.
std::string probe_matmul(dnnl::memory::data_type src_dt, dnnl::memory::data_type wei_dt) {
  try {
    using tag = dnnl::memory::format_tag;
    static const dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    const dnnl::memory::desc a({64, 768}, src_dt, tag::ab), b({768, 768}, wei_dt, tag::any),
        c({64, 768}, dnnl::memory::data_type::f32, tag::ab);
    dnnl::primitive_attr attr;
    if (src_dt != dnnl::memory::data_type::f32) attr.set_output_scales(2, std::vector<float>(768, 1.0f));
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, eng);
    return pd.impl_info_str();
  } catch (const dnnl::error&) {
    return "unavailable";
  }
}

}  // namespace

std::string kernel_description() {
  static const std::string desc = [] {
    const dnnl_version_t* v = dnnl_version();
    return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) +
           " matmul with packed weights (f32: " + probe_matmul(dnnl::memory::data_type::f32, dnnl::memory::data_type::f32) +
           ", int8: " + probe_matmul(dnnl::memory::data_type::u8, dnnl::memory::data_type::s8) + ")";
  }();
  return desc + ", " + std::to_string(num_threads()) + " threads";
}

}  // namespace clipkit
