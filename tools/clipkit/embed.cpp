// clipkit embed --model PATH [--image FILE...] [--text TEXT...] [--normalize] [--batch-size N]
//               [--out FILE.npy] [--threads N] [--activation A] [--arch NAME] [--convolution C]
// Without --out: one JSON line per input, images first then texts, each in input order:
//   {"input":"cat.jpg","kind":"image","embedding":[0.0123,...]}
// With --out: a float32 [n, dim] .npy in the same order.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "clipkit/model.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "core/npy.h"

namespace {

using clipkit::Error;
using clipkit::ErrorCode;

std::string json_line(const std::string& input, const char* kind, const float* v, int64_t dim) {
  std::string s = "{\"input\":";
  s += nlohmann::json(input).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  s += ",\"kind\":\"";
  s += kind;
  s += "\",\"embedding\":[";
  char buf[32];
  for (int64_t i = 0; i < dim; ++i) {
    if (i) s += ",";
    const auto res = std::to_chars(buf, buf + sizeof buf, v[i]);  // shortest round-trip form
    s.append(buf, res.ptr);
  }
  s += "]}\n";
  return s;
}

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand("embed", "Embed images and texts: JSON lines, or a [n, dim] float32 .npy with --out");
  struct Opts {
    std::string model;
    std::vector<std::string> images, texts;
    bool normalize = false;
    int batch = 16;
    int threads = 0;
    std::string dtype = "f32";
    std::string out;
    std::string activation = "auto";
    std::string convolution = "auto";
    std::string arch;
    std::string text_model, tokenizer;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "Model file or folder (.pt, .safetensors, Hugging Face or open_clip folder)")
      ->required();
  cmd->add_option("--image", o->images, "Image files to embed");
  cmd->add_option("--text", o->texts, "Texts to embed");
  cmd->add_flag("--normalize", o->normalize, "L2-normalise every embedding");
  clipkit::cli::add_batch_size(cmd, o->batch, "Inputs per forward pass");
  cmd->add_option("--out", o->out, "Write a float32 [n, dim] .npy instead of JSON lines");
  cmd->add_option("--threads", o->threads, "Compute threads (0 = one per core)");
  cmd->add_option("--dtype", o->dtype, "Weights/compute: f32 (default, exact), f16 or int8 (fastest)");
  cmd->add_option("--activation", o->activation, "MLP activation: auto (default), quick_gelu or gelu");
  clipkit::cli::add_arch_option(cmd, o->arch);
  clipkit::cli::add_text_model_options(cmd, o->text_model, o->tokenizer);
  cmd->add_option("--convolution", o->convolution,
                  "ResNet convolutions: auto (default, fastest), direct (least memory), nhwc or blocked");
  clipkit::cli::add_examples(cmd, {"clipkit embed --model ViT-B-32.pt --image cat.jpg --text 'a photo of a cat'",
                                   "clipkit embed --model ViT-L-14.pt --text-model XLM-Roberta-Large-Vit-L-14 --normalize "
                                   "--image *.jpg --text 'eine Katze' --out e.npy"});
  cmd->callback([o] {
    if (!o->out.empty()) clipkit::cli::check_output_path(o->out, "--out");
    if (o->images.empty() && o->texts.empty())
      throw Error(ErrorCode::InvalidArgument, "nothing to embed: give --image FILE... and/or --text TEXT...");
    if (o->batch < 1) throw Error(ErrorCode::InvalidArgument, "--batch-size must be at least 1, got " + std::to_string(o->batch));
    if (o->threads < 0)
      throw Error(ErrorCode::InvalidArgument, "--threads must be >= 0, got " + std::to_string(o->threads));
    clipkit::ModelOptions mo;
    mo.threads = o->threads;
    mo.dtype = o->dtype;
    mo.activation = o->activation;
    mo.convolution = o->convolution;
    mo.arch = o->arch;
    mo.text_model = o->text_model;
    mo.tokenizer = o->tokenizer;
    auto model = clipkit::Model::load(o->model, mo);
    if (!o->images.empty() && model->info().arch.kind == "none")
      throw Error(ErrorCode::InvalidArgument,
                  "'" + o->model + "' is a text tower only (M-CLIP) and cannot embed images: give its image model "
                  "with --model IMAGE_MODEL --text-model " + o->model);
    const int64_t dim = model->info().arch.embed_dim;
    const size_t total = o->images.size() + o->texts.size();
    std::vector<float> all;  // only with --out
    if (!o->out.empty()) all.reserve(total * static_cast<size_t>(dim));
    clipkit::cli::Progress progress("embed", static_cast<int64_t>(total));
    auto emit = [&](const std::vector<std::string>& inputs, size_t start, const clipkit::Embeddings& e, const char* kind) {
      if (!o->out.empty()) {
        all.insert(all.end(), e.data.begin(), e.data.end());
      } else {
        std::string lines;
        for (int64_t r = 0; r < e.rows; ++r) lines += json_line(inputs[start + static_cast<size_t>(r)], kind, e.row(r), dim);
        std::fwrite(lines.data(), 1, lines.size(), stdout);
        std::fflush(stdout);
      }
      progress.advance(e.rows);
    };
    const size_t batch = static_cast<size_t>(o->batch);
    const clipkit::PreprocessConfig& cfg = model->preprocess_config();
    const size_t image_size = 3 * static_cast<size_t>(cfg.resolution) * static_cast<size_t>(cfg.resolution);
    std::vector<float> pixels;
    for (size_t start = 0; start < o->images.size(); start += batch) {
      const size_t n = std::min(batch, o->images.size() - start);
      pixels.assign(n * image_size, 0.0f);
      for (size_t i = 0; i < n; ++i)
        clipkit::preprocess(clipkit::decode_image_file(o->images[start + i]), cfg, pixels.data() + i * image_size);
      emit(o->images, start, model->encode_images(pixels.data(), static_cast<int64_t>(n), o->normalize), "image");
    }
    for (size_t start = 0; start < o->texts.size(); start += batch) {
      const size_t n = std::min(batch, o->texts.size() - start);
      std::vector<std::string> chunk(o->texts.begin() + static_cast<std::ptrdiff_t>(start),
                                     o->texts.begin() + static_cast<std::ptrdiff_t>(start + n));
      emit(o->texts, start, model->encode_texts(chunk, o->normalize), "text");
    }
    progress.finish();
    if (!o->out.empty()) clipkit::write_npy(o->out, {static_cast<int64_t>(total), dim}, all.data());
  });
});

}  // namespace
