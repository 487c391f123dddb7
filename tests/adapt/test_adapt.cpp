// Few-shot training: the linear probe against scikit-learn (tests/data/adapt/gen_fixtures.py),
// Tip-Adapter logits against the formula, trained .clf files, seeds and bad training sets.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "clipkit/adapt.h"
#include "clipkit/error.h"
#include "core/mapped_file.h"
#include "core/npy.h"
#include "io/safetensors.h"
#include "kernels/gemm.h"
#include "support/test_support.h"

using namespace clipkit;
using clipkit::test::data_path;
using clipkit::test::temp_dir;

namespace {

Embeddings load_rows(const std::string& name) {
  const Tensor t = read_npy(data_path("adapt/" + name));
  Embeddings e(t.shape[0], t.shape.size() > 1 ? t.shape[1] : 1);
  e.data = t.to_f32();
  return e;
}

std::vector<int> load_ints(const std::string& name) {
  std::vector<int> out;
  for (float v : read_npy(data_path("adapt/" + name)).to_f32()) out.push_back(static_cast<int>(v));
  return out;
}

// f64 reference arrays: to_f32 would round them, so read the doubles.
std::vector<double> load_f64(const std::string& name) {
  const Tensor t = read_npy(data_path("adapt/" + name));
  EXPECT_EQ(t.dtype, DType::F64);
  const double* p = static_cast<const double*>(t.data);
  return std::vector<double>(p, p + t.numel());
}

nlohmann::json fixture_meta() {
  return nlohmann::json::parse(read_file(data_path("adapt/fixtures.json")));
}

LabeledFeatures features_of(const Embeddings& x, const std::vector<int>& y, int classes) {
  LabeledFeatures f;
  f.features = x;
  f.labels = y;
  f.num_classes = classes;
  return f;
}

std::vector<ClassSpec> class_specs(int n) {
  std::vector<ClassSpec> out;
  for (int c = 0; c < n; ++c) out.push_back({{"class" + std::to_string(c)}, {}});
  return out;
}

void expect_matches_sklearn(const std::string& name,
                            LogRegOptions::Precision precision = LogRegOptions::Precision::Auto) {
  const auto meta = fixture_meta()[name];
  const Embeddings xtr = load_rows(name + "_train_x.npy"), xte = load_rows(name + "_test_x.npy");
  const std::vector<int> ytr = load_ints(name + "_train_y.npy");
  const int classes = meta["classes"].get<int>();
  const auto cs = meta["C"].get<std::vector<double>>();
  for (size_t i = 0; i < cs.size(); ++i) {
    SCOPED_TRACE(name + " C=" + std::to_string(cs[i]));
    LogRegOptions o;
    o.C = cs[i];
    o.precision = precision;
    const LogRegModel m = train_logistic_regression(xtr, ytr, classes, o);
    EXPECT_TRUE(m.converged);
    const std::vector<double> ref = load_f64(name + "_C" + std::to_string(i) + "_proba.npy");
    const std::vector<int> pred = load_ints(name + "_C" + std::to_string(i) + "_pred.npy");
    const Embeddings lg = logistic_logits(m, xte);
    ASSERT_EQ(lg.rows * classes, static_cast<int64_t>(ref.size()));
    double worst = 0.0;
    for (int64_t r = 0; r < lg.rows; ++r) {
      const std::vector<float> p = softmax(lg.row(r), static_cast<size_t>(classes));
      for (int c = 0; c < classes; ++c) worst = std::max(worst, std::fabs(p[static_cast<size_t>(c)] - ref[static_cast<size_t>(r * classes + c)]));
      EXPECT_EQ(top_k_indices(lg.row(r), static_cast<size_t>(classes), 1)[0], pred[static_cast<size_t>(r)]) << "row " << r;
    }
    EXPECT_LT(worst, 1e-4);
    // the same numbers through a saved and reloaded classifier
    TrainOptions to;
    to.C = cs[i];
    const auto clf = train_classifier(features_of(xtr, ytr, classes), class_specs(classes), nullptr, to, nullptr, "fp");
    const std::string path = temp_dir() + "/probe.clf";
    clf.save(path);
    const auto back = ZeroShotClassifier::load(path, "fp");
    EXPECT_EQ(back.method(), "linear-probe");
    const auto preds = back.classify(xte, 55.0f /* ignored by a trained head */, 1);
    for (size_t r = 0; r < preds.size(); ++r) {
      EXPECT_EQ(preds[r].top[0].index, pred[r]);
      for (int c = 0; c < classes; ++c) EXPECT_NEAR(preds[r].probs[static_cast<size_t>(c)], ref[r * classes + static_cast<size_t>(c)], 1e-4);
    }
  }
}

}  // namespace

