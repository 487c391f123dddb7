// ZeroShotClassifier: prompt ensembles, logits/probabilities, .clf files.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numeric>

#include "clipkit/error.h"
#include "core/json_limits.h"
#include "clipkit/zeroshot.h"
#include "io/safetensors.h"

namespace clipkit {

using nlohmann::json;

namespace {
constexpr const char* kClfFormat = "clipkit-classifier";
constexpr int kClfVersion = 1;         // built from prompts
constexpr int kClfTrainedVersion = 2;  // with a trained head (TrainedHead)

void normalize_row(float* r, int64_t dim) {
  double ss = 0.0;
  for (int64_t j = 0; j < dim; ++j) ss += static_cast<double>(r[j]) * r[j];
  if (ss <= 0.0) return;
  const float norm = static_cast<float>(std::sqrt(ss));
  for (int64_t j = 0; j < dim; ++j) r[j] /= norm;
}
}  // namespace

std::vector<float> softmax(const float* logits, size_t n) {
  std::vector<float> out(n);
  if (n == 0) return out;
  const float m = *std::max_element(logits, logits + n);
  double sum = 0.0;
  std::vector<double> e(n);
  for (size_t i = 0; i < n; ++i) {
    e[i] = std::exp(static_cast<double>(logits[i]) - m);
    sum += e[i];
  }
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(e[i] / sum);
  return out;
}

std::vector<int> top_k_indices(const float* values, size_t n, size_t k) {
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  k = std::min(k, n);
  std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), idx.end(), [&](int a, int b) {
    if (values[a] != values[b]) return values[a] > values[b];
    return a < b;
  });
  idx.resize(k);
  return idx;
}

ZeroShotClassifier ZeroShotClassifier::build(const TextEncoder& encoder, const std::vector<ClassSpec>& classes,
                                             const ClassifierOptions& options, const std::string& fingerprint,
                                             float logit_scale) {
  if (classes.empty()) throw Error(ErrorCode::InvalidArgument, "zero-shot classifier: no classes given");
  if (options.templates.empty()) throw Error(ErrorCode::InvalidArgument, "zero-shot classifier: no templates given");
  for (const auto& t : options.templates) check_template(t, "template set");
  std::vector<std::string> prompts;
  std::vector<size_t> begin(classes.size() + 1, 0);
  for (size_t c = 0; c < classes.size(); ++c) {
    if (classes[c].names.empty())
      throw Error(ErrorCode::InvalidArgument, "zero-shot classifier: class " + std::to_string(c) + " has no name");
    for (const auto& t : classes[c].templates) check_template(t, "templates of label '" + classes[c].label() + "'");
    for (auto& p : class_prompts(classes[c], options.templates)) prompts.push_back(std::move(p));
    begin[c + 1] = prompts.size();
  }
  const int64_t total = static_cast<int64_t>(prompts.size());
  const size_t batch = static_cast<size_t>(std::max(1, options.batch_size));
  Embeddings all;
  for (size_t s = 0; s < prompts.size(); s += batch) {
    const size_t e = std::min(prompts.size(), s + batch);
    std::vector<std::string> chunk(prompts.begin() + static_cast<std::ptrdiff_t>(s),
                                   prompts.begin() + static_cast<std::ptrdiff_t>(e));
    Embeddings emb = encoder(chunk);
    if (emb.rows != static_cast<int64_t>(chunk.size()) || emb.dim <= 0 ||
        emb.data.size() != static_cast<size_t>(emb.rows * emb.dim))
      throw Error(ErrorCode::Shape, "zero-shot classifier: text encoder returned " + std::to_string(emb.rows) +
                                        " rows for " + std::to_string(chunk.size()) + " prompts");
    if (all.rows == 0) {
      all = Embeddings(total, emb.dim);
    } else if (emb.dim != all.dim) {
      throw Error(ErrorCode::Shape, "zero-shot classifier: text encoder changed embedding size");
    }
    for (int64_t r = 0; r < emb.rows; ++r) {
      float* dst = all.row(static_cast<int64_t>(s) + r);
      std::copy(emb.row(r), emb.row(r) + emb.dim, dst);
      normalize_row(dst, emb.dim);
    }
    if (options.progress) options.progress(static_cast<int64_t>(e), total);
  }
  Embeddings w(static_cast<int64_t>(classes.size()), all.dim);
  std::vector<double> acc(static_cast<size_t>(all.dim));
  for (size_t c = 0; c < classes.size(); ++c) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (size_t p = begin[c]; p < begin[c + 1]; ++p) {
      const float* r = all.row(static_cast<int64_t>(p));
      for (int64_t j = 0; j < all.dim; ++j) acc[static_cast<size_t>(j)] += r[j];
    }
    const double n = static_cast<double>(begin[c + 1] - begin[c]);
    double ss = 0.0;
    for (auto& v : acc) {
      v /= n;
      ss += v * v;
    }
    const double norm = std::sqrt(ss);
    float* dst = w.row(static_cast<int64_t>(c));
    for (int64_t j = 0; j < all.dim; ++j)
      dst[j] = norm > 0 ? static_cast<float>(acc[static_cast<size_t>(j)] / norm) : 0.0f;
  }
  ZeroShotClassifier clf;
  clf.weights_ = std::move(w);
  clf.classes_ = classes;
  clf.templates_ = options.templates;
  clf.fingerprint_ = fingerprint;
  clf.logit_scale_ = logit_scale;
  return clf;
}

