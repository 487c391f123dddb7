// clipkit bench: end-to-end throughput of a model on this machine, as one JSON line.
//
//   clipkit bench --model M [--dtype f32|f16|int8] [--threads N] [--batch-size B] [--images N] [--texts N]
//                 [--convolution auto|direct|nhwc|blocked] [--format json|table|csv]
//
// Images are random preprocessed tensors (decoding is not timed); texts are ImageNet prompts
// (the 80 CLIP templates × the 1000 class names, in order) encoded in batches of 64 through the
// tokenizer and the text tower. Each part runs one warm-up batch first; rates use the median
// batch time. Fields: image_per_s, text_per_s, image_ms_batch1, load_s, first_image_batch_s (the
// warm-up batch: the first encode after the load) and first_image_batch_ratio (it over the median
// of the later batches of its size), first_image_batch_cpu_ratio (the same in the process's CPU
// time: steadier than wall time where other jobs share the cores; run with OMP_WAIT_POLICY=passive
// so that waiting threads do not count), image_cpu_ms (the process's CPU milliseconds per image,
// median over the warm batches: on a shared machine, the figure to compare builds by), peak_rss_mb (whole run),
// load_peak_rss_mb (peak when the load returned), weights_mb, kernels,
// dtype, threads, batch, images, texts, text_batch, model, arch, and for ResNet models convolution.
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "kernels/gemm.h"
#include "zeroshot/builtin_data.h"