TEST(LinearProbe, MatchesScikitLearnMultinomial) { expect_matches_sklearn("multi"); }
TEST(LinearProbe, MatchesScikitLearnBinary) { expect_matches_sklearn("binary"); }
// The float path that large problems take (sgemm products, vectorised softmax, noise-aware stops).
// One thread: these products are far too small for threads to pay (a loaded machine makes every
// parallel region of a few microseconds wait milliseconds).
TEST(LinearProbe, MatchesScikitLearnInFloat) {
  const int threads = num_threads();
  set_num_threads(1);
  expect_matches_sklearn("multi", LogRegOptions::Precision::Float);
  expect_matches_sklearn("binary", LogRegOptions::Precision::Float);
  // zs-probe's objective (anchor, penalised bias): the float path finds the double path's optimum,
  // to the float rounding of logits this large (the anchor is 20 × unit rows)
  const Embeddings x = load_rows("multi_train_x.npy"), xte = load_rows("multi_test_x.npy");
  const std::vector<int> y = load_ints("multi_train_y.npy");
  Embeddings anchor = xte;
  anchor.rows = 5;
  anchor.data.resize(static_cast<size_t>(5 * anchor.dim));
  for (float& v : anchor.data) v *= 20.0f;
  LogRegOptions o;
  o.C = 10.0;
  o.anchor = &anchor;
  o.penalize_bias = true;
  o.precision = LogRegOptions::Precision::Double;
  const Embeddings ref = logistic_logits(train_logistic_regression(x, y, 5, o), xte);
  o.precision = LogRegOptions::Precision::Float;
  const LogRegModel m = train_logistic_regression(x, y, 5, o);
  EXPECT_TRUE(m.converged);
  const Embeddings lg = logistic_logits(m, xte);
  for (int64_t r = 0; r < lg.rows; ++r) {
    const std::vector<float> p = softmax(lg.row(r), 5), q = softmax(ref.row(r), 5);
    for (size_t c = 0; c < 5; ++c) EXPECT_NEAR(p[c], q[c], 2e-4) << "row " << r;
    EXPECT_EQ(top_k_indices(lg.row(r), 5, 1)[0], top_k_indices(ref.row(r), 5, 1)[0]) << "row " << r;
  }
  set_num_threads(threads);
}

TEST(LinearProbe, ZsProbeWithTinyCIsZeroShot) {
  const Embeddings x = load_rows("multi_train_x.npy");
  const std::vector<int> y = load_ints("multi_train_y.npy");
  Embeddings z = load_rows("multi_test_x.npy");  // any unit rows stand for a zero-shot matrix
  z.rows = 5;
  z.data.resize(static_cast<size_t>(5 * z.dim));
  const auto zs = ZeroShotClassifier::from_embeddings(z, class_specs(5), {"a {}."}, "fp", 20.0f);
  TrainOptions o;
  o.method = AdaptMethod::ZsProbe;
  o.C = 1e-9;
  const auto clf = train_classifier(features_of(x, y, 5), class_specs(5), &zs, o);
  const Embeddings a = zs.logits(x, 20.0f), b = clf.logits(x, 0.0f);
  for (size_t i = 0; i < a.data.size(); ++i) EXPECT_NEAR(a.data[i], b.data[i], 1e-3);
  // a large C moves away from the anchor and fits the training set better
  o.C = 100.0;
  const auto fit = train_classifier(features_of(x, y, 5), class_specs(5), &zs, o);
  const auto preds = fit.classify(x, 0.0f, 1);
  int hits = 0;
  for (size_t i = 0; i < preds.size(); ++i) hits += preds[i].top[0].index == y[i];
  EXPECT_GE(hits, 55);
}

