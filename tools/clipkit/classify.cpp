// clipkit classify: zero-shot classification of images with prompt ensembles.
//
//   clipkit classify --model M (--labels "a,b" | --labels-file F | --label-set NAME)
//                    [--templates NAME|FILE] [--scale S] [--top-k K] [--format table|json|csv]
//                    [--classifier C.clf] IMAGE|DIR...
//
// Directories are walked recursively in sorted order. Unreadable images are reported on stderr
// and skipped; the exit code is 0 when at least one image was classified, 1 otherwise.
#include <charconv>
#include <cmath>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "clipkit/messages.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "clipkit/zeroshot.h"
#include "zeroshot/cli_support.h"

namespace {

struct ClassifyArgs {
  std::string model, labels, labels_file, label_set, templates, classifier, format = "table";
  float scale = 0.0f;
  bool scale_given = false;
  int top_k = 5;
  int batch_size = 32;
  int decode_threads = 0;
  bool fast_decode = false;
  std::vector<std::string> inputs;
  clipkit::ModelOptions compute;
};

size_t width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string json_string(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Shortest decimal form that reads back as the same float.
std::string json_number(float v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

void run(const ClassifyArgs& a) {
  using namespace clipkit;
  if (a.top_k < 1) throw Error(ErrorCode::InvalidArgument, "--top-k must be at least 1");
  if (a.format != "table" && a.format != "json" && a.format != "csv")
    throw Error(ErrorCode::InvalidArgument, "--format must be table, json or csv, not '" + a.format + "'");
  if (!a.classifier.empty() && (!a.labels.empty() || !a.labels_file.empty() || !a.label_set.empty() || !a.templates.empty()))
    throw Error(ErrorCode::InvalidArgument, "--classifier already holds the labels and templates; drop --labels/--labels-file/--label-set/--templates");
  // Validate the cheap inputs before loading the model.
  std::vector<ClassSpec> classes;
  std::vector<std::string> templates;
  if (a.classifier.empty()) {
    classes = resolve_cli_classes(a.labels, a.labels_file, a.label_set, &templates);
    if (!a.templates.empty()) templates = resolve_templates(a.templates);
  }
  const std::vector<std::string> files = list_image_files(a.inputs);
  if (files.empty()) throw Error(ErrorCode::NotFound, "no image files found in the given paths");

  auto model = Model::load(a.model, a.compute);
  ZeroShotClassifier clf;
  if (!a.classifier.empty()) {
    clf = ZeroShotClassifier::load(a.classifier, *model);
  } else {
    ClassifierOptions opt;
    opt.templates = templates;
    int64_t total_prompts = 0;
    for (const auto& c : classes) total_prompts += static_cast<int64_t>((c.templates.empty() ? templates.size() : c.templates.size()) * c.names.size());
    cli::Progress bar("prompts", total_prompts);
    int64_t last = 0;
    opt.progress = [&](int64_t done, int64_t) {
      bar.advance(done - last);
      last = done;
    };
    clf = ZeroShotClassifier::build(*model, classes, opt);
    bar.finish();
  }

  EncodedImages enc;
  {
    cli::Progress bar("images", static_cast<int64_t>(files.size()));
    enc = encode_image_paths(*model, files, a.batch_size, [&](int64_t, int64_t) { bar.advance(); },
                             a.decode_threads, a.fast_decode);
    bar.finish();
  }
  for (const auto& [path, why] : enc.failures) cli::warn("classify", "skipping " + cli::failure_text(path, why));
  const float scale = a.scale_given ? a.scale : model->logit_scale();
  const auto preds = enc.paths.empty() ? std::vector<Prediction>{} : clf.classify(enc.embeddings, scale, a.top_k);

  if (a.format == "json") {
    // {"image":PATH,"top":[{"label":L,"score":S,"prob":P},...]} with keys in this order, compact
    for (size_t i = 0; i < preds.size(); ++i) {
      std::string line = "{\"image\":" + json_string(enc.paths[i]) + ",\"top\":[";
      for (size_t k = 0; k < preds[i].top.size(); ++k) {
        const auto& s = preds[i].top[k];
        line += (k ? "," : "") + std::string("{\"label\":") + json_string(s.label) + ",\"score\":" + json_number(s.score) +
                ",\"prob\":" + json_number(s.prob) + "}";
      }
      std::cout << line << "]}\n";
    }
  } else if (preds.empty()) {
    // nothing classified: no header either (the error below says why)
  } else if (a.format == "csv") {
    std::cout << "image,rank,label,score,prob\n";
    for (size_t i = 0; i < preds.size(); ++i)
      for (size_t k = 0; k < preds[i].top.size(); ++k) {
        const auto& s = preds[i].top[k];
        char nums[64];
        std::snprintf(nums, sizeof nums, "%.6g,%.6g", static_cast<double>(s.score), static_cast<double>(s.prob));
        std::cout << csv_field(enc.paths[i]) << "," << k + 1 << "," << csv_field(s.label) << "," << nums << "\n";
      }
  } else {
    // image | 1st | 2nd | ...: "label  97.3%"
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> head = {"image"};
    const size_t k = preds.empty() ? 0 : preds[0].top.size();
    for (size_t r = 0; r < k; ++r) head.push_back("#" + std::to_string(r + 1));
    rows.push_back(head);
    for (size_t i = 0; i < preds.size(); ++i) {
      std::vector<std::string> row = {enc.paths[i]};
      for (const auto& s : preds[i].top) {
        char p[32];
        std::snprintf(p, sizeof p, "%5.1f%%", 100.0 * static_cast<double>(s.prob));
        row.push_back(s.label + " " + p);
      }
      rows.push_back(row);
    }
    std::vector<size_t> w(head.size(), 0);
    for (const auto& r : rows)
      for (size_t j = 0; j < r.size(); ++j) w[j] = std::max(w[j], width(r[j]));
    for (const auto& r : rows) {
      std::string line;
      for (size_t j = 0; j < r.size(); ++j) {
        line += r[j];
        if (j + 1 < r.size()) line += std::string(w[j] - width(r[j]) + 3, ' ');
      }
      std::cout << line << "\n";
    }
  }
  std::cout.flush();
  if (preds.empty())
    throw Error(ErrorCode::Format, "none of the " + std::to_string(files.size()) + " image(s) could be read");
}

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto a = std::make_shared<ClassifyArgs>();
  auto* cmd = app.add_subcommand("classify", "Zero-shot classify images with prompt ensembles");
  cmd->add_option("--model", a->model, "Model file or folder (.pt, .safetensors, Hugging Face folder)")->required();
  cmd->add_option("--labels", a->labels, "Comma-separated class names; '|' separates synonyms of one class");
  cmd->add_option("--labels-file", a->labels_file, "Label file: one class per line (synonyms with '|'), or JSON");
  cmd->add_option("--label-set", a->label_set, "Built-in label set (imagenet1000, cifar10, food101, patterns, ...)");
  cmd->add_option("--templates", a->templates,
                  "Built-in template set (none, photo, imagenet7, imagenet80, a dataset name) or a template file; "
                  "default: the label set's own templates, else 'photo'");
  auto* scale = cmd->add_option("--scale", a->scale, "Logit scale (default: the model's learned logit_scale; the paper's notebook uses 100)");
  clipkit::cli::add_top_k(cmd, a->top_k, "Number of labels per image");
  clipkit::cli::add_format(cmd, a->format, {"table", "json", "csv"});
  cmd->add_option("--classifier", a->classifier, "Use a classifier saved by 'clipkit classifier build'");
  clipkit::cli::add_batch_size(cmd, a->batch_size, "Images per forward pass");
  clipkit::cli::add_compute_options(cmd, a->compute);
  clipkit::cli::add_decode_threads(cmd, a->decode_threads);
  clipkit::cli::add_fast_decode(cmd, a->fast_decode);
  cmd->add_option("inputs", a->inputs, "Image files or directories (walked recursively)")->required();
  clipkit::cli::add_examples(cmd, {"clipkit classify --model ViT-B-32.pt --labels 'cat,dog,a red car' photos/",
                                   "clipkit classify --model ViT-B-32.pt --label-set imagenet1000 -k 3 --format json cat.jpg"});
  cmd->callback([a, scale] {
    a->scale_given = scale->count() > 0;
    run(*a);
  });
});

}  // namespace
