// clipkit eval: compare prompt strategies (template sets) on a labelled image folder, and
// select templates by sequential forward selection.
//
//   clipkit eval --model M --dataset DIR --strategies none,photo,imagenet7,imagenet80,FILE
//                [--report R.html|R.md|R.json] [--scale S (default: the model's)]
//   clipkit eval --model M --dataset DIR --select-templates --from imagenet80 [--max 10] [--holdout 0.5]
//
// DIR holds one folder per class (folder name = label, or DIR/labels.json maps folder → label).
// Images are encoded once and shared by all strategies; prompt embeddings are cached too.
#include <iostream>
#include <map>
#include <memory>
#include <sstream>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "clipkit/messages.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "clipkit/zeroshot.h"
#include "zeroshot/report.h"

namespace {

struct EvalArgs {
  std::string model, dataset, strategies = "none,photo,imagenet7,imagenet80", from = "imagenet80";
  std::vector<std::string> reports;
  float scale = 0.0f;
  bool scale_given = false;
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

void run(const EvalArgs& a) {
  using namespace clipkit;
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
  if (strategies.empty() && !a.select) throw Error(ErrorCode::InvalidArgument, "--strategies is empty");

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
  cmd->add_option("--dataset", a->dataset, "Folder of class folders (optional labels.json: folder -> label)")->required();
  cmd->add_option("--strategies", a->strategies,
                  "Comma-separated template sets or files (default none,photo,imagenet7,imagenet80); '' with --select-templates for none");
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
  clipkit::cli::add_examples(cmd, {"clipkit eval --model ViT-B-32.pt --dataset pets/ --report pets.html",
                                   "clipkit eval --model ViT-B-32.pt --dataset pets/ --select-templates --from imagenet80 --max 5"});
  cmd->callback([a, scale] {
    a->scale_given = scale->count() > 0;
    run(*a);
  });
});

}  // namespace