ZeroShotClassifier ZeroShotClassifier::from_embeddings(Embeddings class_embeds, std::vector<ClassSpec> classes,
                                                       std::vector<std::string> templates, std::string fingerprint,
                                                       float logit_scale) {
  if (class_embeds.rows != static_cast<int64_t>(classes.size()) || class_embeds.dim <= 0 ||
      class_embeds.data.size() != static_cast<size_t>(class_embeds.rows * class_embeds.dim))
    throw Error(ErrorCode::Shape, "zero-shot classifier: " + std::to_string(class_embeds.rows) + " class rows for " +
                                      std::to_string(classes.size()) + " classes");
  for (const auto& c : classes)
    if (c.names.empty()) throw Error(ErrorCode::InvalidArgument, "zero-shot classifier: a class has no name");
  ZeroShotClassifier clf;
  class_embeds.normalize();
  clf.weights_ = std::move(class_embeds);
  clf.classes_ = std::move(classes);
  clf.templates_ = std::move(templates);
  clf.fingerprint_ = std::move(fingerprint);
  clf.logit_scale_ = logit_scale;
  return clf;
}

ZeroShotClassifier ZeroShotClassifier::from_trained(Embeddings weights, TrainedHead head, std::vector<ClassSpec> classes,
                                                    std::vector<std::string> templates, std::string fingerprint,
                                                    float logit_scale) {
  if (!head.is_linear() && !head.is_cache())
    throw Error(ErrorCode::InvalidArgument, "trained classifier: unknown method '" + head.method + "'");
  const bool cache = head.is_cache();
  ZeroShotClassifier clf = from_embeddings(Embeddings(weights.rows, weights.dim), std::move(classes),
                                           std::move(templates), std::move(fingerprint), logit_scale);
  if (weights.data.size() != static_cast<size_t>(weights.rows * weights.dim))
    throw Error(ErrorCode::Shape, "trained classifier: malformed class matrix");
  for (float v : weights.data)
    if (!std::isfinite(v)) throw Error(ErrorCode::InvalidArgument, "trained classifier: the class matrix holds a non-finite value");
  if (cache) {
    weights.normalize();
    const Embeddings& k = head.cache_keys;
    if (k.rows <= 0 || k.dim != weights.dim || k.data.size() != static_cast<size_t>(k.rows * k.dim) ||
        head.cache_labels.size() != static_cast<size_t>(k.rows))
      throw Error(ErrorCode::Shape, "trained classifier: cache keys [" + std::to_string(k.rows) + ", " +
                                        std::to_string(k.dim) + "] with " + std::to_string(head.cache_labels.size()) +
                                        " labels do not fit " + std::to_string(weights.dim) + "-dimensional classes");
    for (int l : head.cache_labels)
      if (l < 0 || l >= weights.rows) throw Error(ErrorCode::InvalidArgument, "trained classifier: cache label out of range");
    for (float v : k.data)
      if (!std::isfinite(v)) throw Error(ErrorCode::InvalidArgument, "trained classifier: a cache key holds a non-finite value");
    if (!std::isfinite(head.alpha) || !std::isfinite(head.beta) || !std::isfinite(head.clip_scale))
      throw Error(ErrorCode::InvalidArgument, "trained classifier: alpha, beta and the scale must be finite");
    head.bias.clear();
  } else {
    if (head.bias.size() != static_cast<size_t>(weights.rows))
      throw Error(ErrorCode::Shape, "trained classifier: " + std::to_string(head.bias.size()) + " biases for " +
                                        std::to_string(weights.rows) + " classes");
    for (float v : head.bias)
      if (!std::isfinite(v)) throw Error(ErrorCode::InvalidArgument, "trained classifier: a bias is not finite");
    head.cache_keys = Embeddings();
    head.cache_labels.clear();
  }
  clf.weights_ = std::move(weights);
  clf.head_ = std::move(head);
  return clf;
}

