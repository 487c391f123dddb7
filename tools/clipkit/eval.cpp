// clipkit eval: compare prompt strategies (template sets) on a labelled image folder, and
// select templates by sequential forward selection.
//
//   clipkit eval DIR --model M --strategies none,photo,imagenet7,imagenet80,FILE
//                [--report R.html|R.md|R.json] [--scale S (default: the model's)]
//   clipkit eval DIR --model M --select-templates --from imagenet80 [--max 10] [--holdout 0.5]
//
// DIR (or --dataset DIR) holds one folder per class (folder name = label, or DIR/labels.json maps
// folder → label). Images are encoded once and shared by all strategies; prompt embeddings are
// cached too.
//
//   clipkit eval DIR --model M --classifier C.clf          (a saved classifier beside the strategies)
//   clipkit eval DIR --model M --few-shot 1,2,4,8,16 [--methods zero-shot,linear-probe,...]
//                [--repeats 3 --seed S] [--train TRAIN_DIR]  (learning curve of trained classifiers)
#include <algorithm>
#include <iostream>
#include <map>
#include <set>
#include <memory>
#include <sstream>

#include "clipkit/adapt.h"
#include "clipkit/error.h"
#include "clipkit/model.h"
#include "clipkit/messages.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "clipkit/zeroshot.h"
#include "zeroshot/report.h"

