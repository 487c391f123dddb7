// End-to-end encoder throughput on a random-weight model of real size (default ViT-B/32).
//
//   bench_encoders [--benchmark_filter=...]        CLIPKIT_BENCH_ARCH=RN50 bench_encoders
//   CLIPKIT_BENCH_DTYPE=int8 bench_encoders
//
// The model is generated once into a temporary safetensors file (clipkit create-random's
// generator), loaded with the requested dtype, and timed on random preprocessed pixels and on
// ImageNet-style prompts. Counters: items_per_second (images or prompts).
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "clipkit/model.h"
#include "model/random_model.h"

namespace {

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

const clipkit::Model& model() {
  static const std::shared_ptr<clipkit::Model> m = [] {
    const std::string arch = env_or("CLIPKIT_BENCH_ARCH", "ViT-B/32");
    const std::string path =
        (std::filesystem::temp_directory_path() / ("clipkit-bench-" + std::to_string(getpid()) + ".safetensors")).string();
    clipkit::write_random_clip(path, clipkit::clip_config(arch), 0, clipkit::DType::F16);
    clipkit::ModelOptions opt;
    opt.dtype = env_or("CLIPKIT_BENCH_DTYPE", "f32");
    auto loaded = clipkit::Model::load(path, opt);
    std::filesystem::remove(path);
    return loaded;
  }();
  return *m;
}

void BM_encode_images(benchmark::State& st) {
  const clipkit::Model& m = model();
  const int64_t batch = st.range(0);
  const int res = m.info().arch.image_resolution;
  std::vector<float> px(static_cast<size_t>(batch * 3 * res * res));
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (auto& v : px) v = d(rng);
  for (auto _ : st) benchmark::DoNotOptimize(m.encode_images(px.data(), batch));
  st.SetItemsProcessed(st.iterations() * batch);
  st.SetLabel(m.info().kernels);
}
BENCHMARK(BM_encode_images)->Arg(1)->Arg(16)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_encode_prompts(benchmark::State& st) {
  const clipkit::Model& m = model();
  const char* names[] = {"tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark", "electric ray",
                         "stingray", "rooster"};
  const char* templates[] = {"a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
                             "a photo of the hard to see {}.", "a low resolution photo of the {}.",
                             "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}."};
  std::vector<std::string> prompts;
  for (const char* t : templates)
    for (const char* n : names) {
      std::string p = t;
      p.replace(p.find("{}"), 2, n);
      prompts.push_back(p);
    }
  for (auto _ : st) benchmark::DoNotOptimize(m.encode_texts(prompts));
  st.SetItemsProcessed(st.iterations() * static_cast<int64_t>(prompts.size()));
}
BENCHMARK(BM_encode_prompts)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
