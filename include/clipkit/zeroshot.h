// clipkit/zeroshot.h — zero-shot classification with prompt ensembles, and prompt evaluation.
//
//   auto model = clipkit::Model::load("ViT-B-32.pt");
//   auto classes = clipkit::parse_label_list("cat,dog,bird");
//   clipkit::ClassifierOptions opt;
//   opt.templates = clipkit::resolve_templates("imagenet80");      // built-in set or a file
//   auto clf = clipkit::ZeroShotClassifier::build(*model, classes, opt);
//   auto img = model->encode_image_files({"cat.jpg"}, /*normalize=*/true);
//   auto preds = clf.classify(img, model->logit_scale(), /*top_k=*/3);
//   clf.save("animals.clf");                                        // reload with ::load
//
// Classifier rows follow the reference notebook (zeroshot_classifier): for each class every
// template is filled with every name of the class, each prompt is encoded and L2-normalised,
// the prompts are averaged and the mean is L2-normalised again.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "clipkit/embeddings.h"

namespace clipkit {

class Model;

// ---------------------------------------------------------------------------------------------
// Templates

// Fills a template with Python str.format semantics for one positional argument: "{}" and "{0}"
// become `label`, "{{" and "}}" literal braces. Throws Error(InvalidArgument) for anything else
// (a lone brace, a named or second field, a format spec); `source` names the template's origin.
std::string fill_template(std::string_view tmpl, std::string_view label, const std::string& source = "template");
// Throws Error(InvalidArgument) unless the template has exactly one "{}"/"{0}" field.
void check_template(std::string_view tmpl, const std::string& source = "template");

// Names of the built-in template sets: none, photo, imagenet80, imagenet7, patterns and one per
// dataset of the CLIP paper's prompt list (cifar10, food101, stanford_cars, ...).
std::vector<std::string> builtin_template_set_names();
bool is_builtin_template_set(const std::string& name);
// Throws Error(NotFound) listing the known names.
std::vector<std::string> builtin_template_set(const std::string& name);
// Template file: one template per line, blank lines and lines starting with '#' skipped.
// A line without a "{}" field is Error(Format) naming the file and the line.
std::vector<std::string> parse_template_text(std::string_view text, const std::string& source);
std::vector<std::string> read_template_file(const std::string& path);
// A built-in set name (case-insensitive), else a template file path.
std::vector<std::string> resolve_templates(const std::string& name_or_file);

// ---------------------------------------------------------------------------------------------
// Labels

// One class: one or more names (synonyms, all averaged into one row) and optionally its own
// templates (empty = the classifier's default templates). The first name is the display label.
struct ClassSpec {
  std::vector<std::string> names;
  std::vector<std::string> templates;
  const std::string& label() const { return names.front(); }
};

// Names of the built-in label sets: imagenet1000, patterns and one per dataset (cifar10, ...;
// fer2013's classes are synonym lists).
std::vector<std::string> builtin_label_set_names();
std::vector<ClassSpec> builtin_label_set(const std::string& name);  // Error(NotFound)
// Default templates that go with a built-in label set (the dataset's own; imagenet80 for
// imagenet1000, the domain templates for patterns).
std::vector<std::string> builtin_label_set_templates(const std::string& name);
// "cat,dog|puppy,bird": comma-separated classes, '|' separates synonyms of one class.
std::vector<ClassSpec> parse_label_list(std::string_view text);
// Label file. Text: one class per line, synonyms separated by '|', blank lines and '#' comments
// skipped. JSON (.json or content starting with '[' / '{'): an array whose items are a name, an
// array of synonyms, or {"names": [...] | "name": "...", "templates": [...]}; or an object
// {label: [templates]} giving per-label templates. Errors name the file and line/item.
std::vector<ClassSpec> parse_label_text(std::string_view text, const std::string& source);
std::vector<ClassSpec> read_label_file(const std::string& path);

// ---------------------------------------------------------------------------------------------
// Classifier

// Encodes a batch of prompts into rows (normalised or not; the classifier normalises).
using TextEncoder = std::function<Embeddings(const std::vector<std::string>& prompts)>;
// Called after each encoded batch with (prompts done, prompts total).
using ProgressFn = std::function<void(int64_t done, int64_t total)>;

struct ClassifierOptions {
  std::vector<std::string> templates = {"a photo of a {}."};  // default for classes without their own
  int batch_size = 256;                                        // prompts per encode call
  ProgressFn progress;
};

struct ScoredLabel {
  int index = 0;       // class index
  std::string label;   // display label
  float score = 0.0f;  // scale * cosine
  float prob = 0.0f;   // softmax over all classes
};

struct Prediction {
  std::vector<ScoredLabel> top;  // best first (ties: lower class index first)
  std::vector<float> logits;     // all classes
  std::vector<float> probs;      // all classes
};

// Numerically stable softmax (max subtracted, accumulated in double).
std::vector<float> softmax(const float* logits, size_t n);
// Indices of the k largest values, largest first; ties go to the lower index.
std::vector<int> top_k_indices(const float* values, size_t n, size_t k);

// The part of a classifier trained on labelled images (clipkit/adapt.h) rather than built from
// prompts alone. Such classifiers share ZeroShotClassifier and its .clf files, so every tool that
// reads a classifier reads them too. Their logits do not use the caller's scale:
//   linear heads (linear-probe, zs-probe): logits = W·f + b, W the class matrix as trained;
//   cache heads (tip-adapter, tip-adapter-f):
//     logits = clip_scale·f·Wᵀ + alpha·exp(−beta·(1 − f·Kᵀ))·L,
//   W the zero-shot class matrix, K the cache keys, L the one-hot labels of the keys;
// f is the L2-normalised image embedding.
struct TrainedHead {
  std::string method;                  // "linear-probe", "zs-probe", "tip-adapter" or "tip-adapter-f"
  std::vector<float> bias;             // linear heads: one per class
  Embeddings cache_keys;               // cache heads: [N, E]
  std::vector<int> cache_labels;       // cache heads: the class of each key
  float alpha = 0.0f, beta = 0.0f, clip_scale = 100.0f;  // cache heads
  std::string hyperparameters = "{}";  // JSON object recorded in the file (C, alpha, beta, seed, ...)
  std::string training_set = "{}";     // JSON object recorded in the file (images, per class, digest)
  bool is_linear() const { return method == "linear-probe" || method == "zs-probe"; }
  bool is_cache() const { return method == "tip-adapter" || method == "tip-adapter-f"; }
};

class ZeroShotClassifier {
 public:
  ZeroShotClassifier() = default;

