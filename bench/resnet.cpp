// Image-tower throughput: RN50 (modified ResNet) next to ViT-B/32, both full size with random
// weights (written once to a temporary safetensors file and loaded through Model::load, so the
// measured path is the one users run), at batch 1 and 16. Counter "images/s".
// Also the 3×3 convolution kernel of RN50's first stage on its own.
#include <benchmark/benchmark.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <unistd.h>

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

std::shared_ptr<clipkit::Model> model_for(const std::string& name) {
  static TempDir dir;
  static std::map<std::string, std::shared_ptr<clipkit::Model>> cache;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  std::string file = name;
  for (char& c : file)
    if (c == '/') c = '-';
  const std::string path = dir.path + "/" + file + ".safetensors";
  clipkit::write_random_clip(path, clipkit::clip_config(name), 1234, clipkit::DType::F16);
  auto model = clipkit::Model::load(path);
  std::filesystem::remove(path);  // the loaded model keeps its own float32 copies
  return cache.emplace(name, std::move(model)).first->second;
}

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

void BM_EncodeImages(benchmark::State& state, const char* name) {
  const int64_t batch = state.range(0);
  const auto model = model_for(name);
  const int64_t n = model->info().preprocess.resolution;
  const auto pixels = random_values(static_cast<size_t>(batch * 3 * n * n), 5);
  for (auto _ : state) {
    clipkit::Embeddings e = model->encode_images(pixels.data(), batch);
    benchmark::DoNotOptimize(e.data.data());
  }
  state.counters["images/s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(model->info().kernels);
}

BENCHMARK_CAPTURE(BM_EncodeImages, RN50, "RN50")->Arg(1)->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_EncodeImages, ViT_B_32, "ViT-B/32")->Arg(1)->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime();

// RN50 layer1 3×3 convolution: 64 -> 64 channels at 56×56, per image.
void BM_Conv3x3Layer1(benchmark::State& state) {
  const int64_t batch = state.range(0);
  const clipkit::ConvShape s{64, 64, 3, 3, 1, 1};
  const clipkit::Conv2d conv(random_values(64 * 64 * 9, 1), random_values(64, 2), s);
  const auto x = random_values(static_cast<size_t>(batch * 56 * 56 * 64), 3);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    conv.forward(x.data(), batch, 56, 56, y.data(), clipkit::ConvEpilogue::Relu);
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * 64 * 64 * 9 * 56 * 56 * static_cast<double>(batch);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Conv3x3Layer1)->Arg(1)->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime();

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
