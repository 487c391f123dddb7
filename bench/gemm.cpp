// GEMM backends on CLIP's projection shapes (see docs/performance.md for recorded figures).
//
//   bench_gemm                                    # everything
//   OPENBLAS_CORETYPE=SkylakeX bench_gemm --benchmark_filter=openblas
//
// OpenBLAS picks its kernels when the library is loaded, so OPENBLAS_CORETYPE only takes effect
// from the environment of the process; the reported label names the core it chose.
//
// Every case computes y[M, N] = x[M, K] · Wᵀ (+ bias, activation) with W stored [N, K] as in
// PyTorch. Counter "GFLOPs" = 2·M·N·K per second (for int8: integer ops per second).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cstdlib>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "kernels/int8.h"
#include "kernels/linear.h"

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

std::vector<float> randn(size_t n, uint32_t seed, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

void set_flops(benchmark::State& st, int64_t m, int64_t n, int64_t k) {
  st.counters["GFLOPs"] =
      benchmark::Counter(2.0 * m * n * k * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// CLIP ViT-B/32 batch 16 (800 tokens, width 768) and the text tower at 64 prompts of ~12 tokens
// (768 rows, width 512): qkv, out-proj, MLP up, MLP down.
void clip_shapes(benchmark::internal::Benchmark* b) {
  for (auto [m, k, n] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{800, 768, 2304},
                                                                           {800, 768, 768},
                                                                           {800, 768, 3072},
                                                                           {800, 3072, 768},
                                                                           {768, 512, 1536},
                                                                           {768, 512, 512},
                                                                           {768, 512, 2048},
                                                                           {768, 2048, 512},
                                                                           {50, 768, 3072},
                                                                           {1, 768, 3072}})
    b->Args({m, k, n});
  b->ArgNames({"M", "K", "N"})->UseRealTime()->Unit(benchmark::kMillisecond);
}

void BM_dnnl_sgemm(benchmark::State& st) {
  const int64_t m = st.range(0), k = st.range(1), n = st.range(2);
  const auto x = randn(static_cast<size_t>(m * k), 1, 1.0f), w = randn(static_cast<size_t>(n * k), 2, 0.02f);
  std::vector<float> y(static_cast<size_t>(m * n));
  for (auto _ : st) {
    clipkit::sgemm(false, true, m, n, k, 1.0f, x.data(), k, w.data(), k, 0.0f, y.data(), n);
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(st, m, n, k);
}
BENCHMARK(BM_dnnl_sgemm)->Apply(clip_shapes);

void BM_openblas_sgemm(benchmark::State& st) {
  const int64_t m = st.range(0), k = st.range(1), n = st.range(2);
  const auto x = randn(static_cast<size_t>(m * k), 1, 1.0f), w = randn(static_cast<size_t>(n * k), 2, 0.02f);
  std::vector<float> y(static_cast<size_t>(m * n));
  openblas_set_num_threads(clipkit::num_threads());
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                1.0f, x.data(), static_cast<int>(k), w.data(), static_cast<int>(k), 0.0f, y.data(), static_cast<int>(n));
    benchmark::DoNotOptimize(y.data());
  }
  const char* env = std::getenv("OPENBLAS_CORETYPE");
  st.SetLabel(std::string("core=") + openblas_get_corename() + (env ? std::string(" OPENBLAS_CORETYPE=") + env : ""));
  set_flops(st, m, n, k);
}
BENCHMARK(BM_openblas_sgemm)->Apply(clip_shapes);

// clipkit::Linear: oneDNN matmul, weights packed at construction, bias (+ QuickGELU) fused.
template <clipkit::WeightFormat F, clipkit::Activation A>
void BM_linear(benchmark::State& st) {
  const int64_t m = st.range(0), k = st.range(1), n = st.range(2);
  const auto x = randn(static_cast<size_t>(m * k), 1, 1.0f);
  const clipkit::Linear lin(randn(static_cast<size_t>(n * k), 2, 0.02f), randn(static_cast<size_t>(n), 3, 0.02f), k,
                            n, F);
  std::vector<float> y(static_cast<size_t>(m * n));
  for (auto _ : st) {
    lin.forward(x.data(), m, y.data(), A);
    benchmark::DoNotOptimize(y.data());
  }
  st.SetLabel(clipkit::weight_format_name(F));
  set_flops(st, m, n, k);
}
// The same with weights that are cold, as in a model: 16 layers of the shape used in turn, so
// each call's weights were last touched 15 calls (tens of megabytes) ago.
template <clipkit::WeightFormat F>
void BM_linear_cold(benchmark::State& st) {
  const int64_t m = st.range(0), k = st.range(1), n = st.range(2);
  const auto x = randn(static_cast<size_t>(m * k), 1, 1.0f);
  std::vector<clipkit::Linear> layers;
  for (uint32_t i = 0; i < 16; ++i)
    layers.emplace_back(randn(static_cast<size_t>(n * k), 2 + i, 0.02f), randn(static_cast<size_t>(n), 3, 0.02f), k, n,
                        F);
  std::vector<float> y(static_cast<size_t>(m * n));
  size_t next = 0;
  for (auto _ : st) {
    layers[next].forward(x.data(), m, y.data());
    next = (next + 1) % layers.size();
    benchmark::DoNotOptimize(y.data());
  }
  st.SetLabel(std::string(clipkit::weight_format_name(F)) + " cold");
  set_flops(st, m, n, k);
}

BENCHMARK(BM_linear<clipkit::WeightFormat::F32, clipkit::Activation::None>)->Apply(clip_shapes);
BENCHMARK(BM_linear<clipkit::WeightFormat::F32, clipkit::Activation::QuickGelu>)->Apply(clip_shapes);
BENCHMARK(BM_linear<clipkit::WeightFormat::F16, clipkit::Activation::None>)->Apply(clip_shapes);
BENCHMARK(BM_linear<clipkit::WeightFormat::Int8, clipkit::Activation::None>)->Apply(clip_shapes);
BENCHMARK(BM_linear<clipkit::WeightFormat::Int8, clipkit::Activation::QuickGelu>)->Apply(clip_shapes);
BENCHMARK(BM_linear_cold<clipkit::WeightFormat::F32>)->Apply(clip_shapes);
BENCHMARK(BM_linear_cold<clipkit::WeightFormat::Int8>)->Apply(clip_shapes);

// Raw oneDNN matmul primitives (no clipkit code on the path), to separate the kernel from the
// quantise/epilogue overhead. src_dt f32: bias + QuickGELU (eltwise swish, alpha 1.702) fused;
// src_dt s8/u8: int8 x s8 weights -> f32 with per-output-channel scales.
void raw_matmul(benchmark::State& st, dt src_dt, bool fuse) {
  const int64_t m = st.range(0), k = st.range(1), n = st.range(2);
  const dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  const bool is_int = src_dt != dt::f32;
  const dt wdt = is_int ? dt::s8 : dt::f32;
  const dnnl::memory::desc a({m, k}, src_dt, tag::ab), w_any({k, n}, wdt, tag::any), c({m, n}, dt::f32, tag::ab),
      b({1, n}, dt::f32, tag::ab);
  dnnl::primitive_attr attr;
  if (is_int) attr.set_output_scales(2, std::vector<float>(static_cast<size_t>(n), 0.01f));
  if (fuse) {
    dnnl::post_ops po;
    po.append_eltwise(1.0f, dnnl::algorithm::eltwise_swish, 1.702f, 0.0f);
    attr.set_post_ops(po);
  }
  const auto pd = fuse ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, w_any, b, c), attr, eng)
                       : dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, w_any, c), attr, eng);
  dnnl::memory am(a, eng), wm(pd.weights_desc(), eng), cm(c, eng), bm(b, eng);
  // Fill src with small values; the weights' contents do not change the speed.
  const size_t abytes = a.get_size();
  std::vector<uint8_t> fill(abytes);
  for (size_t i = 0; i < abytes; ++i) fill[i] = static_cast<uint8_t>(i * 7 % 50);
  std::copy(fill.begin(), fill.end(), static_cast<uint8_t*>(am.get_data_handle()));
  if (!is_int)
    for (int64_t i = 0; i < m * k; ++i) static_cast<float*>(am.get_data_handle())[i] = 0.01f * static_cast<float>(i % 13);
  // Weights: int8 1s, or f32 0.01 (a byte pattern would make denormal floats, which are slow).
  if (is_int)
    std::fill_n(static_cast<uint8_t*>(wm.get_data_handle()), pd.weights_desc().get_size(), uint8_t{1});
  else
    std::fill_n(static_cast<float*>(wm.get_data_handle()), pd.weights_desc().get_size() / sizeof(float), 0.01f);
  dnnl::matmul prim(pd);
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, cm}};
  if (fuse) args.emplace(DNNL_ARG_BIAS, bm);
  for (auto _ : st) {
    prim.execute(s, args);
    s.wait();
  }
  st.SetLabel(pd.impl_info_str());
  set_flops(st, m, n, k);
}