  // Encodes every prompt with `model` (Model::encode_texts, in batches).
  static ZeroShotClassifier build(const Model& model, const std::vector<ClassSpec>& classes,
                                  const ClassifierOptions& options = {});
  // Same with any text encoder; `fingerprint`/`logit_scale` are recorded as the model's.
  static ZeroShotClassifier build(const TextEncoder& encoder, const std::vector<ClassSpec>& classes,
                                  const ClassifierOptions& options, const std::string& fingerprint,
                                  float logit_scale);
  // From ready class rows [C, E] (normalised here).
  static ZeroShotClassifier from_embeddings(Embeddings class_embeds, std::vector<ClassSpec> classes,
                                            std::vector<std::string> templates, std::string fingerprint,
                                            float logit_scale);

  // A trained classifier. Linear heads: `weights` [C, E] as trained (kept as they are) and
  // head.bias [C]. Cache heads: `weights` the zero-shot class rows (normalised here), head.cache_keys
  // [N, E] and head.cache_labels [N] (each in [0, C)). Error(Shape)/Error(InvalidArgument) otherwise.
  static ZeroShotClassifier from_trained(Embeddings weights, TrainedHead head, std::vector<ClassSpec> classes,
                                         std::vector<std::string> templates, std::string fingerprint,
                                         float logit_scale);

  // "zero-shot" for a classifier built from prompts, else the trained head's method.
  std::string method() const { return head_ ? head_->method : std::string("zero-shot"); }
  const TrainedHead* trained_head() const { return head_ ? &*head_ : nullptr; }

  int64_t num_classes() const { return weights_.rows; }
  int64_t dim() const { return weights_.dim; }
  const Embeddings& class_embeddings() const { return weights_; }  // [C, E], unit rows
  const std::vector<ClassSpec>& classes() const { return classes_; }
  std::vector<std::string> labels() const;
  const std::vector<std::string>& templates() const { return templates_; }  // default templates
  const std::string& model_fingerprint() const { return fingerprint_; }
  // The model's name as the user gave it (model_name_of), recorded so that a refusal can name it;
  // empty for a classifier saved before names were recorded, or built from a bare text encoder.
  const std::string& model_name() const { return model_name_; }
  void set_model_name(std::string name) { model_name_ = std::move(name); }
  float model_logit_scale() const { return logit_scale_; }

  // scale * normalise(image) · class for every image row: [N, C]; a trained classifier applies its
  // own head (TrainedHead) and ignores `scale`. Throws Error(Shape) on a dimension mismatch.
  Embeddings logits(const Embeddings& images, float scale) const;
  // Logits, softmax probabilities and the top-k (k clamped to the class count) per image.
  std::vector<Prediction> classify(const Embeddings& images, float scale, int top_k = 5) const;

  // .clf: a safetensors file with the class matrix and, in its metadata, the format version,
  // classes (names + templates), default templates, model fingerprint and logit scale. A trained
  // classifier is format version 2: its method, hyperparameters and training set in the metadata,
  // tensors 'bias' or 'cache_keys' and 'cache_labels' beside 'class_embeds'.
  void save(const std::string& path) const;
  // Error(Format) for a corrupt/truncated/foreign file. With a non-empty expected_fingerprint a
  // classifier built for another model is Error(Mismatch) naming both models (the recorded name,
  // where the file has one, and `expected_model`, where given) and both fingerprints.
  static ZeroShotClassifier load(const std::string& path, const std::string& expected_fingerprint = "",
                                 const std::string& expected_model = "");
  // The same, checked against `model` (its fingerprint and model_name_of).
  static ZeroShotClassifier load(const std::string& path, const Model& model);

