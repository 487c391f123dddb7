// clipkit embed --model PATH [IMAGE_OR_DIR...] [--image FILE...] [--text TEXT...] [--normalize]
//               [--batch-size N] [--out FILE.npy] [--threads N] [--decode-threads N] [--activation A]
//               [--arch NAME] [--convolution C]
// Folders are searched recursively for images, in sorted order. Without --out: one JSON line per
// input, images first then texts, each in input order:
//   {"input":"cat.jpg","kind":"image","embedding":[0.0123,...]}
// With --out: a float32 [n, dim] .npy in the same order, and the image rows' paths one per line
// in FILE.paths.txt beside it. A file named on the command line that cannot be read is an error;
// one found in a folder is skipped with a warning (the paths file says which rows are which).
#include <algorithm>
#include <charconv>
#include <exception>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "clipkit/messages.h"
#include "clipkit/model.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "clipkit/zeroshot.h"
#include "core/mapped_file.h"
#include "core/npy.h"
#include "model/ingest.h"

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

// FILE.npy -> FILE.paths.txt (any other name gets ".paths.txt" appended).
std::string paths_file_for(const std::string& out) {
  const std::string ext = ".npy";
  if (out.size() > ext.size() && out.compare(out.size() - ext.size(), ext.size(), ext) == 0)
    return out.substr(0, out.size() - ext.size()) + ".paths.txt";
  return out + ".paths.txt";
}

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "embed", "Embed images (files or folders) and texts: JSON lines, or a [n, dim] float32 .npy with --out (and the image rows' paths in OUT.paths.txt)");
  struct Opts {
    std::string model;
    std::vector<std::string> inputs, images, texts;
    bool normalize = false;
    int batch = 16;
    int threads = 0;
    int decode_threads = 0;
    bool fast_decode = false;
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
  cmd->add_option("IMAGE_OR_DIR", o->inputs, "Image files, or folders searched recursively (sorted order)");
  cmd->add_option("--image", o->images, "Image files (or folders) to embed");
  cmd->add_option("--text", o->texts, "Texts to embed");
  cmd->add_flag("--normalize", o->normalize, "L2-normalise every embedding");
  clipkit::cli::add_batch_size(cmd, o->batch, "Inputs per forward pass");
  cmd->add_option("--out", o->out, "Write a float32 [n, dim] .npy instead of JSON lines");
  cmd->add_option("--threads", o->threads, "Compute threads (0 = one per core)");
  clipkit::cli::add_decode_threads(cmd, o->decode_threads);
  clipkit::cli::add_fast_decode(cmd, o->fast_decode);
  cmd->add_option("--dtype", o->dtype, "Weights/compute: f32 (default, exact), f16 or int8 (fastest)");
  cmd->add_option("--activation", o->activation, "MLP activation: auto (default), quick_gelu or gelu");
  clipkit::cli::add_arch_option(cmd, o->arch);
  clipkit::cli::add_text_model_options(cmd, o->text_model, o->tokenizer);
  cmd->add_option("--convolution", o->convolution,
                  "ResNet convolutions: auto (default, fastest), direct (least memory), nhwc or blocked");
  clipkit::cli::add_examples(cmd, {"clipkit embed --model ViT-B-32.pt --image cat.jpg --text 'a photo of a cat'",
                                   "clipkit embed --model ViT-B-32.pt --normalize photos/ --out photos.npy   # + photos.paths.txt"});
  cmd->callback([o] {
    if (!o->out.empty()) clipkit::cli::check_output_path(o->out, "--out");
    if (o->inputs.empty() && o->images.empty() && o->texts.empty())
      throw Error(ErrorCode::InvalidArgument, "nothing to embed: give image files or folders, --image FILE... and/or --text TEXT...");
    if (o->batch < 1) throw Error(ErrorCode::InvalidArgument, "--batch-size must be at least 1, got " + std::to_string(o->batch));
    if (o->threads < 0)
      throw Error(ErrorCode::InvalidArgument, "--threads must be >= 0, got " + std::to_string(o->threads));
    if (o->decode_threads < 0)
      throw Error(ErrorCode::InvalidArgument, "--decode-threads must be >= 0, got " + std::to_string(o->decode_threads));
    // Folders expand to their images (recursively, sorted); a file named directly must be readable.
    std::vector<std::string> images;
    std::vector<bool> named;  // given on the command line (not found in a folder)
    for (const auto* list : {&o->inputs, &o->images})
      for (const auto& in : *list) {
        const auto found = clipkit::list_image_files({in});
        const bool direct = found.size() == 1 && found.front() == in;
        for (const auto& f : found) {
          images.push_back(f);
          named.push_back(direct);
        }
      }
    if (!o->out.empty())
      for (const auto& p : images)
        if (p.find('\n') != std::string::npos)
          throw Error(ErrorCode::InvalidArgument, "cannot list '" + p + "' in a paths file: the name holds a line break");
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
    std::vector<float> all;  // only with --out
    std::vector<std::string> rows_paths;
    clipkit::cli::Progress progress("embed", static_cast<int64_t>(images.size() + o->texts.size()));
    auto emit = [&](const std::vector<std::string>& inputs, const std::vector<size_t>& which,
                    const clipkit::Embeddings& e, const char* kind) {
      if (!o->out.empty()) {
        all.insert(all.end(), e.data.begin(), e.data.end());
      } else {
        std::string lines;
        for (int64_t r = 0; r < e.rows; ++r) lines += json_line(inputs[which[static_cast<size_t>(r)]], kind, e.row(r), dim);
        std::fwrite(lines.data(), 1, lines.size(), stdout);
        std::fflush(stdout);
      }
    };
    const size_t batch = static_cast<size_t>(o->batch);
    clipkit::IngestOptions io;
    io.batch_size = o->batch;
    io.decode_threads = o->decode_threads;
    const clipkit::DecodeOptions decode = clipkit::ingest_decode_options(model->preprocess_config(), o->fast_decode);
    clipkit::run_image_ingest(
        images.size(), model->preprocess_config(), [&](size_t i) { return clipkit::decode_image_file(images[i], decode); },
        [&](clipkit::IngestBatch& b) {
          for (const auto& [i, err] : b.failures) {
            if (named[i]) std::rethrow_exception(err);
            try {
              std::rethrow_exception(err);
            } catch (const std::exception& e) {
              clipkit::cli::warn("embed", "skipping " + clipkit::cli::failure_text(images[i], e.what()));
            }
          }
          if (b.rows() > 0) emit(images, b.items, model->encode_images(b.pixels.data(), b.rows(), o->normalize), "image");
          for (size_t i : b.items) rows_paths.push_back(images[i]);
          progress.advance(static_cast<int64_t>(b.end - b.begin));
        },
        io);
    for (size_t start = 0; start < o->texts.size(); start += batch) {
      const size_t n = std::min(batch, o->texts.size() - start);
      std::vector<std::string> chunk(o->texts.begin() + static_cast<std::ptrdiff_t>(start),
                                     o->texts.begin() + static_cast<std::ptrdiff_t>(start + n));
      std::vector<size_t> which(n);
      for (size_t i = 0; i < n; ++i) which[i] = start + i;
      emit(o->texts, which, model->encode_texts(chunk, o->normalize), "text");
      progress.advance(static_cast<int64_t>(n));
    }
    progress.finish();
    if (!o->out.empty()) {
      const int64_t rows = static_cast<int64_t>(rows_paths.size() + o->texts.size());
      clipkit::write_npy(o->out, {rows, dim}, all.data());
      if (!images.empty()) {
        std::string text;
        for (const auto& p : rows_paths) text += p + "\n";
        clipkit::write_file_atomic(paths_file_for(o->out), text.data(), text.size());
      }
    }
  });
});

}  // namespace
