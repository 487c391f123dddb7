// clipkit side of compare.py's paired mode: loads a model once, then times single batches on
// request, so that the driver can alternate clipkit and ONNX Runtime call by call.
//
//   clipkit_compare_worker --model M --dtype f32|f16|int8 --threads N --batch B [--prompts FILE]
//                          [--text-batch 64]
//
// After loading and one warm-up batch of each kind it prints {"ready": true, ...}. Then every
// stdin line is one request, answered by one JSON line on stdout:
//   image  ->  {"s": seconds for one batch of B random N(0, 1) images}
//   text   ->  {"s": seconds for the next --text-batch prompts of FILE (tokenised and encoded)}
// Anything else is answered {"error": ...}; end of input ends the process. The driver never
// runs two engines at once, so the idle one waits in a blocking read.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "clipkit/model.h"

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Args {
  std::string model, dtype = "f32", prompts;
  int threads = 0;
  int64_t batch = 16, text_batch = 64;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) throw std::runtime_error("option " + k + " needs a value");
    const std::string v = argv[++i];
    if (k == "--model") a.model = v;
    else if (k == "--dtype") a.dtype = v;
    else if (k == "--prompts") a.prompts = v;
    else if (k == "--threads") a.threads = std::stoi(v);
    else if (k == "--batch") a.batch = std::stoll(v);
    else if (k == "--text-batch") a.text_batch = std::stoll(v);
    else throw std::runtime_error("unknown option " + k);
  }
  if (a.model.empty()) throw std::runtime_error("--model is required");
  if (a.batch < 1 || a.text_batch < 1) throw std::runtime_error("--batch and --text-batch must be at least 1");
  return a;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open prompts file " + path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

void reply(const nlohmann::json& j) {
  std::cout << j.dump() << '\n' << std::flush;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    clipkit::ModelOptions opt;
    opt.threads = a.threads;
    opt.dtype = a.dtype;
    const double t0 = now_s();
    const auto model = clipkit::Model::load(a.model, opt);
    const double load_s = now_s() - t0;
    const int res = model->info().arch.image_resolution;
    std::vector<float> pixels(static_cast<size_t>(a.batch * 3 * res * res));
    std::mt19937 rng(1234);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& v : pixels) v = nd(rng);
    const std::vector<std::string> prompts = a.prompts.empty() ? std::vector<std::string>{} : read_lines(a.prompts);
    size_t next_prompt = 0;
    auto next_texts = [&] {
      std::vector<std::string> chunk;
      for (int64_t i = 0; i < a.text_batch; ++i) {
        chunk.push_back(prompts[next_prompt]);
        next_prompt = (next_prompt + 1) % prompts.size();
      }
      return chunk;
    };
    model->encode_images(pixels.data(), a.batch);  // warm-up
    if (!prompts.empty()) model->encode_texts(next_texts());
    reply({{"ready", true}, {"load_s", load_s}, {"kernels", model->info().kernels}});
    for (std::string line; std::getline(std::cin, line);) {
      try {
        if (line == "image") {
          const double t = now_s();
          model->encode_images(pixels.data(), a.batch);
          reply({{"s", now_s() - t}});
        } else if (line == "text" && !prompts.empty()) {
          const std::vector<std::string> chunk = next_texts();
          const double t = now_s();
          model->encode_texts(chunk);
          reply({{"s", now_s() - t}});
        } else {
          reply({{"error", "unknown request '" + line + "' (image, or text with --prompts)"}});
        }
      } catch (const std::exception& e) {
        reply({{"error", e.what()}});
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "clipkit_compare_worker: %s\n", e.what());
    return 1;
  }
}
