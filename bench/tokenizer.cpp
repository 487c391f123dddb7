// Tokenizer throughput over 10,000 prompts built from the ImageNet templates x class names.
//   Cold: a fresh Tokenizer (empty BPE cache) per iteration; warm: the cache already holds every word.
// Counters: strings/s and tokens/s (BPE tokens, without start/end/padding).
#include <benchmark/benchmark.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "clipkit/tokenizer.h"

namespace {

std::vector<std::string> load_list(const std::string& name) {
  std::ifstream in(std::string(CLIPKIT_TEST_DATA) + "/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str()).get<std::vector<std::string>>();
}

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> texts = [] {
    const auto templates = load_list("imagenet_templates.json");
    const auto classes = load_list("imagenet_classes.json");
    std::vector<std::string> out;
    out.reserve(10000);
    for (size_t i = 0; i < 10000; ++i) {
      std::string t = templates[(i + i / classes.size()) % templates.size()];
      const std::string& c = classes[i % classes.size()];
      const size_t pos = t.find("{}");
      if (pos != std::string::npos) t.replace(pos, 2, c);
      out.push_back(std::move(t));
    }
    return out;
  }();
  return texts;
}

size_t count_tokens(const clipkit::Tokenizer& tok, bool normalize) {
  size_t n = 0;
  for (const auto& t : corpus()) n += tok.encode(t, normalize).size();
  return n;
}

void report(benchmark::State& state, size_t tokens) {
  const double n = static_cast<double>(state.iterations());
  state.counters["strings/s"] = benchmark::Counter(n * static_cast<double>(corpus().size()), benchmark::Counter::kIsRate);
  state.counters["tokens/s"] = benchmark::Counter(n * static_cast<double>(tokens), benchmark::Counter::kIsRate);
}

void BM_TokenizeCold(benchmark::State& state) {
  const bool normalize = state.range(0) != 0;
  size_t tokens = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto tok = std::make_unique<clipkit::Tokenizer>();  // vocabulary load is not timed
    state.ResumeTiming();
    auto rows = tok->tokenize(corpus(), 77, true, normalize);
    benchmark::DoNotOptimize(rows.data());
    state.PauseTiming();
    tokens = count_tokens(*tok, normalize);
    tok.reset();
    state.ResumeTiming();
  }
  report(state, tokens);
}
BENCHMARK(BM_TokenizeCold)->Arg(0)->Arg(1)->ArgName("normalize")->Unit(benchmark::kMillisecond);

void BM_TokenizeWarm(benchmark::State& state) {
  const bool normalize = state.range(0) != 0;
  const auto& tok = clipkit::Tokenizer::instance();
  const size_t tokens = count_tokens(tok, normalize);  // also fills the cache
  for (auto _ : state) {
    auto rows = tok.tokenize(corpus(), 77, true, normalize);
    benchmark::DoNotOptimize(rows.data());
  }
  report(state, tokens);
}
BENCHMARK(BM_TokenizeWarm)->Arg(0)->Arg(1)->ArgName("normalize")->Unit(benchmark::kMillisecond);

void BM_VocabularyLoad(benchmark::State& state) {
  for (auto _ : state) {
    clipkit::Tokenizer tok;
    benchmark::DoNotOptimize(&tok);
  }
}
BENCHMARK(BM_VocabularyLoad)->Unit(benchmark::kMillisecond);

void BM_Decode(benchmark::State& state) {
  const auto& tok = clipkit::Tokenizer::instance();
  std::vector<std::vector<int32_t>> ids;
  size_t tokens = 0;
  for (const auto& t : corpus()) {
    ids.push_back(tok.encode(t, false));
    tokens += ids.back().size();
  }
  for (auto _ : state)
    for (const auto& v : ids) benchmark::DoNotOptimize(tok.decode(v));
  report(state, tokens);
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
