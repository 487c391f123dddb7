// train_classifier: one labelled feature set to a saved-able classifier, for every method.
#include <cmath>
#include <nlohmann/json.hpp>

#include "adapt/internal.h"
#include "clipkit/adapt.h"
#include "clipkit/error.h"

namespace clipkit {

using nlohmann::json;

const char* adapt_method_name(AdaptMethod m) {
  switch (m) {
    case AdaptMethod::LinearProbe: return "linear-probe";
    case AdaptMethod::ZsProbe: return "zs-probe";
    case AdaptMethod::TipAdapter: return "tip-adapter";
    case AdaptMethod::TipAdapterF: return "tip-adapter-f";
  }
  return "?";
}

AdaptMethod parse_adapt_method(const std::string& name) {
  for (AdaptMethod m : {AdaptMethod::LinearProbe, AdaptMethod::ZsProbe, AdaptMethod::TipAdapter, AdaptMethod::TipAdapterF})
    if (name == adapt_method_name(m)) return m;
  throw Error(ErrorCode::InvalidArgument,
              "unknown method '" + name + "' (known: linear-probe, zs-probe, tip-adapter, tip-adapter-f)");
}

bool adapt_method_uses_text(AdaptMethod m) { return m != AdaptMethod::LinearProbe; }

ZeroShotClassifier train_classifier(const LabeledFeatures& data, const std::vector<ClassSpec>& classes,
                                    const ZeroShotClassifier* zero_shot, const TrainOptions& o, TrainReport* report,
                                    const std::string& fingerprint, float logit_scale, const std::string& model_name) {
  std::vector<std::string> names;
  for (const auto& c : classes) names.push_back(c.label());
  if (static_cast<int>(classes.size()) != data.num_classes)
    throw Error(ErrorCode::InvalidArgument, std::to_string(classes.size()) + " class names for " +
                                                std::to_string(data.num_classes) + " classes in the training set");
  check_training_set(data, names);
  const bool text = adapt_method_uses_text(o.method);
  if (text) {
    if (!zero_shot) throw Error(ErrorCode::InvalidArgument, std::string(adapt_method_name(o.method)) + " needs the zero-shot classifier of the classes");
    if (zero_shot->num_classes() != data.num_classes || zero_shot->dim() != data.features.dim || zero_shot->trained_head())
      throw Error(ErrorCode::Shape, "the zero-shot classifier does not match the training set's classes or feature size");
  }
  if (!(o.C > 0.0) || !std::isfinite(o.C)) throw Error(ErrorCode::InvalidArgument, "C must be a positive number");
  TrainReport rep;
  const std::vector<bool> is_val = seeded_split(data.labels, data.num_classes, o.val_fraction, o.seed);
  std::vector<size_t> tr_idx, val_idx;
  for (size_t i = 0; i < is_val.size(); ++i) (is_val[i] ? val_idx : tr_idx).push_back(i);
  const bool have_val = !val_idx.empty();
  const LabeledFeatures tr = have_val ? select_rows(data, tr_idx) : LabeledFeatures{};
  const LabeledFeatures val = have_val ? select_rows(data, val_idx) : LabeledFeatures{};
  rep.validation_images = static_cast<int64_t>(val_idx.size());

  json hp = json::parse(o.hyperparameters_extra);
  hp["seed"] = o.seed;
  hp["val_fraction"] = o.val_fraction;
  TrainedHead head;
  head.method = adapt_method_name(o.method);
  Embeddings weights;

  if (o.method == AdaptMethod::LinearProbe || o.method == AdaptMethod::ZsProbe) {
    Embeddings anchor;
    LogRegOptions lo;
    if (o.method == AdaptMethod::ZsProbe) {
      const double s = zero_shot->model_logit_scale();
      anchor = zero_shot->class_embeddings();
      for (float& v : anchor.data) v = static_cast<float>(v * s);
      lo.anchor = &anchor;
      lo.penalize_bias = true;
      hp["anchor_scale"] = s;
      hp["objective"] = "0.5*||W - s*Z||^2 + 0.5*||b||^2 + C*sum CE(W f + b)";
    } else {
      hp["objective"] = "0.5*||W||^2 + C*sum CE(W f + b)";
    }
    double C = o.C;
    LogRegModel start;  // the validation fit at the final C: the final fit starts from it
    if (o.c_auto && have_val) {
      lo.max_iterations = o.search_iterations;
      const CSearchResult s = search_C(tr, val, lo);
      C = s.C;
      start = s.model;
      rep.validation_accuracy = s.validation_accuracy;
      json tried = json::array();
      for (const auto& [c, acc] : s.tried) tried.push_back({c, acc});
      hp["c_search"] = tried;
    } else {
      if (o.c_auto)
        rep.warnings.push_back("no validation split (every class has a single image): C = " + std::to_string(o.C) +
                               " instead of a search");
      if (have_val) {
        lo.C = C;
        lo.max_iterations = o.max_iterations;
        start = train_logistic_regression(tr.features, tr.labels, tr.num_classes, lo);
        rep.validation_accuracy = adapt_detail::top1_accuracy(logistic_logits(start, val.features), val.labels);
      }
    }
    lo.C = C;
    lo.max_iterations = o.max_iterations;
    const LogRegModel m = train_logistic_regression(data.features, data.labels, data.num_classes, lo,
                                                    start.weights.rows ? &start : nullptr);
    if (!m.converged)
      rep.warnings.push_back("L-BFGS stopped after " + std::to_string(m.iterations) + " iterations before its tolerance");
    rep.C = C;
    hp["C"] = C;
    hp["c_auto"] = o.c_auto && have_val;
    hp["iterations"] = m.iterations;
    hp["converged"] = m.converged;
    weights = m.weights;
    head.bias = m.bias;
  } else {
    const Embeddings& z = zero_shot->class_embeddings();
    const float clip_scale = 100.0f;
    float alpha = o.alpha, beta = o.beta;
    const bool fine = o.method == AdaptMethod::TipAdapterF;
    if (have_val) {
      TipFinetuneOptions fo = o.finetune;
      fo.seed = o.seed;
      const Embeddings keys = fine ? tip_adapter_finetune(z, tr.features, tr.labels, tr, alpha, beta, clip_scale, fo)
                                   : tr.features;
      if (o.search_alpha_beta) {
        const TipSearchResult s = search_tip_hyperparameters(z, keys, tr.labels, val, clip_scale);
        alpha = s.alpha;
        beta = s.beta;
        rep.validation_accuracy = s.validation_accuracy;
      } else {
        rep.validation_accuracy =
            adapt_detail::top1_accuracy(tip_adapter_logits(z, keys, tr.labels, alpha, beta, clip_scale, val.features), val.labels);
      }
    } else if (o.search_alpha_beta) {
      rep.warnings.push_back("no validation split (every class has a single image): alpha = " + std::to_string(alpha) +
                             ", beta = " + std::to_string(beta) + " instead of a search");
    }
    head.cache_keys = data.features;
    if (fine) {
      TipFinetuneOptions fo = o.finetune;
      fo.seed = o.seed;
      head.cache_keys = tip_adapter_finetune(z, data.features, data.labels, data, alpha, beta, clip_scale, fo);
      hp["epochs"] = fo.epochs;
      hp["batch_size"] = fo.batch_size;
      hp["learning_rate"] = fo.learning_rate;
      hp["weight_decay"] = fo.weight_decay;
      hp["adam_eps"] = fo.adam_eps;
    }
    head.cache_labels = data.labels;
    head.alpha = alpha;
    head.beta = beta;
    head.clip_scale = clip_scale;
    hp["searched"] = o.search_alpha_beta && have_val;
    rep.alpha = alpha;
    rep.beta = beta;
    weights = z;
  }
  head.hyperparameters = hp.dump();
  head.training_set = o.training_set == "{}" ? training_set_json(data) : o.training_set;
  if (report) *report = rep;
  std::vector<std::string> templates = zero_shot ? zero_shot->templates() : std::vector<std::string>{};
  ZeroShotClassifier clf = ZeroShotClassifier::from_trained(
      std::move(weights), std::move(head), classes, std::move(templates),
      zero_shot ? zero_shot->model_fingerprint() : fingerprint, zero_shot ? zero_shot->model_logit_scale() : logit_scale);
  clf.set_model_name(zero_shot && !zero_shot->model_name().empty() ? zero_shot->model_name() : model_name);
  return clf;
}

}  // namespace clipkit
