// clipkit/adapt.h — classifiers trained on the image embeddings of a few labelled images.
//
//   auto model = clipkit::Model::load("ViT-B-32.pt");
//   auto folder = clipkit::read_labeled_folder("train/");            // one folder per class
//   auto feats = clipkit::encode_labeled_folder(*model, folder, {});  // cached per file hash
//   clipkit::TrainOptions opt;
//   opt.method = clipkit::AdaptMethod::LinearProbe;
//   opt.c_auto = true;                                                // sweep C on a validation split
//   clipkit::TrainReport rep;
//   auto clf = clipkit::train_classifier(feats, folder.classes, nullptr, opt, &rep);
//   clf.save("probe.clf");                                            // read by classify and eval
//
// Methods (docs/few-shot.md):
//   linear-probe   multinomial logistic regression, scikit-learn's objective
//                  ½‖W‖² + C·Σᵢ CE(W·fᵢ + b, yᵢ) (b not penalised), solved by L-BFGS;
//   zs-probe       ½‖W − s·Z‖² + ½‖b‖² + C·Σᵢ CE(W·fᵢ + b, yᵢ): the penalty pulls toward the
//                  zero-shot class matrix Z at the model's logit scale s (C → 0 gives zero-shot);
//   tip-adapter    training-free cache model: 100·f·Zᵀ + α·exp(−β(1 − f·Kᵀ))·L;
//   tip-adapter-f  the same with the keys K fine-tuned by AdamW on a cosine schedule.
// Features are L2-normalised image embeddings. Everything is deterministic for a given seed and
// thread count.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "clipkit/embeddings.h"
#include "clipkit/zeroshot.h"

