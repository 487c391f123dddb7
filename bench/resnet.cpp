// Image-tower throughput: RN50 (modified ResNet) next to ViT-B/32, both full size with random
// weights (written once to a temporary safetensors file and loaded through Model::load, so the
// measured path is the one users run), at batch 1 and 16. Counter "images/s"; the f16 and int8
// RN50 runs also report "cos_vs_f32", the worst cosine of their embeddings to the f32 model's.
// RN50 also with direct convolutions ("direct": blocked activations; "nhwc": channels-last)
// instead of the default Winograd 3x3 layers. Also the 3×3 convolution of RN50's first stage on
// its own: clipkit's Conv2d (oneDNN convolution primitive), oneDNN's primitive called directly,
// and im2col + a packed matmul (the path Conv2d replaced); and every 3×3 shape of RN50 in the
// three convolution modes (BM_Conv3x3Rn50).
#include <benchmark/benchmark.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "clipkit/model.h"
#include "kernels/conv.h"
#include "kernels/linear.h"
#include "model/random_model.h"

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "clipkit-bench-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) std::abort();
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

std::shared_ptr<clipkit::Model> model_for(const std::string& name, const std::string& dtype = "f32",
                                          const std::string& convolution = "auto") {
  static TempDir dir;
  static std::map<std::string, std::shared_ptr<clipkit::Model>> cache;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  const std::string key = name + "/" + dtype + "/" + convolution;
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  std::string file = name;
  for (char& c : file)
    if (c == '/') c = '-';
  const std::string path = dir.path + "/" + file + "-" + dtype + ".safetensors";
  clipkit::write_random_clip(path, clipkit::clip_config(name), 1234, clipkit::DType::F16);
  clipkit::ModelOptions options;
  options.dtype = dtype;
  options.convolution = convolution;
  auto model = clipkit::Model::load(path, options);
  std::filesystem::remove(path);  // the loaded model keeps its own copies
  return cache.emplace(key, std::move(model)).first->second;
}

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

double worst_cosine(const clipkit::Embeddings& a, const clipkit::Embeddings& b) {
  double worst = 1.0;
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* x = a.data.data() + r * a.dim;
    const float* y = b.data.data() + r * b.dim;
    double xy = 0, xx = 0, yy = 0;
    for (int64_t i = 0; i < a.dim; ++i) xy += double(x[i]) * y[i], xx += double(x[i]) * x[i], yy += double(y[i]) * y[i];
    worst = std::min(worst, xy / std::sqrt(xx * yy));
  }
  return worst;
}

void BM_EncodeImages(benchmark::State& state, const char* name, const char* dtype, const char* conv = "auto") {
  const int64_t batch = state.range(0);
  const auto model = model_for(name, dtype, conv);
  const int64_t n = model->info().preprocess.resolution;
  const auto pixels = clipkit::structured_pixels(batch, n, 5);
  clipkit::Embeddings e;
  for (auto _ : state) {
    e = model->encode_images(pixels.data(), batch);
    benchmark::DoNotOptimize(e.data.data());
  }
  state.counters["images/s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  if (std::string(dtype) != "f32")
    state.counters["cos_vs_f32"] = worst_cosine(e, model_for(name, "f32")->encode_images(pixels.data(), batch));
  state.SetLabel(std::string(dtype) + ", " + model->info().kernels);
}

BENCHMARK_CAPTURE(BM_EncodeImages, RN50, "RN50", "f32")->Arg(1)->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_EncodeImages, RN50_direct, "RN50", "f32", "direct")
    ->Arg(1)
    ->Arg(16)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_EncodeImages, RN50_nhwc, "RN50", "f32", "nhwc")
    ->Arg(1)
    ->Arg(16)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_EncodeImages, RN50_int8, "RN50", "int8")
    ->Arg(1)
    ->Arg(16)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_EncodeImages, RN50_f16, "RN50", "f16")
    ->Arg(1)
    ->Arg(16)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_EncodeImages, ViT_B_32, "ViT-B/32", "f32")
    ->Arg(1)
    ->Arg(16)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// RN50 layer1 3×3 convolution: 64 -> 64 channels at 56×56, bias + ReLU, per image; arg 2 = dtype