namespace {

struct EvalArgs {
  std::string model, dataset, dataset_option, strategies = "none,photo,imagenet7,imagenet80", from = "imagenet80";
  std::string classifier, few_shot, methods = "zero-shot,linear-probe,tip-adapter,zs-probe", train;
  int repeats = 3;
  uint64_t seed = 0;
  std::vector<std::string> reports;
  float scale = 0.0f;
  bool scale_given = false;
  bool strategies_given = false;
  bool select = false;
  int max_templates = 10;
  double holdout = 0.5;
  int batch_size = 32;
  int decode_threads = 0;
  bool fast_decode = false;
  clipkit::ModelOptions compute;
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// Evaluates a saved classifier on the dataset: its labels must be the dataset's classes (any order).
clipkit::StrategyResult classifier_result(const EvalArgs& a, const clipkit::Model& model, const clipkit::LabeledFolder& ds,
                                          const clipkit::Embeddings& images, const std::vector<int>& truth, float scale) {
  using namespace clipkit;
  const auto clf = ZeroShotClassifier::load(a.classifier, model);
  const auto index = match_label_list(ds.classes, clf.classes(), "classifier '" + a.classifier + "'");
  const Embeddings lg = clf.logits(images, scale);
  Embeddings ordered(lg.rows, static_cast<int64_t>(ds.classes.size()));
  for (int64_t i = 0; i < lg.rows; ++i)
    for (size_t c = 0; c < ds.classes.size(); ++c) ordered.row(i)[c] = lg.row(i)[index[c]];
  return {a.classifier + " (" + clf.method() + ")", clf.templates(), evaluate_logits(ordered, truth)};
}

std::vector<int> parse_shots(const std::string& text) {
  std::vector<int> out;
  for (const auto& item : split_list(text)) {
    size_t pos = 0;
    int k = 0;
    try {
      k = std::stoi(item, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    if (pos != item.size() || k < 1)
      throw clipkit::Error(clipkit::ErrorCode::InvalidArgument, "--few-shot: '" + item + "' is not a positive shot count");
    out.push_back(k);
  }
  if (out.empty()) throw clipkit::Error(clipkit::ErrorCode::InvalidArgument, "--few-shot lists no shot count");
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// The few-shot learning curve: every method trained on K images per class (repeats draws), scored
// on test images never used for training.
clipkit::LearningCurve learning_curve(const EvalArgs& a, const clipkit::Model& model, const clipkit::LabeledFolder& ds,
                                      const clipkit::EncodedImages& enc, const std::vector<int>& truth,
                                      const clipkit::TextEncoder& text, const std::vector<std::string>& zs_templates,
                                      const std::string& zs_name, float scale) {
  using namespace clipkit;
  LearningCurve curve;
  curve.shots = parse_shots(a.few_shot);
  curve.methods = split_list(a.methods);
  curve.repeats = a.repeats;
  curve.seed = a.seed;
  curve.zero_shot_templates = zs_name;
  bool needs_text = false;
  for (const auto& m : curve.methods)
    if (m != "zero-shot") needs_text |= adapt_method_uses_text(parse_adapt_method(m));
  const int classes = static_cast<int>(ds.classes.size());
  std::vector<std::string> names;
  for (const auto& c : ds.classes) names.push_back(c.label());

  LabeledFeatures everything;
  everything.features = enc.embeddings;
  everything.labels = truth;
  everything.paths = enc.paths;
  everything.num_classes = classes;
  LabeledFeatures pool, test;
  if (!a.train.empty()) {
    const LabeledFolder tf = read_labeled_folder(a.train);
    const auto index = match_label_list(tf.classes, ds.classes, "the dataset '" + a.dataset + "'");
    FeatureCacheOptions fc;
    fc.dir = default_embedding_cache_dir();
    fc.batch_size = a.batch_size;
    cli::Progress bar("training images", static_cast<int64_t>(tf.images.size()));
    int64_t last = 0;
    fc.progress = [&](int64_t done, int64_t) {
      bar.advance(done - last);
      last = done;
    };
    pool = encode_labeled_folder(model, tf, fc);
    bar.finish();
    for (const auto& [path, why] : pool.failures) cli::warn("eval", "skipping " + cli::failure_text(path, why));
    for (int& l : pool.labels) l = index[static_cast<size_t>(l)];
    pool.num_classes = classes;
    test = everything;
    curve.train_source = "'" + a.train + "'";
  } else {
    const std::vector<bool> is_test = seeded_split(truth, classes, 0.5, a.seed);
    std::vector<size_t> tr, te;
    for (size_t i = 0; i < is_test.size(); ++i) (is_test[i] ? te : tr).push_back(i);
    pool = select_rows(everything, tr);
    test = select_rows(everything, te);
    curve.train_source = "half of each class of the dataset (seed " + std::to_string(a.seed) + "), the other half tested";
  }
  curve.test_images = test.features.rows;
  check_training_set(pool, names);
  if (test.features.rows == 0) throw Error(ErrorCode::InvalidArgument, "--few-shot: no test image left");
  for (int k : curve.shots) draw_shots(pool.labels, classes, k, a.seed, names);  // every K fits before any training

  ZeroShotClassifier zs;
  if (needs_text || std::find(curve.methods.begin(), curve.methods.end(), "zero-shot") != curve.methods.end()) {
    ClassifierOptions co;
    co.templates = zs_templates;
    zs = ZeroShotClassifier::build(text, ds.classes, co, model.info().fingerprint, model.logit_scale());
  }
  std::set<std::string> warned;
  cli::Progress bar("few-shot runs",
                    static_cast<int64_t>(curve.methods.size() * curve.shots.size()) * std::max(1, a.repeats));
  for (const auto& m : curve.methods) {
    std::vector<std::vector<double>> per_shot;
    for (int k : curve.shots) {
      std::vector<double> runs;
      for (int r = 0; r < a.repeats; ++r) {
        const uint64_t seed = a.seed + 1000003ull * static_cast<uint64_t>(r) + static_cast<uint64_t>(k);
        Embeddings lg;
        if (m == "zero-shot") {
          lg = zs.logits(test.features, scale);
        } else {
          TrainOptions o;
          o.method = parse_adapt_method(m);
          o.c_auto = true;
          o.seed = seed;
          const LabeledFeatures shots = select_rows(pool, draw_shots(pool.labels, classes, k, seed, names));
          TrainReport rep;
          const auto clf = train_classifier(shots, ds.classes, adapt_method_uses_text(o.method) ? &zs : nullptr, o, &rep,
                                            model.info().fingerprint, model.logit_scale());
          for (const auto& w : rep.warnings)
            if (warned.insert(m + ": " + w.substr(0, w.find(':'))).second) cli::warn("eval", m + ", " + std::to_string(k) + " shots: " + w);
          lg = clf.logits(test.features, scale);
        }
        runs.push_back(evaluate_logits(lg, test.labels).top1);
        bar.advance();
      }
      per_shot.push_back(runs);
    }
    curve.top1.push_back(per_shot);
  }
  bar.finish();
  return curve;
}

void run(EvalArgs a) {
  using namespace clipkit;
  if (!a.dataset_option.empty()) {
    if (!a.dataset.empty() && a.dataset != a.dataset_option)
      throw cli::UsageError("two datasets given ('" + a.dataset + "' and --dataset '" + a.dataset_option +
                            "'): name the folder once");
    a.dataset = a.dataset_option;
  }
  if (a.dataset.empty()) throw cli::UsageError("name the labelled folder to evaluate: clipkit eval DIR --model M");
  if (!a.few_shot.empty()) {
    parse_shots(a.few_shot);
    if (a.repeats < 1) throw Error(ErrorCode::InvalidArgument, "--repeats must be at least 1");
    const auto methods = split_list(a.methods);
    if (methods.empty()) throw Error(ErrorCode::InvalidArgument, "--methods is empty");
    for (const auto& m : methods)
      if (m != "zero-shot") parse_adapt_method(m);
  } else if (!a.train.empty()) {
    throw Error(ErrorCode::InvalidArgument, "--train goes with --few-shot");
  }
  if (a.max_templates < 1) throw Error(ErrorCode::InvalidArgument, "--max must be at least 1");
  if (!(a.holdout > 0.0 && a.holdout < 1.0)) throw Error(ErrorCode::InvalidArgument, "--holdout must be between 0 and 1 (exclusive)");
  if (a.scale_given && !(a.scale > 0.0f)) throw Error(ErrorCode::InvalidArgument, "--scale must be positive");
  for (const auto& r : a.reports) {
    const auto dot = r.find_last_of('.');
    const std::string ext = dot == std::string::npos ? "" : r.substr(dot + 1);
    if (ext != "html" && ext != "htm" && ext != "md" && ext != "markdown" && ext != "json")
      throw Error(ErrorCode::InvalidArgument, "--report '" + r + "': use a .html, .md or .json file name");
    cli::check_output_path(r, "--report");
  }
  const LabeledFolder ds = read_labeled_folder(a.dataset);
  std::vector<std::pair<std::string, std::vector<std::string>>> strategies;
  for (const auto& s : split_list(a.strategies)) strategies.emplace_back(s, resolve_templates(s));
  std::vector<std::string> pool;
  if (a.select) pool = resolve_templates(a.from);
  if (strategies.empty() && !a.select && a.classifier.empty() && a.few_shot.empty())
    throw Error(ErrorCode::InvalidArgument, "--strategies is empty");

  auto model = Model::load(a.model, a.compute);
  EncodedImages enc;
  {
    cli::Progress bar("images", static_cast<int64_t>(ds.images.size()));
    enc = encode_image_paths(*model, ds.images, a.batch_size, [&](int64_t, int64_t) { bar.advance(); },
                             a.decode_threads, a.fast_decode);
    bar.finish();
  }
  for (const auto& [path, why] : enc.failures) cli::warn("eval", "skipping " + cli::failure_text(path, why));
  if (enc.paths.empty()) throw Error(ErrorCode::Format, "none of the dataset's images could be read");
  const std::vector<int> truth = encoded_truth(ds, enc);
  // Prompt embeddings are cached across strategies and the selection pool.
  const TextEncoder cached = caching_text_encoder(*model);

  EvalReport report;
  report.model = a.model;
  report.dataset = a.dataset;
  for (const auto& c : ds.classes) report.labels.push_back(c.label());
  report.class_counts.assign(ds.classes.size(), 0);
  for (int t : truth) report.class_counts[static_cast<size_t>(t)]++;
  report.images = static_cast<int64_t>(enc.paths.size());
  report.image_paths = enc.paths;
  report.truth = truth;
  report.failed_images = static_cast<int64_t>(enc.failures.size());
  // The model's learned logit scale unless --scale is given, as in `clipkit classify`.
  const float scale = a.scale_given ? a.scale : model->logit_scale();
  report.scale = scale;
  for (size_t c = 0; c < ds.classes.size(); ++c)
    if (report.class_counts[c] == 0)
      cli::warn("eval", "class '" + ds.classes[c].label() + "' has no readable image; it is left out of the per-class mean");

  int64_t total_prompts = 0;
  for (const auto& [name, templates] : strategies)
    for (const auto& c : ds.classes) total_prompts += static_cast<int64_t>(templates.size() * c.names.size());
  {
    cli::Progress bar("prompts", total_prompts);
    for (const auto& [name, templates] : strategies) {
      ClassifierOptions opt;
      opt.templates = templates;
      int64_t last = 0;
      opt.progress = [&](int64_t done, int64_t) {
        bar.advance(done - last);
        last = done;
      };
      const auto clf = ZeroShotClassifier::build(cached, ds.classes, opt, model->info().fingerprint, model->logit_scale());
      report.strategies.push_back({name, templates, evaluate(clf, enc.embeddings, truth, scale)});
    }
    bar.finish();
  }
  if (!a.classifier.empty()) report.strategies.push_back(classifier_result(a, *model, ds, enc.embeddings, truth, scale));
  if (!a.few_shot.empty()) {
    // The zero-shot parts use the templates classify and classifier train use by default, unless
    // --strategies names others (then its first).
    const bool own = a.strategies_given && !strategies.empty();
    const std::string zs_name = own ? strategies.front().first : "photo";
    const auto zs_templates = own ? strategies.front().second : resolve_templates("photo");
    report.learning_curve = learning_curve(a, *model, ds, enc, truth, cached, zs_templates, zs_name, scale);
  }
  if (a.select) {
    const auto split = stratified_split(truth, static_cast<int>(ds.classes.size()), a.holdout);
    SelectionReport sel;
    sel.pool_name = a.from;
    sel.pool_size = pool.size();
    sel.holdout = a.holdout;
    int64_t names = 0;
    for (const auto& c : ds.classes) names += static_cast<int64_t>(c.names.size());
    cli::Progress bar("selection pool", names * static_cast<int64_t>(pool.size()));
    int64_t last = 0;
    sel.result = select_templates(cached, ds.classes, pool, enc.embeddings, truth, split, a.max_templates, scale,
                                  [&](int64_t done, int64_t) {
                                    bar.advance(done - last);
                                    last = done;
                                  });
    bar.finish();
    report.selection = std::move(sel);
  }
  std::cout << render_eval_text(report);
  for (const auto& r : a.reports) {
    write_eval_report(report, r);
    std::cout << "wrote " << r << "\n";
  }
}

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("eval", "Compare prompt strategies on a labelled image folder; select templates");
  cmd->add_option("--model", a->model, "Model file or folder")->required();
  cmd->add_option("dir", a->dataset, "Folder of class folders (optional labels.json: folder -> label)");
  cmd->add_option("--dataset", a->dataset_option, "The folder as an option (the same as dir)");
  cmd->add_option("--classifier", a->classifier, "Also evaluate a saved classifier (.clf: zero-shot or trained)");
  cmd->add_option("--few-shot", a->few_shot, "Learning curve: shot counts per class, e.g. 1,2,4,8,16");
  cmd->add_option("--methods", a->methods,
                  "Methods of the learning curve (default zero-shot,linear-probe,tip-adapter,zs-probe; also tip-adapter-f)");
  cmd->add_option("--repeats", a->repeats, "Draws of the training images per shot count (default 3)");
  cmd->add_option("--seed", a->seed, "Seed of the draws and of the dataset's train/test split (default 0)");
  cmd->add_option("--train", a->train, "Training folder for --few-shot (default: half of each class of the dataset)");
  auto* strategies = cmd->add_option("--strategies", a->strategies,
                                     "Comma-separated template sets or files (default none,photo,imagenet7,imagenet80); '' with "
                                     "--select-templates for none; the first also builds --few-shot's zero-shot parts (default photo)");
  cmd->add_option("--report", a->reports, "Write a report: .html (self-contained, charts), .md or .json; repeatable");
  auto* scale = cmd->add_option("--scale", a->scale, "Logit scale (default: the model's learned logit_scale, as classify)");
  cmd->add_flag("--select-templates", a->select, "Sequential forward selection of templates");
  cmd->add_option("--from", a->from, "Template pool for --select-templates (default imagenet80)");
  cmd->add_option("--max", a->max_templates, "Templates to select (default 10)");
  cmd->add_option("--holdout", a->holdout, "Held-out fraction per class for --select-templates (default 0.5)");
  clipkit::cli::add_batch_size(cmd, a->batch_size, "Images per forward pass");
  clipkit::cli::add_compute_options(cmd, a->compute);
  clipkit::cli::add_decode_threads(cmd, a->decode_threads);
  clipkit::cli::add_fast_decode(cmd, a->fast_decode);
  clipkit::cli::add_examples(cmd, {"clipkit eval pets/ --model ViT-B-32.pt --report pets.html",
                                   "clipkit eval pets/ --model ViT-B-32.pt --few-shot 1,2,4,8,16 --train pets-train/ --report curve.html"});
  cmd->callback([a, scale, strategies] {
    a->scale_given = scale->count() > 0;
    a->strategies_given = strategies->count() > 0;
    run(*a);
  });
});

}  // namespace
