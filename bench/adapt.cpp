// Few-shot training speed: 1,000 classes × 16 shots of synthetic 512-dimensional unit features.
//
//   cmake --build build --target bench_adapt
//   OMP_NUM_THREADS=2 build/bench/bench_adapt --benchmark_min_time=1x     (targets: fixed C < 10 s, C auto < 3 min)
//
// Features: a random unit mean per class plus Gaussian noise (σ = 1.2 per coordinate before
// normalisation), so that the classes overlap as CLIP features of similar classes do.
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>

#include "clipkit/adapt.h"
#include "kernels/gemm.h"

namespace {

clipkit::LabeledFeatures synthetic(int classes, int shots, int dim, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  clipkit::Embeddings means(classes, dim);
  for (float& v : means.data) v = normal(gen);
  means.normalize();
  clipkit::LabeledFeatures f;
  f.num_classes = classes;
  f.features = clipkit::Embeddings(static_cast<int64_t>(classes) * shots, dim);
  const float noise = 1.2f / std::sqrt(static_cast<float>(dim));
  for (int c = 0; c < classes; ++c)
    for (int s = 0; s < shots; ++s) {
      float* r = f.features.row(static_cast<int64_t>(c) * shots + s);
      for (int j = 0; j < dim; ++j) r[j] = means.row(c)[j] + noise * normal(gen);
      f.labels.push_back(c);
    }
  f.features.normalize();
  return f;
}

std::vector<clipkit::ClassSpec> names(int classes) {
  std::vector<clipkit::ClassSpec> out;
  for (int c = 0; c < classes; ++c) out.push_back({{"class " + std::to_string(c)}, {}});
  return out;
}

void train(benchmark::State& state, clipkit::AdaptMethod method, bool c_auto) {
  const int classes = static_cast<int>(state.range(0));
  const auto data = synthetic(classes, 16, 512, 1);
  const auto zs_rows = synthetic(classes, 1, 512, 2).features;
  const auto zs = clipkit::ZeroShotClassifier::from_embeddings(zs_rows, names(classes), {"a {}."}, "synthetic", 100.0f);
  clipkit::TrainOptions opt;
  opt.method = method;
  opt.c_auto = c_auto;
  opt.C = 1.0;
  clipkit::TrainReport rep;
  for (auto _ : state) {
    auto clf = clipkit::train_classifier(data, names(classes), &zs, opt, &rep, "synthetic");
    benchmark::DoNotOptimize(clf);
  }
  state.counters["C"] = rep.C;
  state.counters["val_top1"] = rep.validation_accuracy;
  state.counters["threads"] = clipkit::num_threads();
}

}  // namespace

BENCHMARK_CAPTURE(train, linear_probe_fixed_C, clipkit::AdaptMethod::LinearProbe, false)
    ->Arg(1000)->Unit(benchmark::kSecond)->Iterations(1);
BENCHMARK_CAPTURE(train, linear_probe_C_auto, clipkit::AdaptMethod::LinearProbe, true)
    ->Arg(1000)->Unit(benchmark::kSecond)->Iterations(1);
BENCHMARK_CAPTURE(train, zs_probe_fixed_C, clipkit::AdaptMethod::ZsProbe, false)
    ->Arg(1000)->Unit(benchmark::kSecond)->Iterations(1);
BENCHMARK_CAPTURE(train, tip_adapter_search, clipkit::AdaptMethod::TipAdapter, false)
    ->Arg(1000)->Unit(benchmark::kSecond)->Iterations(1);
BENCHMARK_CAPTURE(train, tip_adapter_f, clipkit::AdaptMethod::TipAdapterF, false)
    ->Arg(1000)->Unit(benchmark::kSecond)->Iterations(1);

BENCHMARK_MAIN();