void BM_dnnl_matmul_f32_bias_quickgelu(benchmark::State& st) { raw_matmul(st, dt::f32, true); }
void BM_dnnl_matmul_s8s8(benchmark::State& st) { raw_matmul(st, dt::s8, false); }
void BM_dnnl_matmul_u8s8(benchmark::State& st) { raw_matmul(st, dt::u8, false); }
// Multi-head attention of one ViT block at batch 16 (width 768, 12 heads): 50 tokens (ViT-B/32)
// and 197 (ViT-B/16). "GFLOPs" counts the two products, 4·seq²·width per image.
void BM_attention(benchmark::State& st) {
  const int64_t batch = 16, seq = st.range(0), width = 768, heads = 12;
  const auto qkv = randn(static_cast<size_t>(batch * seq * 3 * width), 1, 1.0f);
  std::vector<float> out(static_cast<size_t>(batch * seq * width));
  for (auto _ : st) {
    clipkit::multi_head_attention(qkv.data(), batch, seq, width, heads, false, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  st.counters["GFLOPs"] = benchmark::Counter(4.0 * batch * seq * seq * width * 1e-9,
                                             benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_attention)->Arg(50)->Arg(197)->ArgName("seq")->UseRealTime()->Unit(benchmark::kMillisecond);

// The per-row activation quantisation every int8 layer runs before its GEMM (M rows of K values).
void BM_quantize_rows(benchmark::State& st) {
  const int64_t m = st.range(0), k = st.range(1);
  const auto x = randn(static_cast<size_t>(m * k), 1, 1.0f);
  std::vector<uint8_t> q(x.size());
  std::vector<float> s(static_cast<size_t>(m));
  for (auto _ : st) {
    clipkit::quantize_rows_u8_offset(x.data(), m, k, q.data(), s.data());
    benchmark::DoNotOptimize(q.data());
  }
  st.counters["GB/s"] = benchmark::Counter(static_cast<double>(m * k) * 5e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_quantize_rows)->Args({800, 768})->Args({800, 3072})->UseRealTime()->Unit(benchmark::kMicrosecond);

// The instruction ceiling: 24 independent AVX-512 VNNI (vpdpbusd) or FMA chains per thread in a
// register-only loop, on every compute thread. Counter "GFLOPs" counts 2 ops per multiply-add
// (VNNI: 64 multiply-adds per instruction; FMA: 16), summed over the threads. No GEMM can beat
// these rates.
#define CLIPKIT_PEAK_CLOBBERS                                                                                        \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", \
      "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "cc"
__attribute__((target("avx512f,avx512vnni"))) void vnni_loop(long n) {
  asm volatile(
      "vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
      "vpxord %%zmm1, %%zmm1, %%zmm1\n\t"
      "1:\n\t"
      ".irp r, 2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25\n\t"
      "vpdpbusd %%zmm0, %%zmm1, %%zmm\\r\n\t"
      ".endr\n\t"
      "dec %0\n\t"
      "jnz 1b\n\t"
      : "+r"(n)::CLIPKIT_PEAK_CLOBBERS);
}
__attribute__((target("avx512f"))) void fma_loop(long n) {
  asm volatile(
      "vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
      "vpxord %%zmm1, %%zmm1, %%zmm1\n\t"
      ".irp r, 2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25\n\t"
      "vpxord %%zmm\\r, %%zmm\\r, %%zmm\\r\n\t"
      ".endr\n\t"
      "1:\n\t"
      ".irp r, 2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25\n\t"
      "vfmadd231ps %%zmm0, %%zmm1, %%zmm\\r\n\t"
      ".endr\n\t"
      "dec %0\n\t"
      "jnz 1b\n\t"
      : "+r"(n)::CLIPKIT_PEAK_CLOBBERS);
}
#undef CLIPKIT_PEAK_CLOBBERS

template <bool Vnni>
void BM_peak(benchmark::State& st) {
  if (Vnni ? !__builtin_cpu_supports("avx512vnni") : !__builtin_cpu_supports("avx512f")) {
    st.SkipWithError("the CPU lacks the instruction");
    return;
  }
  const int threads = clipkit::num_threads();
  constexpr long kLoops = 1 << 20;  // 24 instructions each
  for (auto _ : st) {
#pragma omp parallel num_threads(threads)
    {
      if (Vnni)
        vnni_loop(kLoops);
      else
        fma_loop(kLoops);
    }
  }
  const double ops_per_instruction = Vnni ? 128.0 : 32.0;
  st.counters["GFLOPs"] = benchmark::Counter(ops_per_instruction * 24.0 * kLoops * threads * 1e-9,
                                             benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(std::string(Vnni ? "vpdpbusd zmm" : "vfmadd231ps zmm") + ", " + std::to_string(threads) + " threads");
}
BENCHMARK(BM_peak<true>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_peak<false>)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK(BM_dnnl_matmul_f32_bias_quickgelu)->Apply(clip_shapes);
BENCHMARK(BM_dnnl_matmul_s8s8)->Apply(clip_shapes);
BENCHMARK(BM_dnnl_matmul_u8s8)->Apply(clip_shapes);

}  // namespace

BENCHMARK_MAIN();