TEST(TipAdapter, HandCheckedLogits) {
  // Two classes in 2-D: Z = identity, one key per class.
  Embeddings z(2, 2), keys(2, 2), q(1, 2);
  z.data = {1, 0, 0, 1};
  keys.data = {1, 0, 0, 1};
  q.data = {0.6f, 0.8f};
  const Embeddings lg = tip_adapter_logits(z, keys, {0, 1}, 2.0f, 3.0f, 100.0f, q);
  // class 0: 100·0.6 + 2·exp(−3·(1 − 0.6)); class 1: 100·0.8 + 2·exp(−3·(1 − 0.8))
  EXPECT_NEAR(lg.data[0], 60.0 + 2.0 * std::exp(-1.2), 1e-4);
  EXPECT_NEAR(lg.data[1], 80.0 + 2.0 * std::exp(-0.6), 1e-4);
  // two keys of class 1 add up
  Embeddings keys3(3, 2);
  keys3.data = {1, 0, 0, 1, 0.6f, 0.8f};
  const Embeddings lg3 = tip_adapter_logits(z, keys3, {0, 1, 1}, 2.0f, 3.0f, 100.0f, q);
  EXPECT_NEAR(lg3.data[1], 80.0 + 2.0 * std::exp(-0.6) + 2.0, 1e-4);
}