namespace clipkit {

enum class AdaptMethod { LinearProbe, ZsProbe, TipAdapter, TipAdapterF };
const char* adapt_method_name(AdaptMethod m);  // "linear-probe", ...
// Error(InvalidArgument) listing the methods for an unknown name.
AdaptMethod parse_adapt_method(const std::string& name);
// Whether the method needs the zero-shot class matrix (zs-probe, tip-adapter, tip-adapter-f).
bool adapt_method_uses_text(AdaptMethod m);

// ---------------------------------------------------------------------------------------------
// Labelled features

struct LabeledFeatures {
  Embeddings features;              // one L2-normalised row per image
  std::vector<int> labels;          // class index per row
  std::vector<std::string> paths;   // image per row (may be empty for synthetic data)
  std::vector<std::string> hashes;  // SHA-256 of each image file (may be empty)
  int num_classes = 0;
  std::vector<std::pair<std::string, std::string>> failures;  // unreadable images: path, message
};

struct FeatureCacheOptions {
  // Folder of cached embeddings: <dir>/<model fingerprint>/<sha256 of the file>.f32. Empty: no cache.
  std::string dir;
  int batch_size = 32;
  ProgressFn progress;  // (images done, total)
};
// The default cache folder: $CLIPKIT_HOME, else $XDG_CACHE_HOME/clipkit, else ~/.cache/clipkit,
// followed by /embeddings.
std::string default_embedding_cache_dir();

// Encodes every image of a labelled folder (reusing cached embeddings of identical files).
// Unreadable images go to `failures`.
LabeledFeatures encode_labeled_folder(const Model& model, const LabeledFolder& folder,
                                      const FeatureCacheOptions& options);

// Matches a label list (names, synonyms, own templates) to the classes of a labelled folder by
// display label: returns, for each folder class, the index of its entry in `list`. A folder class
// missing from the list, or a list entry without a folder, is Error(InvalidArgument) naming the
// class and `source`.
std::vector<int> match_label_list(const std::vector<ClassSpec>& folder_classes, const std::vector<ClassSpec>& list,
                                  const std::string& source);

// Rows of `all` picked by `index`, in that order.
LabeledFeatures select_rows(const LabeledFeatures& all, const std::vector<size_t>& index);

// Checks a training set: at least two classes, every class with at least one image (else
// Error(InvalidArgument) naming the class), finite features (else Error(InvalidArgument) naming
// the image or row). `class_names` name the classes in messages.
void check_training_set(const LabeledFeatures& data, const std::vector<std::string>& class_names);

// Draws `shots` rows per class without replacement (seeded); each class's rows keep their order.
// Error(InvalidArgument) naming the class when it holds fewer than `shots`.
std::vector<size_t> draw_shots(const std::vector<int>& labels, int num_classes, int shots, uint64_t seed,
                               const std::vector<std::string>& class_names);

// Seeded stratified split: round(n_c · fraction) rows of each class with at least two rows go to
// validation (at least one, and at least one left for training). true = validation row.
std::vector<bool> seeded_split(const std::vector<int>& labels, int num_classes, double fraction, uint64_t seed);

// ---------------------------------------------------------------------------------------------
// Multinomial logistic regression

struct LogRegOptions {
  double C = 1.0;           // inverse penalty strength, > 0
  int max_iterations = 1000;
  double tolerance = 1e-7;  // on the largest gradient entry of the objective divided by C·N
  // Penalty centre: empty = zero (linear probe); else [C, E], the zs-probe's s·Z.
  const Embeddings* anchor = nullptr;
  bool penalize_bias = false;  // add ½‖b‖² (zs-probe: C → 0 then gives the zero-shot logits exactly)
  // Arithmetic of the objective: Auto = double for small problems (samples × classes × dims up to
  // 4 million), else float products by sgemm with the loss summed in double. A fit in float stops
  // when a step's predicted or actual gain falls below the objective's rounding (1e-8 of it).
  enum class Precision { Auto, Double, Float } precision = Precision::Auto;
};

struct LogRegModel {
  Embeddings weights;       // [C, E]
  std::vector<float> bias;  // [C]
  int iterations = 0;
  bool converged = false;
};

// Minimises ½‖W − A‖² (+ ½‖b‖²) + C·Σᵢ CE(W·xᵢ + b, yᵢ) over W and b (A the anchor or zero) with L-BFGS.
// Two classes are fitted as scikit-learn's binary model (one weight vector, ½‖w‖² + C·Σ log-loss),
// stored as two rows with the same probabilities. `warm` (same shape) starts from a solution.
LogRegModel train_logistic_regression(const Embeddings& x, const std::vector<int>& y, int num_classes,
                                      const LogRegOptions& options, const LogRegModel* warm = nullptr);
// W·x + b for every row: [N, C].
Embeddings logistic_logits(const LogRegModel& m, const Embeddings& x);

struct CSearchResult {
  double C = 1.0;
  double validation_accuracy = 0.0;
  std::vector<std::pair<double, double>> tried;  // (C, validation accuracy) in the order tried
  LogRegModel model;                              // the fit at the chosen C (on `train`)
};
// The CLIP paper's search: C = 1e-6, 1e-4, ..., 1e6, then a binary search in log space around the
// best (each step halves the interval), fitting on `train` and scoring top-1 on `val`. Ties go to
// the smaller C. Fits in the search stop after `options.max_iterations`.
CSearchResult search_C(const LabeledFeatures& train, const LabeledFeatures& val, const LogRegOptions& options,
                       int refinement_steps = 6);

// ---------------------------------------------------------------------------------------------
// Tip-Adapter

// clip_scale·f·Zᵀ + alpha·exp(−beta·(1 − f·Kᵀ))·L for every row of `queries` (normalised rows):
// [N, C]. `zero_shot` [C, E] unit rows, `keys` [M, E], `key_labels` [M].
Embeddings tip_adapter_logits(const Embeddings& zero_shot, const Embeddings& keys, const std::vector<int>& key_labels,
                              float alpha, float beta, float clip_scale, const Embeddings& queries);

struct TipSearchResult {
  float alpha = 1.0f, beta = 1.0f;
  double validation_accuracy = 0.0;
};
// Grid search (the paper's ranges: beta in [0.1, 7), alpha in [0.1, 3)) for top-1 on `val` with
// the cache built from `keys`.
TipSearchResult search_tip_hyperparameters(const Embeddings& zero_shot, const Embeddings& keys,
                                           const std::vector<int>& key_labels, const LabeledFeatures& val,
                                           float clip_scale, int beta_steps = 50, int alpha_steps = 20);

struct TipFinetuneOptions {
  int epochs = 20;             // the paper's defaults
  int batch_size = 256;
  double learning_rate = 1e-3;
  double weight_decay = 0.01;  // AdamW's default
  double adam_eps = 1e-4;
  uint64_t seed = 0;
};
// Tip-Adapter-F: fine-tunes the keys (initialised with `keys`) by AdamW with a cosine learning
// rate over every step, minimising the cross-entropy of the tip logits on `train`. Returns the keys.
Embeddings tip_adapter_finetune(const Embeddings& zero_shot, const Embeddings& keys, const std::vector<int>& key_labels,
                                const LabeledFeatures& train, float alpha, float beta, float clip_scale,
                                const TipFinetuneOptions& options);

// ---------------------------------------------------------------------------------------------
// Training a classifier

struct TrainOptions {
  AdaptMethod method = AdaptMethod::LinearProbe;
  double C = 1.0;              // linear-probe, zs-probe
  bool c_auto = false;         // search C on a validation split
  float alpha = 1.0f, beta = 5.5f;  // tip-adapter (the paper's ImageNet values)
  bool search_alpha_beta = true;    // tip-adapter: search them on a validation split
  double val_fraction = 0.2;   // of each class, for the searches and the reported accuracy
  uint64_t seed = 0;
  int max_iterations = 1000;   // final logistic regression fit
  int search_iterations = 100; // each fit of the C search
  TipFinetuneOptions finetune;
  std::string hyperparameters_extra = "{}";  // JSON object merged into the recorded hyperparameters
  std::string training_set = "{}";           // JSON object recorded as the training set
};

struct TrainReport {
  double C = 0.0;
  float alpha = 0.0f, beta = 0.0f;
  double validation_accuracy = -1.0;  // < 0: no validation split (too few images)
  int64_t validation_images = 0;
  std::vector<std::string> warnings;  // one line each, e.g. "no validation split: ..."
};

// Trains `options.method` on `data` (checked with check_training_set). `zero_shot` is the prompt
// classifier of the same classes (required by zs-probe and the tip adapters; its templates,
// fingerprint, model name and logit scale are recorded; without it `fingerprint`, `logit_scale` and
// `model_name` are). `classes` name the classes. With a search (C auto, alpha/beta) the
// hyperparameters are chosen on a seeded validation split and the final classifier is trained on
// all of `data`.
ZeroShotClassifier train_classifier(const LabeledFeatures& data, const std::vector<ClassSpec>& classes,
                                    const ZeroShotClassifier* zero_shot, const TrainOptions& options,
                                    TrainReport* report = nullptr, const std::string& fingerprint = "",
                                    float logit_scale = 100.0f, const std::string& model_name = "");

// The training set's description recorded in a .clf: {"images": N, "per_class": [...],
// "digest": SHA-256 over the sorted file hashes}.
std::string training_set_json(const LabeledFeatures& data);

}  // namespace clipkit