std::vector<std::string> ZeroShotClassifier::labels() const {
  std::vector<std::string> out;
  for (const auto& c : classes_) out.push_back(c.label());
  return out;
}

Embeddings ZeroShotClassifier::logits(const Embeddings& images, float scale) const {
  if (images.dim != weights_.dim)
    throw Error(ErrorCode::Shape, "zero-shot classifier: image embeddings have " + std::to_string(images.dim) +
                                      " dimensions, the classifier " + std::to_string(weights_.dim));
  Embeddings out(images.rows, weights_.rows);
  const bool linear = head_ && head_->is_linear();
  const bool cache = head_ && head_->is_cache();
  const double s = head_ ? (cache ? head_->clip_scale : 1.0) : scale;
  std::vector<float> img(static_cast<size_t>(images.dim));
  std::vector<double> cache_sum(cache ? static_cast<size_t>(weights_.rows) : 0);
  for (int64_t i = 0; i < images.rows; ++i) {
    std::copy(images.row(i), images.row(i) + images.dim, img.begin());
    normalize_row(img.data(), images.dim);
    if (cache) {
      // alpha * exp(-beta * (1 - f·k)) summed per class of the key
      std::fill(cache_sum.begin(), cache_sum.end(), 0.0);
      const Embeddings& keys = head_->cache_keys;
      for (int64_t n = 0; n < keys.rows; ++n) {
        const float* k = keys.row(n);
        double dot = 0.0;
        for (int64_t j = 0; j < images.dim; ++j) dot += static_cast<double>(img[static_cast<size_t>(j)]) * k[j];
        cache_sum[static_cast<size_t>(head_->cache_labels[static_cast<size_t>(n)])] +=
            std::exp(-static_cast<double>(head_->beta) * (1.0 - dot));
      }
    }
    for (int64_t c = 0; c < weights_.rows; ++c) {
      const float* w = weights_.row(c);
      double dot = 0.0;
      for (int64_t j = 0; j < images.dim; ++j) dot += static_cast<double>(img[static_cast<size_t>(j)]) * w[j];
      double v = s * dot;
      if (linear) v += head_->bias[static_cast<size_t>(c)];
      if (cache) v += static_cast<double>(head_->alpha) * cache_sum[static_cast<size_t>(c)];
      out.row(i)[c] = static_cast<float>(v);
    }
  }
  return out;
}

std::vector<Prediction> ZeroShotClassifier::classify(const Embeddings& images, float scale, int top_k) const {
  const Embeddings lg = logits(images, scale);
  std::vector<Prediction> out(static_cast<size_t>(images.rows));
  const size_t c = static_cast<size_t>(weights_.rows);
  for (int64_t i = 0; i < images.rows; ++i) {
    Prediction& p = out[static_cast<size_t>(i)];
    p.logits.assign(lg.row(i), lg.row(i) + c);
    p.probs = softmax(p.logits.data(), c);
    for (int k : top_k_indices(p.logits.data(), c, static_cast<size_t>(std::max(0, top_k))))
      p.top.push_back({k, classes_[static_cast<size_t>(k)].label(), p.logits[static_cast<size_t>(k)],
                       p.probs[static_cast<size_t>(k)]});
  }
  return out;
}

