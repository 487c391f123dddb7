// clipkit classifier: build a zero-shot classifier once and save it (.clf), or describe one.
//
//   clipkit classifier build --model M (--labels-file F | --labels L | --label-set NAME)
//                            [--templates NAME|FILE] --out C.clf
//   clipkit classifier info C.clf
#include <iostream>
#include <memory>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "clipkit/zeroshot.h"
#include "zeroshot/cli_support.h"

namespace {

struct BuildArgs {
  std::string model, labels, labels_file, label_set, templates, out;
  int batch_size = 256;
  clipkit::ModelOptions compute;
};

void build(const BuildArgs& a) {
  using namespace clipkit;
  std::vector<std::string> templates;
  const auto classes = resolve_cli_classes(a.labels, a.labels_file, a.label_set, &templates);
  if (!a.templates.empty()) templates = resolve_templates(a.templates);
  cli::check_output_path(a.out, "--out");
  auto model = Model::load(a.model, a.compute);
  ClassifierOptions opt;
  opt.templates = templates;
  opt.batch_size = a.batch_size;
  int64_t total = 0;
  for (const auto& c : classes)
    total += static_cast<int64_t>((c.templates.empty() ? templates.size() : c.templates.size()) * c.names.size());
  cli::Progress bar("encoding prompts", total);
  int64_t last = 0;
  opt.progress = [&](int64_t done, int64_t) {
    bar.advance(done - last);
    last = done;
  };
  const auto clf = ZeroShotClassifier::build(*model, classes, opt);
  bar.finish();
  clf.save(a.out);
  std::cout << "wrote " << a.out << ": " << clf.num_classes() << " classes x " << clf.dim() << " dims from " << total
            << " prompts (" << templates.size() << " default templates), model " << clf.model_name() << " (fingerprint " << model->info().fingerprint << ")\n";
}

void info(const std::string& path) {
  const auto clf = clipkit::ZeroShotClassifier::load(path);
  std::cout << "classifier " << path << "\n"
            << "  classes: " << clf.num_classes() << "\n"
            << "  embedding size: " << clf.dim() << "\n"
            << "  model: " << (clf.model_name().empty() ? std::string("(not recorded)") : clf.model_name()) << "\n"
            << "  model fingerprint: " << clf.model_fingerprint() << "\n"
            << "  model logit scale: " << clf.model_logit_scale() << "\n"
            << "  method: " << clf.method() << "\n";
  if (const auto* head = clf.trained_head())
    std::cout << "  hyperparameters: " << head->hyperparameters << "\n"
              << "  training set: " << head->training_set << "\n";
  std::cout << "  default templates (" << clf.templates().size() << "):\n";
  for (const auto& t : clf.templates()) std::cout << "    " << t << "\n";
  std::cout << "  labels:\n";
  for (const auto& c : clf.classes()) {
    std::cout << "    " << c.label();
    for (size_t i = 1; i < c.names.size(); ++i) std::cout << " | " << c.names[i];
    if (!c.templates.empty()) std::cout << "   (" << c.templates.size() << " own templates)";
    std::cout << "\n";
  }
}

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand("classifier", "Build, save and inspect zero-shot classifiers (.clf)");
  cmd->require_subcommand(1);
  auto a = std::make_shared<BuildArgs>();
  auto* b = cmd->add_subcommand("build", "Encode the prompts of every class and save the classifier");
  b->add_option("--model", a->model, "Model file or folder")->required();
  b->add_option("--labels", a->labels, "Comma-separated class names; '|' separates synonyms");
  b->add_option("--labels-file", a->labels_file, "Label file: one class per line (synonyms with '|'), or JSON");
  b->add_option("--label-set", a->label_set, "Built-in label set (imagenet1000, cifar10, patterns, ...)");
  b->add_option("--templates", a->templates, "Built-in template set or template file (default: the label set's, else 'photo')");
  b->add_option("--out", a->out, "Output .clf file")->required();
  clipkit::cli::add_batch_size(b, a->batch_size, "Prompts per forward pass");
  clipkit::cli::add_compute_options(b, a->compute);
  clipkit::cli::add_examples(b, {"clipkit classifier build --model ViT-B-32.pt --label-set imagenet1000 --out imagenet.clf",
                                 "clipkit classifier build --model ViT-B-32.pt --labels-file pets.txt --templates photo --out pets.clf"});
  b->callback([a] { build(*a); });
  auto path = std::make_shared<std::string>();
  auto* i = cmd->add_subcommand("info", "Print the labels, templates and model of a .clf file");
  i->add_option("classifier", *path, "Classifier file")->required();
  clipkit::cli::add_examples(i, {"clipkit classifier info imagenet.clf"});
  i->callback([path] { info(*path); });
  clipkit::cli::add_examples(cmd, {"clipkit classifier build --model ViT-B-32.pt --label-set cifar10 --out cifar10.clf",
                                   "clipkit classify --model ViT-B-32.pt --classifier cifar10.clf photos/"});
});

}  // namespace