// (0 f32, 1 f16, 2 int8 on non-negative input, as after a ReLU).
void BM_Conv3x3Layer1(benchmark::State& state) {
  const int64_t batch = state.range(0);
  const auto format = static_cast<clipkit::WeightFormat>(state.range(1));
  const clipkit::ConvShape s{64, 64, 3, 3, 1, 1};
  const clipkit::Conv2d conv(random_values(64 * 64 * 9, 1), random_values(64, 2), s, format, 56, 56);
  auto x = random_values(static_cast<size_t>(batch * 56 * 56 * 64), 3);
  for (float& f : x) f = std::max(f, 0.0f);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    conv.forward(x.data(), batch, 56, 56, y.data(), clipkit::ConvEpilogue::Relu);
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * 64 * 64 * 9 * 56 * 56 * static_cast<double>(batch);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(clipkit::weight_format_name(format)) + " " + conv.implementation(batch, 56, 56));
}
BENCHMARK(BM_Conv3x3Layer1)
    ->ArgsProduct({{1, 16}, {0, 1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Every 3×3 convolution shape of RN50 (bias + ReLU) through Conv2d; arg 0 = batch, arg 1 = shape
// index into kRn50Conv3x3, arg 2 = mode: 0 channels-last direct, 1 blocked (nChw16c) direct,
// 2 blocked Winograd (the default on AVX-512).
struct Conv3x3Shape {
  int64_t in, out, side;
};
constexpr Conv3x3Shape kRn50Conv3x3[] = {{32, 32, 112}, {32, 64, 112}, {64, 64, 56},  {128, 128, 56}, {128, 128, 28},
                                         {256, 256, 28}, {256, 256, 14}, {512, 512, 14}, {512, 512, 7}};

void BM_Conv3x3Rn50(benchmark::State& state) {
  using clipkit::ActLayout;
  const int64_t batch = state.range(0), mode = state.range(2);
  const Conv3x3Shape sh = kRn50Conv3x3[state.range(1)];
  clipkit::ConvIo io;
  io.src = io.dst = mode == 0 ? ActLayout::Nhwc : ActLayout::Blocked16;
  io.algorithm = mode == 2 ? clipkit::ConvAlgorithm::Auto : clipkit::ConvAlgorithm::Direct;
  const clipkit::ConvShape s{sh.in, sh.out, 3, 3, 1, 1};
  const clipkit::Conv2d conv(random_values(static_cast<size_t>(sh.out * sh.in * 9), 1), random_values(sh.out, 2), s,
                             clipkit::WeightFormat::F32, sh.side, sh.side, batch, io);
  auto x = random_values(static_cast<size_t>(batch * sh.in * sh.side * sh.side), 3);
  for (float& f : x) f = std::max(f, 0.0f);
  std::vector<float> y(static_cast<size_t>(batch * sh.out * sh.side * sh.side));
  for (auto _ : state) {
    conv.forward(x.data(), batch, sh.side, sh.side, y.data(), clipkit::ConvEpilogue::Relu);
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * sh.in * sh.out * 9 * sh.side * sh.side * static_cast<double>(batch);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::to_string(sh.in) + "->" + std::to_string(sh.out) + " @" + std::to_string(sh.side) + " " +
                 conv.implementation(batch, sh.side, sh.side));
}
BENCHMARK(BM_Conv3x3Rn50)
    ->ArgsProduct({{1, 16}, {0, 1, 2, 3, 4, 5, 6, 7, 8}, {0, 1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The same convolution as im2col (NHWC rows of 3·3·64 values) + clipkit::Linear (packed oneDNN
// matmul, bias fused) + ReLU: what clipkit ran before the convolution primitive.
void BM_Conv3x3Layer1_Im2col(benchmark::State& state) {
  const int64_t batch = state.range(0), hw = 56, ci = 64, co = 64, k = 9 * ci;
  const clipkit::Linear gemm(random_values(static_cast<size_t>(co * k), 1), random_values(co, 2), k, co);
  const auto x = random_values(static_cast<size_t>(batch * hw * hw * ci), 3);
  std::vector<float> col(static_cast<size_t>(batch * hw * hw * k)), y(static_cast<size_t>(batch * hw * hw * co));
  for (auto _ : state) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < batch * hw * hw; ++r) {
      const int64_t b = r / (hw * hw), oy = (r / hw) % hw, ox = r % hw;
      float* dst = col.data() + r * k;
      for (int64_t ky = 0; ky < 3; ++ky)
        for (int64_t kx = 0; kx < 3; ++kx, dst += ci) {
          const int64_t iy = oy - 1 + ky, ix = ox - 1 + kx;
          if (iy < 0 || iy >= hw || ix < 0 || ix >= hw)
            std::fill(dst, dst + ci, 0.0f);
          else
            std::copy_n(x.data() + ((b * hw + iy) * hw + ix) * ci, ci, dst);
        }
    }
    gemm.forward(col.data(), batch * hw * hw, y.data());
    for (float& f : y) f = std::max(f, 0.0f);
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * 64 * 64 * 9 * 56 * 56 * static_cast<double>(batch);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Conv3x3Layer1_Im2col)->Arg(1)->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime();

// The same convolution through oneDNN's convolution primitive (NHWC activations, weights in the
// primitive's preferred layout, bias and ReLU fused): the alternative to im2col + sgemm.
void BM_Conv3x3Layer1_OneDnnPrimitive(benchmark::State& state) {
  using namespace dnnl;
  using tag = memory::format_tag;
  using dt = memory::data_type;
  const int64_t batch = state.range(0);
  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  const memory::dims src{batch, 64, 56, 56}, wei{64, 64, 3, 3}, bia{64};
  const memory::desc src_md(src, dt::f32, tag::nhwc), dst_md(src, dt::f32, tag::nhwc);
  const memory::desc wei_any(wei, dt::f32, tag::any), bia_md(bia, dt::f32, tag::x);
  post_ops po;
  po.append_eltwise(1.0f, algorithm::eltwise_relu, 0.0f, 0.0f);
  primitive_attr attr;
  attr.set_post_ops(po);
  const convolution_forward::desc d(prop_kind::forward_inference, algorithm::convolution_direct, src_md, wei_any,
                                    bia_md, dst_md, {1, 1}, {1, 1}, {1, 1});
  const convolution_forward::primitive_desc pd(d, attr, eng);
  auto w = random_values(64 * 64 * 9, 1), b = random_values(64, 2);
  auto x = random_values(static_cast<size_t>(batch * 56 * 56 * 64), 3);
  std::vector<float> y(x.size());
  memory wei_user({wei, dt::f32, tag::oihw}, eng, w.data());
  memory wei_mem(pd.weights_desc(), eng);
  reorder(wei_user, wei_mem).execute(strm, wei_user, wei_mem);
  memory src_mem(src_md, eng, x.data()), dst_mem(dst_md, eng, y.data()), bia_mem(bia_md, eng, b.data());
  convolution_forward conv(pd);
  for (auto _ : state) {
    conv.execute(strm, {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, wei_mem}, {DNNL_ARG_BIAS, bia_mem},
                        {DNNL_ARG_DST, dst_mem}});
    strm.wait();
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * 64 * 64 * 9 * 56 * 56 * static_cast<double>(batch);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(pd.impl_info_str());
}
BENCHMARK(BM_Conv3x3Layer1_OneDnnPrimitive)->Arg(1)->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