void ZeroShotClassifier::save(const std::string& path) const {
  if (weights_.rows == 0) throw Error(ErrorCode::InvalidArgument, "cannot save an empty classifier to '" + path + "'");
  std::map<std::string, std::string> meta;
  try {
    json classes = json::array();
    for (const auto& c : classes_) classes.push_back({{"names", c.names}, {"templates", c.templates}});
    meta["format"] = kClfFormat;
    meta["version"] = std::to_string(head_ ? kClfTrainedVersion : kClfVersion);
    meta["classes"] = classes.dump();
    meta["templates"] = json(templates_).dump();
    meta["model_fingerprint"] = fingerprint_;
    if (!model_name_.empty()) meta["model_name"] = model_name_;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(logit_scale_));
    meta["logit_scale"] = buf;
    std::vector<std::pair<std::string, Tensor>> tensors;
    tensors.emplace_back("class_embeds", Tensor::from_f32(weights_.data, {weights_.rows, weights_.dim}));
    if (head_) {
      json hp = parse_json_bounded(head_->hyperparameters, "classifier hyperparameters");
      if (!hp.is_object()) throw Error(ErrorCode::InvalidArgument, "classifier hyperparameters must be a JSON object");
      if (head_->is_cache()) {
        hp["alpha"] = head_->alpha;
        hp["beta"] = head_->beta;
        hp["clip_scale"] = head_->clip_scale;
      }
      meta["method"] = head_->method;
      meta["hyperparameters"] = hp.dump();
      meta["training_set"] = parse_json_bounded(head_->training_set, "classifier training set").dump();
      if (head_->is_linear()) {
        tensors.emplace_back("bias", Tensor::from_f32(head_->bias, {weights_.rows}));
      } else {
        const Embeddings& k = head_->cache_keys;
        tensors.emplace_back("cache_keys", Tensor::from_f32(k.data, {k.rows, k.dim}));
        std::vector<uint8_t> bytes(head_->cache_labels.size() * sizeof(int32_t));
        for (size_t i = 0; i < head_->cache_labels.size(); ++i) {
          const int32_t v = head_->cache_labels[i];
          std::memcpy(bytes.data() + i * sizeof v, &v, sizeof v);
        }
        tensors.emplace_back("cache_labels", Tensor::from_bytes(DType::I32, {k.rows}, std::move(bytes)));
      }
    }
    write_safetensors(path, tensors, meta);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::InvalidArgument, "cannot save classifier '" + path + "': labels/templates are not valid UTF-8 (" +
                                                e.what() + ")");
  }
}