 private:
  Embeddings weights_;
  std::vector<ClassSpec> classes_;
  std::vector<std::string> templates_;
  std::string fingerprint_;
  std::string model_name_;
  float logit_scale_ = 0.0f;
  std::optional<TrainedHead> head_;
};

// The prompts of one class: every template (the class's own or `default_templates`) filled with
// every name, in template-major order for each name (name 0: t0..tK, name 1: t0..tK, ...).
std::vector<std::string> class_prompts(const ClassSpec& cls, const std::vector<std::string>& default_templates);

// ---------------------------------------------------------------------------------------------
// Images and labelled folders

// Files with an image extension (jpg, jpeg, png, webp, bmp, gif; any case). Directories are walked
// recursively in sorted order; files given explicitly are kept whatever their extension.
// A path that does not exist is Error(NotFound).
std::vector<std::string> list_image_files(const std::vector<std::string>& paths);

struct EncodedImages {
  std::vector<std::string> paths;  // those that worked, in input order
  Embeddings embeddings;           // one normalised row per path
  std::vector<std::pair<std::string, std::string>> failures;  // path, error message
};
// Decodes, preprocesses and encodes images in batches, decoding the next batches while the model
// runs; unreadable files are collected in `failures`, not thrown. `progress` is called with
// (images done, total) for each image, once its batch is encoded; decode_threads 0 chooses one per core;
// fast_decode decodes large JPEGs at a reduced size first (ingest_decode_options, src/model/ingest.h).
EncodedImages encode_image_paths(const Model& model, const std::vector<std::string>& paths, int batch_size = 32,
                                 const ProgressFn& progress = {}, int decode_threads = 0, bool fast_decode = false);

// A folder of class folders (folder name = label, unless DIR/labels.json maps folder → label
// text or a list of synonyms). Classes are the folders in sorted order.
struct LabeledFolder {
  std::vector<std::string> folders;  // class folder names
  std::vector<ClassSpec> classes;    // one per folder
  std::vector<std::string> images;   // image paths
  std::vector<int> truth;            // class index per image
};
LabeledFolder read_labeled_folder(const std::string& dir);

// ---------------------------------------------------------------------------------------------
// Evaluation

struct EvalResult {
  std::string strategy;
  int64_t n = 0;
  double top1 = 0.0;                  // fraction
  double top5 = 0.0;                  // top-min(5, C)
  double mean_per_class = 0.0;        // mean over classes that have images
  std::vector<double> per_class;      // accuracy per class (NaN-free: 0 when a class has no images)
  std::vector<int64_t> class_counts;  // images per class
  std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
  std::vector<int> predictions;       // top-1 class per image
  std::vector<float> top1_probs;      // softmax probability of that class per image
};
// Scores normalised image rows against a classifier; truth[i] is image i's class index.
EvalResult evaluate(const ZeroShotClassifier& clf, const Embeddings& images, const std::vector<int>& truth,
                    float scale = 100.0f);
EvalResult evaluate_logits(const Embeddings& logits, const std::vector<int>& truth);

// Deterministic split stratified by class: within each class, images keep their order after a
// fixed pseudo-random shuffle; round(n_c * (1 - holdout)) go to the selection split (at least one
// image each side when the class has two or more). Returns true for selection-split images.
std::vector<bool> stratified_split(const std::vector<int>& truth, int num_classes, double holdout);

struct SelectionStep {
  std::string template_text;
  int template_index = 0;     // index in the pool
  double selection_top1 = 0;  // after adding this template
  double heldout_top1 = 0;
};
struct SelectionResult {
  std::vector<SelectionStep> steps;
  int64_t selection_images = 0, heldout_images = 0;
};
// Sequential forward selection: starting empty, repeatedly add the pool template that maximises
// top-1 accuracy on the selection split (ties: higher mean log-probability of the true class at
// `scale`, then the earlier template), up to `max_templates`. Held-out accuracy is reported after
// each addition. `encoder` encodes prompts; images are normalised rows.
SelectionResult select_templates(const TextEncoder& encoder, const std::vector<ClassSpec>& classes,
                                 const std::vector<std::string>& pool, const Embeddings& images,
                                 const std::vector<int>& truth, const std::vector<bool>& in_selection,
                                 int max_templates, float scale = 100.0f, const ProgressFn& progress = {});

// The model as its user named it, for classifiers and messages: the name or path given to
// Model::load (ModelInfo::name, else its path), followed by " with text model T" for a pair.
std::string model_name_of(const Model& model);

// A TextEncoder that uses model.encode_texts.
TextEncoder model_text_encoder(const Model& model);
// The same, encoding each distinct prompt once: later calls reuse what earlier ones encoded (prompt
// strategies and template selection share many prompts). The encoder holds its cache; it is not
// for use from several threads at once.
TextEncoder caching_text_encoder(const Model& model);

// The class index of each encoded image of a labelled folder, in the order of `encoded.paths`.
std::vector<int> encoded_truth(const LabeledFolder& folder, const EncodedImages& encoded);

}  // namespace clipkit
