// clipkit classifier train: a classifier trained on the images of a labelled folder (.clf).
//
//   clipkit classifier train --model M --train DIR --method linear-probe|zs-probe|tip-adapter|tip-adapter-f
//                            [--C VALUE|auto] [--alpha A --beta B] [--templates T] [--shots K --seed S]
//                            [--val-fraction F] --out X.clf
//
// The verb joins `clipkit classifier` (classifier.cpp) as a late setup.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "clipkit/adapt.h"
#include "clipkit/error.h"
#include "clipkit/messages.h"
#include "clipkit/model.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "clipkit/zeroshot.h"
#include "zeroshot/cli_support.h"

namespace {

struct TrainArgs {
  std::string model, train, method, c = "1", templates, labels, labels_file, label_set, out, cache;
  float alpha = 0.0f, beta = 0.0f;
  bool alpha_given = false, beta_given = false, no_cache = false;
  int shots = 0;
  uint64_t seed = 0;
  double val_fraction = 0.2;
  int batch_size = 32;
  clipkit::ModelOptions compute;
};

std::string percent(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", 100.0 * v);
  return b;
}

void train(const TrainArgs& a) {
  using namespace clipkit;
  const AdaptMethod method = parse_adapt_method(a.method);
  TrainOptions opt;
  opt.method = method;
  opt.seed = a.seed;
  opt.val_fraction = a.val_fraction;
  if (!(a.val_fraction > 0.0 && a.val_fraction < 1.0))
    throw Error(ErrorCode::InvalidArgument, "--val-fraction must be between 0 and 1 (exclusive)");
  if (a.c == "auto") {
    opt.c_auto = true;
  } else {
    size_t pos = 0;
    try {
      opt.C = std::stod(a.c, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    if (pos != a.c.size() || !(opt.C > 0.0) || !std::isfinite(opt.C))
      throw Error(ErrorCode::InvalidArgument, "--C must be a positive number or 'auto', not '" + a.c + "'");
  }
  if (a.alpha_given != a.beta_given) throw Error(ErrorCode::InvalidArgument, "--alpha and --beta go together");
  if (a.alpha_given) {
    if (method != AdaptMethod::TipAdapter && method != AdaptMethod::TipAdapterF)
      throw Error(ErrorCode::InvalidArgument, "--alpha and --beta apply to tip-adapter and tip-adapter-f");
    if (!(a.alpha >= 0.0f) || !(a.beta >= 0.0f) || !std::isfinite(a.alpha) || !std::isfinite(a.beta))
      throw Error(ErrorCode::InvalidArgument, "--alpha and --beta must be finite and not negative");
    opt.alpha = a.alpha;
    opt.beta = a.beta;
    opt.search_alpha_beta = false;
  }
  cli::check_output_path(a.out, "--out");
  const LabeledFolder folder = read_labeled_folder(a.train);
  std::vector<ClassSpec> classes = folder.classes;
  std::vector<std::string> templates = resolve_templates("photo");
  if (!a.labels.empty() || !a.labels_file.empty() || !a.label_set.empty()) {
    const auto list = resolve_cli_classes(a.labels, a.labels_file, a.label_set, &templates);
    const std::string source = !a.labels_file.empty() ? "'" + a.labels_file + "'"
                               : !a.label_set.empty() ? "label set '" + a.label_set + "'"
                                                      : std::string("--labels");
    const auto index = match_label_list(folder.classes, list, source);
    for (size_t c = 0; c < classes.size(); ++c) classes[c] = list[static_cast<size_t>(index[c])];
  }
  if (!a.templates.empty()) templates = resolve_templates(a.templates);

  auto model = Model::load(a.model, a.compute);
  FeatureCacheOptions fc;
  fc.dir = a.no_cache ? "" : (a.cache.empty() ? default_embedding_cache_dir() : a.cache);
  fc.batch_size = a.batch_size;
  LabeledFeatures all;
  {
    cli::Progress bar("images", static_cast<int64_t>(folder.images.size()));
    int64_t last = 0;
    fc.progress = [&](int64_t done, int64_t) {
      bar.advance(done - last);
      last = done;
    };
    all = encode_labeled_folder(*model, folder, fc);
    bar.finish();
  }
  for (const auto& [path, why] : all.failures) cli::warn("classifier train", "skipping " + cli::failure_text(path, why));
  std::vector<std::string> names;
  for (const auto& c : classes) names.push_back(c.label());
  check_training_set(all, names);
  LabeledFeatures data = all;
  if (a.shots > 0) data = select_rows(all, draw_shots(all.labels, all.num_classes, a.shots, a.seed, names));

  ZeroShotClassifier zero_shot;
  if (adapt_method_uses_text(method)) {
    ClassifierOptions co;
    co.templates = templates;
    zero_shot = ZeroShotClassifier::build(*model, classes, co);
  }
  nlohmann::json extra;
  if (a.shots > 0) extra["shots"] = a.shots;
  opt.hyperparameters_extra = extra.is_null() ? "{}" : extra.dump();
  TrainReport rep;
  const ZeroShotClassifier clf = train_classifier(data, classes, adapt_method_uses_text(method) ? &zero_shot : nullptr,
                                                  opt, &rep, model->info().fingerprint, model->logit_scale(),
                                                  model_name_of(*model));
  for (const auto& w : rep.warnings) cli::warn("classifier train", w);
  clf.save(a.out);
  char line[160];
  if (method == AdaptMethod::LinearProbe || method == AdaptMethod::ZsProbe)
    std::snprintf(line, sizeof line, "C = %.6g (%s)", rep.C, opt.c_auto ? "searched" : "given");
  else
    std::snprintf(line, sizeof line, "alpha = %.4g, beta = %.4g (%s)", static_cast<double>(rep.alpha),
                  static_cast<double>(rep.beta), opt.search_alpha_beta ? "searched" : "given");
  std::cout << a.method << ": " << line << "\n";
  if (rep.validation_accuracy >= 0.0)
    std::cout << "validation accuracy: " << percent(rep.validation_accuracy) << " on " << rep.validation_images
              << " images (seed " << a.seed << ")\n";
  else
    std::cout << "validation accuracy: none (every class has a single image)\n";
  std::cout << "wrote " << a.out << ": " << clf.num_classes() << " classes, trained on " << data.features.rows
            << " images, model " << clf.model_name() << " (fingerprint " << model->info().fingerprint << ")\n";
}

const bool registered = clipkit::cli::register_late_setup([](CLI::App& app) {
  CLI::App* cmd = app.get_subcommand("classifier");
  auto a = std::make_shared<TrainArgs>();
  auto* t = cmd->add_subcommand("train", "Train a classifier on the images of a labelled folder (few-shot)");
  t->add_option("--model", a->model, "Model file or folder")->required();
  t->add_option("--train", a->train, "Folder of class folders (optional labels.json: folder -> label)")->required();
  t->add_option("--method", a->method, "linear-probe, zs-probe, tip-adapter or tip-adapter-f")->required();
  t->add_option("--C", a->c, "Inverse penalty strength of the probes, or 'auto' to search it (default 1)");
  auto* alpha = t->add_option("--alpha", a->alpha, "Tip-Adapter: weight of the cache (with --beta; default: searched)");
  auto* beta = t->add_option("--beta", a->beta, "Tip-Adapter: sharpness of the cache affinities (with --alpha)");
  t->add_option("--templates", a->templates, "Templates of the zero-shot part: built-in set or file (default photo)");
  t->add_option("--labels", a->labels, "Class names to check the folders against ('|' separates synonyms)");
  t->add_option("--labels-file", a->labels_file, "Label file to check the folders against (names, synonyms, templates)");
  t->add_option("--label-set", a->label_set, "Built-in label set to check the folders against");
  t->add_option("--shots", a->shots, "Train on K images per class drawn with --seed (default: all)")
      ->check(clipkit::cli::integer_at_least(1));
  t->add_option("--seed", a->seed, "Seed of the shots, the validation split and the fine-tuning (default 0)");
  t->add_option("--val-fraction", a->val_fraction, "Validation fraction of each class for the searches (default 0.2)");
  t->add_option("--cache", a->cache, "Folder of cached image embeddings (default: the clipkit cache folder)");
  t->add_flag("--no-cache", a->no_cache, "Encode every image, read and write no cached embedding");
  t->add_option("--out", a->out, "Output .clf file")->required();
  clipkit::cli::add_batch_size(t, a->batch_size, "Images per forward pass");
  clipkit::cli::add_compute_options(t, a->compute);
  clipkit::cli::add_examples(
      t, {"clipkit classifier train --model ViT-B-32.pt --train pets/ --method linear-probe --C auto --out pets.clf",
          "clipkit classifier train --model ViT-B-32.pt --train pets/ --method tip-adapter --shots 16 --seed 1 --out tip.clf"});
  t->callback([a, alpha, beta] {
    a->alpha_given = alpha->count() > 0;
    a->beta_given = beta->count() > 0;
    train(*a);
  });
});

}  // namespace