namespace {

struct BenchArgs {
  std::string model, dtype = "f32", convolution = "auto", format = "json", arch, text_model, tokenizer;
  int threads = 0, batch = 16, images = 64, texts = 256;
};

constexpr int kTextBatch = 64;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The process's own peak: VmHWM of /proc/self/status. getrusage's ru_maxrss survives execve, so a
// bench started by a large process (bench/compare/compare.py holding a model) would report the
// parent's size; it is the fallback where /proc is missing.
double peak_rss_mb() {
  if (std::FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    long kib = -1;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
    std::fclose(f);
    if (kib >= 0) return static_cast<double>(kib) / 1024.0;
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

std::vector<std::string> imagenet_prompts(int n) {
  const auto classes = nlohmann::json::parse(clipkit::zeroshot_data::imagenet_classes_json()).get<std::vector<std::string>>();
  const auto templates = nlohmann::json::parse(clipkit::zeroshot_data::imagenet_templates_json()).get<std::vector<std::string>>();
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(n));
  for (size_t c = 0; out.size() < static_cast<size_t>(n); c = (c + 1) % classes.size())
    for (const std::string& t : templates) {
      if (out.size() >= static_cast<size_t>(n)) break;
      std::string p = t;
      const size_t pos = p.find("{}");
      if (pos != std::string::npos) p.replace(pos, 2, classes[c]);
      out.push_back(std::move(p));
    }
  return out;
}

void run(const BenchArgs& a) {
  using namespace clipkit;
  if (a.threads < 0) throw Error(ErrorCode::InvalidArgument, "--threads must be 0 (one per core) or more");
  if (a.batch < 1) throw Error(ErrorCode::InvalidArgument, "--batch-size must be at least 1");
  if (a.images < 0 || a.texts < 0) throw Error(ErrorCode::InvalidArgument, "--images and --texts must not be negative");
  if (a.dtype != "f32" && a.dtype != "f16" && a.dtype != "int8")
    throw Error(ErrorCode::InvalidArgument, "--dtype must be f32, f16 or int8, not '" + a.dtype + "'");

  ModelOptions opt;
  opt.threads = a.threads;
  opt.dtype = a.dtype;
  opt.convolution = a.convolution;
  opt.arch = a.arch;
  opt.text_model = a.text_model;
  opt.tokenizer = a.tokenizer;
  const double t0 = now_s();
  const auto model = Model::load(a.model, opt);
  const double load_s = now_s() - t0;
  const double load_rss_mb = peak_rss_mb();  // the load's peak (packing included), before any activation
  const ModelInfo& info = model->info();
  const bool text_only = info.arch.kind == "none";  // a text tower alone (M-CLIP): texts only
  const int res = text_only ? 1 : info.arch.image_resolution;
  if (res <= 0) throw Error(ErrorCode::Format, "model '" + a.model + "' reports no image resolution");

  nlohmann::json j;
  j["model"] = a.model;
  j["arch"] = info.arch.kind;
  if (!info.arch.text_kind.empty()) j["text_arch"] = info.arch.text_kind;
  j["load_s"] = load_s;

  // Images: random N(0, 1) pixels, i.e. already normalised.
  const int64_t per_image = 3LL * res * res;
  std::vector<float> pixels(static_cast<size_t>(per_image * a.batch));
  std::mt19937 rng(1234);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : pixels) v = nd(rng);
  if (a.images > 0 && !text_only) {
    // The first batch after the load (also the warm-up): what a program that loads a model and
    // encodes once waits for, page faults and kernel set-up included.
    const int first_batch = std::min(a.batch, a.images);
    const double t_first = now_s(), c_first = cpu_s();
    model->encode_images(pixels.data(), first_batch);
    const double first_s = now_s() - t_first, first_cpu_s = cpu_s() - c_first;
    std::vector<double> per_item, warm_same_size, warm_cpu, cpu_per_item;
    for (int done = 0; done < a.images;) {
      const int b = std::min(a.batch, a.images - done);
      const double t = now_s(), c = cpu_s();
      model->encode_images(pixels.data(), b);
      per_item.push_back((now_s() - t) / b);
      cpu_per_item.push_back((cpu_s() - c) / b);
      if (b == first_batch) {
        warm_same_size.push_back(per_item.back() * b);
        warm_cpu.push_back(cpu_s() - c);
      }
      done += b;
    }
    j["image_per_s"] = 1.0 / median(per_item);
    j["image_cpu_ms"] = 1000.0 * median(cpu_per_item);
    j["first_image_batch_s"] = first_s;
    if (!warm_same_size.empty()) {
      j["first_image_batch_ratio"] = first_s / median(warm_same_size);
      j["first_image_batch_cpu_ratio"] = first_cpu_s / median(warm_cpu);
    }
    std::vector<double> one;
    model->encode_images(pixels.data(), 1);
    for (int i = 0; i < std::clamp(a.images / std::max(1, a.batch), 3, 10); ++i) {
      const double t = now_s();
      model->encode_images(pixels.data(), 1);
      one.push_back(now_s() - t);
    }
    j["image_ms_batch1"] = 1000.0 * median(one);
  } else {
    j["image_per_s"] = nullptr;
    j["image_cpu_ms"] = nullptr;
    j["image_ms_batch1"] = nullptr;
  }

  if (a.texts > 0) {
    const auto prompts = imagenet_prompts(a.texts);
    const int tb = std::min(kTextBatch, a.texts);
    model->encode_texts(std::vector<std::string>(prompts.begin(), prompts.begin() + tb));  // warm-up
    std::vector<double> per_item;
    for (size_t done = 0; done < prompts.size();) {
      const size_t b = std::min(static_cast<size_t>(kTextBatch), prompts.size() - done);
      const std::vector<std::string> chunk(prompts.begin() + static_cast<std::ptrdiff_t>(done),
                                           prompts.begin() + static_cast<std::ptrdiff_t>(done + b));
      const double t = now_s();
      model->encode_texts(chunk);
      per_item.push_back((now_s() - t) / static_cast<double>(b));
      done += b;
    }
    j["text_per_s"] = 1.0 / median(per_item);
  } else {
    j["text_per_s"] = nullptr;
  }
  j["peak_rss_mb"] = peak_rss_mb();
  j["load_peak_rss_mb"] = load_rss_mb;
  j["weights_mb"] = static_cast<double>(model->info().weight_bytes) / (1024.0 * 1024.0);
  j["kernels"] = info.kernels.empty() ? kernel_description() : info.kernels;
  j["dtype"] = a.dtype;
  if (info.arch.kind == "resnet") j["convolution"] = a.convolution;
  j["threads"] = num_threads();
  j["batch"] = a.batch;
  j["images"] = a.images;
  j["texts"] = a.texts;
  j["text_batch"] = kTextBatch;
  if (a.format == "json") {
    std::cout << j.dump() << "\n";
    return;
  }
  std::vector<std::vector<std::string>> rows;
  if (a.format == "table") rows.push_back({"field", "value"});
  else rows.resize(2);
  for (const auto& [key, value] : j.items()) {
    const std::string v = value.is_string() ? value.get<std::string>() : value.is_null() ? "" : value.dump();
    if (a.format == "table") {
      rows.push_back({key, v});
    } else {
      rows[0].push_back(key);
      rows[1].push_back(v);
    }
  }
  if (a.format == "table") cli::print_table(rows);
  else cli::print_csv(rows);
}

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Measure image and text throughput of a model (one JSON line by default)");
  auto a = std::make_shared<BenchArgs>();
  cmd->add_option("--model", a->model, "Model file or folder")->required();
  cmd->add_option("--dtype", a->dtype, "Weights/compute: f32, f16 or int8")->capture_default_str();
  clipkit::cli::add_arch_option(cmd, a->arch);
  clipkit::cli::add_text_model_options(cmd, a->text_model, a->tokenizer);
  cmd->add_option("--threads", a->threads, "Compute threads (0 = one per core)")->capture_default_str();
  clipkit::cli::add_batch_size(cmd, a->batch, "Images per forward pass");
  cmd->add_option("--images", a->images, "Images to encode (after one warm-up batch)")->capture_default_str();
  cmd->add_option("--texts", a->texts, "ImageNet prompts to encode (after one warm-up batch)")->capture_default_str();
  cmd->add_option("--convolution", a->convolution, "ResNet convolutions: auto, direct, nhwc or blocked")
      ->capture_default_str();
  clipkit::cli::add_format(cmd, a->format, {"json", "table", "csv"});
  clipkit::cli::add_examples(cmd, {"clipkit bench --model ViT-B-32.pt --dtype int8 --batch-size 32",
                                   "clipkit bench --model RN50.pt --images 0 --texts 512 --format table"});
  cmd->callback([a] { run(*a); });
});

}  // namespace