TEST(TipAdapter, MatchesStoredFixtureThroughAClfFile) {
  const auto meta = fixture_meta()["tip"];
  const Embeddings z = load_rows("tip_class_w.npy"), keys = load_rows("tip_keys.npy"), q = load_rows("tip_queries.npy");
  const std::vector<int> labels = load_ints("tip_labels.npy");
  const std::vector<double> ref = load_f64("tip_logits.npy");
  const float alpha = meta["alpha"].get<float>(), beta = meta["beta"].get<float>(), scale = meta["scale"].get<float>();
  const Embeddings lg = tip_adapter_logits(z, keys, labels, alpha, beta, scale, q);
  ASSERT_EQ(lg.data.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(lg.data[i], ref[i], 2e-4 * std::max(1.0, std::fabs(ref[i])));
  TrainedHead head;
  head.method = "tip-adapter";
  head.cache_keys = keys;
  head.cache_labels = labels;
  head.alpha = alpha;
  head.beta = beta;
  head.clip_scale = scale;
  const auto clf = ZeroShotClassifier::from_trained(z, head, class_specs(4), {"a {}."}, "fp", 30.0f);
  const std::string path = temp_dir() + "/tip.clf";
  clf.save(path);
  const auto back = ZeroShotClassifier::load(path);
  EXPECT_EQ(back.method(), "tip-adapter");
  const Embeddings lg2 = back.logits(q, 1.0f);
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(lg2.data[i], ref[i], 2e-4 * std::max(1.0, std::fabs(ref[i])));
}

TEST(TipAdapter, SearchAndFinetuneAreSeededAndHelp) {
  const Embeddings x = load_rows("multi_train_x.npy");
  const std::vector<int> y = load_ints("multi_train_y.npy");
  Embeddings z = load_rows("multi_test_x.npy");
  z.rows = 5;
  z.data.resize(static_cast<size_t>(5 * z.dim));
  const auto zs = ZeroShotClassifier::from_embeddings(z, class_specs(5), {"a {}."}, "fp", 20.0f);
  TrainOptions o;
  o.method = AdaptMethod::TipAdapterF;
  o.seed = 7;
  o.finetune.epochs = 5;
  TrainReport r1, r2;
  const auto a = train_classifier(features_of(x, y, 5), class_specs(5), &zs, o, &r1);
  const auto b = train_classifier(features_of(x, y, 5), class_specs(5), &zs, o, &r2);
  EXPECT_EQ(a.trained_head()->cache_keys.data, b.trained_head()->cache_keys.data);
  EXPECT_EQ(r1.alpha, r2.alpha);
  EXPECT_GT(r1.validation_images, 0);
  EXPECT_GE(r1.validation_accuracy, 0.0);
  EXPECT_NE(a.trained_head()->cache_keys.data, x.data);  // the keys moved
}

TEST(LinearProbe, CAutoSearchesTheGridThenRefines) {
  const Embeddings x = load_rows("multi_train_x.npy");
  const std::vector<int> y = load_ints("multi_train_y.npy");
  TrainOptions o;
  o.c_auto = true;
  o.seed = 3;
  TrainReport r;
  const auto clf = train_classifier(features_of(x, y, 5), class_specs(5), nullptr, o, &r);
  EXPECT_GE(r.C, 1e-6);
  EXPECT_LE(r.C, 1e6);
  EXPECT_GT(r.validation_accuracy, 0.5);
  const auto hp = nlohmann::json::parse(clf.trained_head()->hyperparameters);
  EXPECT_GE(hp["c_search"].size(), 7u);
  EXPECT_EQ(hp["C"].get<double>(), r.C);
}

TEST(TrainingSet, BadInputsNameTheClass) {
  const Embeddings x = load_rows("multi_train_x.npy");
  std::vector<int> y = load_ints("multi_train_y.npy");
  auto names = class_specs(5);
  names[3].names = {"plaid"};
  auto expect_error = [&](const LabeledFeatures& f, const std::string& needle) {
    try {
      train_classifier(f, std::vector<ClassSpec>(names.begin(), names.begin() + f.num_classes), nullptr, TrainOptions{});
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  };
  // a class without images
  std::vector<int> y_missing = y;
  for (int& v : y_missing)
    if (v == 3) v = 2;
  expect_error(features_of(x, y_missing, 5), "'plaid' has no readable image");
  // a single class
  expect_error(features_of(x, std::vector<int>(y.size(), 0), 1), "at least two classes");
  // NaN in one row of class 3
  Embeddings bad = x;
  for (size_t i = 0; i < y.size(); ++i)
    if (y[i] == 3) {
      bad.row(static_cast<int64_t>(i))[2] = std::nanf("");
      break;
    }
  expect_error(features_of(bad, y, 5), "(class 'plaid') hold NaN or infinity");
  // one image
  Embeddings one(1, x.dim);
  std::copy(x.row(0), x.row(0) + x.dim, one.row(0));
  expect_error(features_of(one, {0}, 2), "1 image(s)");
  // more shots than a class holds
  try {
    draw_shots(y_missing, 5, 1, 0, {"a", "b", "c", "plaid", "e"});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("class 'plaid' has only 0"), std::string::npos) << e.what();
  }
}

TEST(TrainingSet, ShotsAndSplitsAreSeeded) {
  const std::vector<int> y = load_ints("multi_train_y.npy");
  const auto a = draw_shots(y, 5, 4, 11, {}), b = draw_shots(y, 5, 4, 11, {}), c = draw_shots(y, 5, 4, 12, {});
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  ASSERT_EQ(a.size(), 20u);
  std::vector<int> per(5, 0);
  for (size_t i : a) per[static_cast<size_t>(y[i])]++;
  for (int p : per) EXPECT_EQ(p, 4);
  const auto s1 = seeded_split(y, 5, 0.25, 1), s2 = seeded_split(y, 5, 0.25, 1);
  EXPECT_EQ(s1, s2);
  std::vector<int> val(5, 0);
  for (size_t i = 0; i < y.size(); ++i) val[static_cast<size_t>(y[i])] += s1[i];
  for (int v : val) EXPECT_EQ(v, 3);  // round(12 · 0.25)
}

namespace {

ErrorCode code_of(const std::function<void()>& f, std::string* msg) {
  try {
    f();
  } catch (const Error& e) {
    *msg = e.what();
    return e.code();
  }
  *msg = "";
  return ErrorCode::Internal;
}

TrainedHead tip_head(const Embeddings& keys, const std::vector<int>& labels) {
  TrainedHead head;
  head.method = "tip-adapter";
  head.cache_keys = keys;
  head.cache_labels = labels;
  head.alpha = 1.0f;
  head.beta = 5.5f;
  head.clip_scale = 100.0f;
  return head;
}

}  // namespace

TEST(TrainedClassifier, InconsistentHeadsAreRefused) {
  const Embeddings z = load_rows("tip_class_w.npy"), keys = load_rows("tip_keys.npy");
  const std::vector<int> labels = load_ints("tip_labels.npy");
  std::string msg;
  auto build = [&](const TrainedHead& h) { ZeroShotClassifier::from_trained(z, h, class_specs(4), {"a {}."}, "fp", 30.0f); };
  TrainedHead h = tip_head(keys, labels);
  h.method = "svm";
  EXPECT_EQ(code_of([&] { build(h); }, &msg), ErrorCode::InvalidArgument);
  EXPECT_EQ(msg, "trained classifier: unknown method 'svm'");
  h = tip_head(keys, labels);
  h.cache_labels.pop_back();
  EXPECT_EQ(code_of([&] { build(h); }, &msg), ErrorCode::Shape);
  EXPECT_NE(msg.find("with " + std::to_string(labels.size() - 1) + " labels do not fit"), std::string::npos) << msg;
  h = tip_head(keys, labels);
  h.beta = NAN;
  EXPECT_EQ(code_of([&] { build(h); }, &msg), ErrorCode::InvalidArgument);
  EXPECT_EQ(msg, "trained classifier: alpha, beta and the scale must be finite");
  TrainedHead lin;
  lin.method = "linear-probe";
  lin.bias = {0.0f, 1.0f, 2.0f};
  EXPECT_EQ(code_of([&] { build(lin); }, &msg), ErrorCode::Shape);
  EXPECT_EQ(msg, "trained classifier: 3 biases for 4 classes");
}

TEST(TrainedClassifier, CorruptHeadsInFilesAreFormatErrors) {
  const Embeddings z = load_rows("tip_class_w.npy"), keys = load_rows("tip_keys.npy");
  const std::vector<int> labels = load_ints("tip_labels.npy");
  const std::string dir = temp_dir();
  const std::string tip = dir + "/tip.clf", lin = dir + "/lin.clf", bad = dir + "/bad.clf";
  ZeroShotClassifier::from_trained(z, tip_head(keys, labels), class_specs(4), {"a {}."}, "fp", 30.0f).save(tip);
  TrainedHead head;
  head.method = "linear-probe";
  head.bias = {0.5f, -0.5f, 0.25f, 0.0f};
  ZeroShotClassifier::from_trained(z, head, class_specs(4), {"a {}."}, "fp", 30.0f).save(lin);
  // each case: the file it starts from, a change to its tensors or metadata, the message part
  struct Case {
    const std::string* from;
    std::function<void(std::map<std::string, Tensor>&, std::map<std::string, std::string>&)> change;
    std::string part;
  };
  const std::vector<Case> cases = {
      {&tip, [](auto&, auto& m) { m["method"] = "svm"; }, "unknown method 'svm'"},
      {&tip, [](auto&, auto& m) { m["hyperparameters"] = "[1]"; },
       "'hyperparameters' and 'training_set' must be JSON objects"},
      {&tip, [](auto&, auto& m) { m["hyperparameters"] = "{\"alpha\": 1}"; }, "malformed hyperparameters"},
      {&tip, [](auto& t, auto&) { t.erase("cache_labels"); }, "no 'cache_labels' tensor for method tip-adapter"},
      {&tip, [](auto& t, auto&) { t["cache_keys"] = Tensor::from_f32(std::vector<float>(8), {8}); },
       "'cache_keys' has shape [8]"},
      {&tip,
       [&](auto& t, auto&) {
         std::vector<float> l(labels.begin(), labels.end());
         l[0] = 1.5f;
         t["cache_labels"] = Tensor::from_f32(l, {static_cast<int64_t>(l.size())});
       },
       "'cache_labels' holds a value that is not a class index"},
      {&lin, [](auto& t, auto&) { t["bias"] = Tensor::from_f32({1.0f, 2.0f, 3.0f}, {3}); },
       "'bias' has 3 values for 4 classes"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.part);
    SafetensorsFile f = read_safetensors(*c.from);
    std::map<std::string, Tensor> tensors(f.tensors.begin(), f.tensors.end());
    std::map<std::string, std::string> meta(f.metadata.begin(), f.metadata.end());
    c.change(tensors, meta);
    write_safetensors(bad, std::vector<std::pair<std::string, Tensor>>(tensors.begin(), tensors.end()), meta);
    std::string msg;
    EXPECT_EQ(code_of([&] { ZeroShotClassifier::load(bad); }, &msg), ErrorCode::Format);
    EXPECT_NE(msg.find("invalid classifier file '" + bad + "': "), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.part), std::string::npos) << msg;
  }
  // the unchanged files load
  EXPECT_EQ(ZeroShotClassifier::load(tip).method(), "tip-adapter");
  EXPECT_EQ(ZeroShotClassifier::load(lin).method(), "linear-probe");
}