ZeroShotClassifier ZeroShotClassifier::load(const std::string& path, const std::string& expected_fingerprint,
                                            const std::string& expected_model) {
  SafetensorsFile f = read_safetensors(path);
  auto bad = [&](const std::string& why) { return Error(ErrorCode::Format, "invalid classifier file '" + path + "': " + why); };
  auto meta = [&](const char* key) -> const std::string& {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) throw bad(std::string("metadata lacks '") + key + "'");
    return it->second;
  };
  if (f.metadata.count("format") == 0 || f.metadata.at("format") != kClfFormat)
    throw bad("not a clipkit classifier (metadata format is not '" + std::string(kClfFormat) + "')");
  const bool trained = meta("version") == std::to_string(kClfTrainedVersion);
  if (meta("version") != std::to_string(kClfVersion) && !trained)
    throw bad("unsupported version " + meta("version") + " (this build reads versions " + std::to_string(kClfVersion) +
              " and " + std::to_string(kClfTrainedVersion) + ")");
  auto it = f.tensors.find("class_embeds");
  if (it == f.tensors.end()) throw bad("no 'class_embeds' tensor");
  const Tensor& t = it->second;
  if (t.dtype != DType::F32 || t.shape.size() != 2 || t.shape[0] <= 0 || t.shape[1] <= 0)
    throw bad("'class_embeds' must be a non-empty 2-D F32 tensor, got " + std::string(dtype_name(t.dtype)) + " " +
              shape_str(t.shape));
  ZeroShotClassifier clf;
  try {
    const json classes = parse_json_bounded(meta("classes"), "classifier '" + path + "' metadata 'classes'");
    if (!classes.is_array()) throw bad("'classes' is not a JSON array");
    for (const auto& c : classes) {
      ClassSpec s;
      s.names = c.at("names").get<std::vector<std::string>>();
      s.templates = c.at("templates").get<std::vector<std::string>>();
      if (s.names.empty()) throw bad("a class without a name");
      clf.classes_.push_back(std::move(s));
    }
    clf.templates_ =
        parse_json_bounded(meta("templates"), "classifier '" + path + "' metadata 'templates'").get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    throw bad(std::string("malformed class metadata: ") + e.what());
  }
  if (static_cast<int64_t>(clf.classes_.size()) != t.shape[0])
    throw bad(std::to_string(clf.classes_.size()) + " labels for " + std::to_string(t.shape[0]) + " class rows");
  clf.fingerprint_ = meta("model_fingerprint");
  if (auto name = f.metadata.find("model_name"); name != f.metadata.end()) clf.model_name_ = name->second;
  try {
    size_t pos = 0;
    clf.logit_scale_ = std::stof(meta("logit_scale"), &pos);
  } catch (const std::exception&) {
    throw bad("malformed logit_scale '" + meta("logit_scale") + "'");
  }
  if (!std::isfinite(clf.logit_scale_)) throw bad("logit_scale '" + meta("logit_scale") + "' is not finite");
  if (!expected_fingerprint.empty() && clf.fingerprint_ != expected_fingerprint) {
    // Files saved before model names were recorded name the fingerprint alone.
    const std::string built_fp = clf.fingerprint_.empty() ? std::string("(none)") : clf.fingerprint_;
    const std::string built = clf.model_name_.empty() ? "model fingerprint " + built_fp
                                                      : "model " + clf.model_name_ + " (fingerprint " + built_fp + ")";
    const std::string loaded = expected_model.empty() ? "has fingerprint " + expected_fingerprint
                                                      : "is " + expected_model + " (fingerprint " + expected_fingerprint + ")";
    throw Error(ErrorCode::Mismatch, "classifier '" + path + "' was built for " + built + " but the loaded model " + loaded);
  }
  clf.weights_ = Embeddings(t.shape[0], t.shape[1]);
  clf.weights_.data = t.to_f32();
  for (float v : clf.weights_.data)
    if (!std::isfinite(v)) throw bad("'class_embeds' holds a non-finite value");
  if (!trained) return clf;

  TrainedHead head;
  head.method = meta("method");
  if (!head.is_linear() && !head.is_cache()) throw bad("unknown method '" + head.method + "'");
  auto tensor = [&](const char* name, size_t dims) -> const Tensor& {
    auto ti = f.tensors.find(name);
    if (ti == f.tensors.end()) throw bad(std::string("no '") + name + "' tensor for method " + head.method);
    if (!ti->second.is_float() && ti->second.dtype != DType::I32)
      throw bad(std::string("'") + name + "' has dtype " + dtype_name(ti->second.dtype));
    if (ti->second.shape.size() != dims) throw bad(std::string("'") + name + "' has shape " + shape_str(ti->second.shape));
    return ti->second;
  };
  try {
    const json hp = parse_json_bounded(meta("hyperparameters"), "classifier '" + path + "' metadata 'hyperparameters'");
    const json ts = parse_json_bounded(meta("training_set"), "classifier '" + path + "' metadata 'training_set'");
    if (!hp.is_object() || !ts.is_object()) throw bad("'hyperparameters' and 'training_set' must be JSON objects");
    head.hyperparameters = hp.dump();
    head.training_set = ts.dump();
    if (head.is_cache()) {
      head.alpha = hp.at("alpha").get<float>();
      head.beta = hp.at("beta").get<float>();
      head.clip_scale = hp.at("clip_scale").get<float>();
    }
  } catch (const json::exception& e) {
    throw bad(std::string("malformed hyperparameters: ") + e.what());
  }
  if (head.is_linear()) {
    const Tensor& b = tensor("bias", 1);
    if (b.shape[0] != t.shape[0]) throw bad("'bias' has " + std::to_string(b.shape[0]) + " values for " +
                                            std::to_string(t.shape[0]) + " classes");
    head.bias = b.to_f32();
  } else {
    const Tensor& k = tensor("cache_keys", 2);
    const Tensor& l = tensor("cache_labels", 1);
    if (k.shape[1] != t.shape[1] || l.shape[0] != k.shape[0])
      throw bad("cache tensors " + shape_str(k.shape) + " and " + shape_str(l.shape) + " do not fit the classes " +
                shape_str(t.shape));
    head.cache_keys = Embeddings(k.shape[0], k.shape[1]);
    head.cache_keys.data = k.to_f32();
    for (float v : l.to_f32()) {
      if (!(v >= 0.0f && v < static_cast<float>(t.shape[0])) || v != std::floor(v))
        throw bad("'cache_labels' holds a value that is not a class index");
      head.cache_labels.push_back(static_cast<int>(v));
    }
  }
  try {
    Embeddings w = std::move(clf.weights_);
    ZeroShotClassifier out = from_trained(std::move(w), std::move(head), std::move(clf.classes_),
                                          std::move(clf.templates_), std::move(clf.fingerprint_), clf.logit_scale_);
    out.model_name_ = std::move(clf.model_name_);
    return out;
  } catch (const Error& e) {
    throw bad(e.what());
  }
}

}  // namespace clipkit
