// ZeroShotClassifier: prompt-ensemble math, golden fixtures (through the golden prompt
// embeddings), probabilities, top-k and .clf files.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "clipkit/zeroshot.h"
#include "core/mapped_file.h"
#include "io/safetensors.h"
#include "support/sanitizer.h"
#include "support/test_support.h"

using namespace clipkit;

namespace {

// Deterministic pseudo-embedding of a string (unnormalised, scale varies with the text).
std::vector<float> hash_embed(const std::string& s, int dim) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  std::vector<float> v(static_cast<size_t>(dim));
  for (int i = 0; i < dim; ++i) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 29;
    v[static_cast<size_t>(i)] = static_cast<float>(static_cast<double>(h % 20001) / 10000.0 - 1.0) * (1.0f + static_cast<float>(s.size() % 3));
  }
  return v;
}

struct HashEncoder {
  int dim = 16;
  int calls = 0;
  std::vector<size_t> batch_sizes;
  Embeddings operator()(const std::vector<std::string>& prompts) {
    ++calls;
    batch_sizes.push_back(prompts.size());
    Embeddings e(static_cast<int64_t>(prompts.size()), dim);
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto v = hash_embed(prompts[i], dim);
      std::copy(v.begin(), v.end(), e.row(static_cast<int64_t>(i)));
    }
    return e;
  }
};

// Direct, independent computation of a class row: mean of unit prompt vectors, renormalised.
std::vector<double> direct_class_row(const std::vector<std::string>& prompts, int dim) {
  std::vector<double> acc(static_cast<size_t>(dim), 0.0);
  for (const auto& p : prompts) {
    auto v = hash_embed(p, dim);
    double n = 0;
    for (float x : v) n += static_cast<double>(x) * x;
    n = std::sqrt(n);
    for (int j = 0; j < dim; ++j) acc[static_cast<size_t>(j)] += v[static_cast<size_t>(j)] / n / static_cast<double>(prompts.size());
  }
  double n = 0;
  for (double x : acc) n += x * x;
  for (double& x : acc) x /= std::sqrt(n);
  return acc;
}

std::vector<float> to_floats(const nlohmann::json& j) {
  std::vector<float> out;
  for (const auto& x : j) {
    if (x.is_array())
      for (const auto& y : x) out.push_back(static_cast<float>(y.get<double>()));
    else
      out.push_back(static_cast<float>(x.get<double>()));
  }
  return out;
}

ErrorCode code_of(const std::function<void()>& f, std::string* msg = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (msg) *msg = e.what();
    return e.code();
  }
  ADD_FAILURE() << "no Error thrown";
  return ErrorCode::Internal;
}

}  // namespace

TEST(ZeroShotClassifier, EnsembleMatchesDirectComputation) {
  HashEncoder enc;
  std::vector<ClassSpec> classes = {{{"cat"}, {}}, {{"dog", "puppy"}, {}}, {{"car"}, {"a {} on the road.", "my {}"}}};
  ClassifierOptions opt;
  opt.templates = {"a photo of a {}.", "{}", "a drawing of the {}."};
  opt.batch_size = 4;
  std::vector<std::pair<int64_t, int64_t>> progress;
  opt.progress = [&](int64_t d, int64_t t) { progress.emplace_back(d, t); };
  auto clf = ZeroShotClassifier::build(std::ref(enc), classes, opt, "fp-1", 24.5f);
  ASSERT_EQ(clf.num_classes(), 3);
  ASSERT_EQ(clf.dim(), 16);
  EXPECT_EQ(clf.labels(), (std::vector<std::string>{"cat", "dog", "car"}));
  EXPECT_EQ(clf.model_fingerprint(), "fp-1");
  EXPECT_FLOAT_EQ(clf.model_logit_scale(), 24.5f);
  // 3 + 6 (two synonyms) + 2 (own templates) = 11 prompts in batches of 4
  EXPECT_EQ(enc.batch_sizes, (std::vector<size_t>{4, 4, 3}));
  ASSERT_EQ(progress.size(), 3u);
  EXPECT_EQ(progress.back(), (std::pair<int64_t, int64_t>{11, 11}));

  const std::vector<std::vector<std::string>> prompts = {
      {"a photo of a cat.", "cat", "a drawing of the cat."},
      {"a photo of a dog.", "dog", "a drawing of the dog.", "a photo of a puppy.", "puppy", "a drawing of the puppy."},
      {"a car on the road.", "my car"}};
  for (int c = 0; c < 3; ++c) {
    auto want = direct_class_row(prompts[static_cast<size_t>(c)], 16);
    for (int j = 0; j < 16; ++j) EXPECT_NEAR(clf.class_embeddings().row(c)[j], want[static_cast<size_t>(j)], 1e-6);
  }

  // logits = scale * cos(image, class); probabilities = softmax
  Embeddings img(2, 16);
  for (int j = 0; j < 16; ++j) {
    img.row(0)[j] = static_cast<float>(j % 5) - 2.0f;
    img.row(1)[j] = static_cast<float>(prompts[1][0].size() % 7) + j * 0.25f;
  }
  auto preds = clf.classify(img, 100.0f, 2);
  for (int i = 0; i < 2; ++i) {
    double n = 0;
    for (int j = 0; j < 16; ++j) n += static_cast<double>(img.row(i)[j]) * img.row(i)[j];
    std::vector<double> lg(3);
    double mx = -1e30;
    for (int c = 0; c < 3; ++c) {
      auto w = direct_class_row(prompts[static_cast<size_t>(c)], 16);
      double d = 0;
      for (int j = 0; j < 16; ++j) d += img.row(i)[j] / std::sqrt(n) * w[static_cast<size_t>(j)];
      lg[static_cast<size_t>(c)] = 100.0 * d;
      mx = std::max(mx, lg[static_cast<size_t>(c)]);
    }
    double z = 0;
    for (double v : lg) z += std::exp(v - mx);
    const auto& p = preds[static_cast<size_t>(i)];
    ASSERT_EQ(p.top.size(), 2u);
    for (int c = 0; c < 3; ++c) {
      EXPECT_NEAR(p.logits[static_cast<size_t>(c)], lg[static_cast<size_t>(c)], 1e-4);
      EXPECT_NEAR(p.probs[static_cast<size_t>(c)], std::exp(lg[static_cast<size_t>(c)] - mx) / z, 1e-6);
    }
    EXPECT_GE(p.top[0].score, p.top[1].score);
    EXPECT_EQ(p.top[0].label, clf.labels()[static_cast<size_t>(p.top[0].index)]);
  }
  // k larger than the class count is clamped
  EXPECT_EQ(clf.classify(img, 1.0f, 10)[0].top.size(), 3u);
  // wrong embedding size
  EXPECT_EQ(code_of([&] { clf.logits(Embeddings(1, 8), 1.0f); }), ErrorCode::Shape);
}

TEST(ZeroShotClassifier, SynonymsAverageAllPromptsIntoOneClass) {
  HashEncoder enc;
  ClassifierOptions opt;
  opt.templates = {"a {}.", "the {}"};
  auto syn = ZeroShotClassifier::build(std::ref(enc), {{{"sofa", "couch"}, {}}}, opt, "", 1.0f);
  auto want = direct_class_row({"a sofa.", "the sofa", "a couch.", "the couch"}, 16);
  for (int j = 0; j < 16; ++j) EXPECT_NEAR(syn.class_embeddings().row(0)[j], want[static_cast<size_t>(j)], 1e-6);
}

TEST(ZeroShotClassifier, RejectsBadInput) {
  HashEncoder enc;
  ClassifierOptions opt;
  EXPECT_EQ(code_of([&] { ZeroShotClassifier::build(std::ref(enc), {}, opt, "", 1.0f); }), ErrorCode::InvalidArgument);
  opt.templates = {"no field"};
  EXPECT_EQ(code_of([&] { ZeroShotClassifier::build(std::ref(enc), {{{"a"}, {}}}, opt, "", 1.0f); }), ErrorCode::InvalidArgument);
  opt.templates = {};
  EXPECT_EQ(code_of([&] { ZeroShotClassifier::build(std::ref(enc), {{{"a"}, {}}}, opt, "", 1.0f); }), ErrorCode::InvalidArgument);
  TextEncoder short_enc = [](const std::vector<std::string>&) { return Embeddings(1, 4); };
  opt.templates = {"{}", "a {}"};
  EXPECT_EQ(code_of([&] { ZeroShotClassifier::build(short_enc, {{{"a"}, {}}}, opt, "", 1.0f); }), ErrorCode::Shape);
}

TEST(ZeroShotClassifier, SoftmaxAndTopK) {
  const float big[3] = {1000.0f, 999.0f, -1000.0f};  // would overflow a naive exp
  auto p = softmax(big, 3);
  EXPECT_NEAR(p[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(p[1], std::exp(-1.0) / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_EQ(p[2], 0.0f);
  const float v[5] = {0.5f, 2.0f, 0.5f, -1.0f, 2.0f};
  EXPECT_EQ(top_k_indices(v, 5, 3), (std::vector<int>{1, 4, 0}));  // ties: lower index first
  EXPECT_EQ(top_k_indices(v, 5, 9).size(), 5u);
}

// The fixtures' zero-shot goldens: prompts are encoded by looking up the golden prompt
// embeddings (zeroshot.template_embeds), so this checks prompt filling, the ensemble and the
// logits/probabilities/top-5 independently of the text encoder.
class ZeroShotGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ZeroShotGolden, MatchesReferenceThroughGoldenPromptEmbeddings) {
  const std::string name = GetParam();
  const auto meta = nlohmann::json::parse(read_file(test::data_path("golden/" + name + ".json")));
  const auto st = read_safetensors(test::data_path("golden/" + name + ".safetensors"));
  const auto& zs = meta["zeroshot"];
  const auto classes_json = zs["classes"].get<std::vector<std::string>>();
  const auto templates = zs["templates"].get<std::vector<std::string>>();
  ASSERT_EQ(classes_json.size(), 10u);
  ASSERT_EQ(templates.size(), 5u);
  const auto tmpl = st.tensors.at("zeroshot.template_embeds").to_f32();  // [10, 5, E]
  const int64_t E = st.tensors.at("zeroshot.template_embeds").shape[2];
  std::map<std::string, std::vector<float>> table;
  const auto prompts = zs["prompts"];
  for (size_t c = 0; c < 10; ++c)
    for (size_t k = 0; k < 5; ++k) {
      const auto p = prompts[c][k].get<std::string>();
      EXPECT_EQ(fill_template(templates[k], classes_json[c]), p);  // str.format semantics
      const float* r = tmpl.data() + (c * 5 + k) * static_cast<size_t>(E);
      table[p] = std::vector<float>(r, r + E);
    }
  TextEncoder enc = [&](const std::vector<std::string>& ps) {
    Embeddings e(static_cast<int64_t>(ps.size()), E);
    for (size_t i = 0; i < ps.size(); ++i) {
      auto it = table.find(ps[i]);
      if (it == table.end()) throw Error(ErrorCode::NotFound, "prompt not in golden table: " + ps[i]);
      std::copy(it->second.begin(), it->second.end(), e.row(static_cast<int64_t>(i)));
    }
    return e;
  };
  std::vector<ClassSpec> classes;
  for (const auto& c : classes_json) classes.push_back({{c}, {}});
  ClassifierOptions opt;
  opt.templates = templates;
  opt.batch_size = 7;  // batches cross class boundaries
  const float scale_exp = static_cast<float>(meta["logit_scale_exp"].get<double>());
  auto clf = ZeroShotClassifier::build(enc, classes, opt, "golden", scale_exp);

  const auto want_w = st.tensors.at("zeroshot.class_embeds").to_f32();
  for (int64_t c = 0; c < 10; ++c) {
    EXPECT_GE(test::cosine(clf.class_embeddings().row(c), want_w.data() + c * E, static_cast<size_t>(E)), 0.99999);
    EXPECT_LE(test::max_abs_diff(clf.class_embeddings().row(c), want_w.data() + c * E, static_cast<size_t>(E)), 1e-5);
  }
  // images: the golden image embeddings (unnormalised; classify normalises)
  const auto& img_t = st.tensors.at("image_embeds");
  Embeddings img(img_t.shape[0], img_t.shape[1]);
  img.data = img_t.to_f32();
  for (const auto& [suffix, scale] : std::vector<std::pair<std::string, float>>{{"100", 100.0f}, {"scale", scale_exp}}) {
    SCOPED_TRACE(suffix);
    const auto logits = st.tensors.at("zeroshot.logits_" + suffix).to_f32();
    const auto probs = st.tensors.at("zeroshot.probs_" + suffix).to_f32();
    const auto top5 = st.tensors.at("zeroshot.top5_" + suffix);
    ASSERT_EQ(top5.dtype, DType::I64);
    const auto* top5v = static_cast<const int64_t*>(top5.data);
    auto preds = clf.classify(img, scale, 5);
    ASSERT_EQ(preds.size(), 12u);
    for (size_t i = 0; i < 12; ++i) {
      for (size_t c = 0; c < 10; ++c) {
        EXPECT_NEAR(preds[i].logits[c], logits[i * 10 + c], 1e-4 * std::max(1.0f, std::fabs(logits[i * 10 + c])));
        EXPECT_NEAR(preds[i].probs[c], probs[i * 10 + c], 1e-5);
      }
      for (size_t k = 0; k < 5; ++k) EXPECT_EQ(preds[i].top[k].index, top5v[i * 5 + k]) << "image " << i << " rank " << k;
    }
    // the JSON repeats the same numbers
    const auto json_probs = to_floats(zs["probs_" + suffix]);
    for (size_t i = 0; i < json_probs.size(); ++i) EXPECT_EQ(json_probs[i], probs[i]);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ZeroShotGolden, ::testing::Values("tiny-vit", "tiny-rn"));

TEST(ZeroShotClassifierFile, RoundTripAndMismatch) {
  HashEncoder enc;
  std::vector<ClassSpec> classes = {{{"cat"}, {}}, {{"dog", "puppy"}, {"a good {}."}}, {{"caf\xc3\xa9"}, {}}};
  ClassifierOptions opt;
  opt.templates = {"a photo of a {}.", "{}"};
  auto clf = ZeroShotClassifier::build(std::ref(enc), classes, opt, "sha256:abc", 18.18f);
  const std::string path = test::temp_dir() + "/pets.clf";
  clf.save(path);
  auto back = ZeroShotClassifier::load(path, "sha256:abc");
  EXPECT_EQ(back.num_classes(), 3);
  EXPECT_EQ(back.dim(), 16);
  EXPECT_EQ(back.class_embeddings().data, clf.class_embeddings().data);  // bit-exact
  EXPECT_EQ(back.labels(), clf.labels());
  EXPECT_EQ(back.classes()[1].names, classes[1].names);
  EXPECT_EQ(back.classes()[1].templates, classes[1].templates);
  EXPECT_EQ(back.templates(), opt.templates);
  EXPECT_EQ(back.model_fingerprint(), "sha256:abc");
  EXPECT_FLOAT_EQ(back.model_logit_scale(), 18.18f);
  EXPECT_NO_THROW(ZeroShotClassifier::load(path));  // no expectation: any model

  std::string msg;
  EXPECT_EQ(code_of([&] { ZeroShotClassifier::load(path, "sha256:other"); }, &msg), ErrorCode::Mismatch);
  EXPECT_NE(msg.find("sha256:abc"), std::string::npos) << msg;
  EXPECT_NE(msg.find("sha256:other"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;

  // The model's name is recorded and both names are given on a mismatch; a file without a name
  // (written before names were recorded) still loads and is named by its fingerprint.
  EXPECT_EQ(back.model_name(), "");
  clf.set_model_name("ViT-B/32");
  clf.save(path);
  EXPECT_EQ(ZeroShotClassifier::load(path, "sha256:abc", "RN50").model_name(), "ViT-B/32");
  EXPECT_EQ(code_of([&] { ZeroShotClassifier::load(path, "sha256:other", "RN50"); }, &msg), ErrorCode::Mismatch);
  EXPECT_EQ(msg, "classifier '" + path + "' was built for model ViT-B/32 (fingerprint sha256:abc) but the loaded model "
                 "is RN50 (fingerprint sha256:other)");
  clf.set_model_name("");
  clf.save(path);
  EXPECT_EQ(code_of([&] { ZeroShotClassifier::load(path, "sha256:other", "RN50"); }, &msg), ErrorCode::Mismatch);
  EXPECT_EQ(msg, "classifier '" + path + "' was built for model fingerprint sha256:abc but the loaded model is RN50 "
                 "(fingerprint sha256:other)");
}

TEST(ZeroShotClassifierFile, CorruptFilesAreFormatErrors) {
  HashEncoder enc;
  ClassifierOptions opt;
  auto clf = ZeroShotClassifier::build(std::ref(enc), parse_label_list("a,b,c,d"), opt, "fp", 1.0f);
  const std::string dir = test::temp_dir();
  const std::string good = dir + "/good.clf";
  clf.save(good);
  const std::string bytes = read_file(good);
  auto write = [&](const std::string& name, const std::string& data) {
    const std::string p = dir + "/" + name;
    std::ofstream(p, std::ios::binary) << data;
    return p;
  };
  // every truncation is a clean Format error
  for (size_t n : {size_t{0}, size_t{4}, size_t{8}, size_t{20}, bytes.size() / 2, bytes.size() - 1}) {
    SCOPED_TRACE(n);
    const auto p = write("trunc.clf", bytes.substr(0, n));
    EXPECT_EQ(code_of([&] { ZeroShotClassifier::load(p); }), ErrorCode::Format);
  }
  EXPECT_EQ(code_of([&] { ZeroShotClassifier::load(write("junk.clf", std::string(100, 'x'))); }), ErrorCode::Format);
  // a valid safetensors file that is not a classifier
  std::string msg;
  EXPECT_EQ(code_of([&] { ZeroShotClassifier::load(test::data_path("golden/tiny-vit.safetensors")); }, &msg), ErrorCode::Format);
  EXPECT_NE(msg.find("not a clipkit classifier"), std::string::npos) << msg;
  // label count disagreeing with the matrix
  {
    auto f = read_safetensors(good);
    auto meta = f.metadata;
    meta["classes"] = R"([{"names":["a"],"templates":[]}])";
    const std::string p = dir + "/labels.clf";
    write_safetensors(p, {{"class_embeds", f.tensors.at("class_embeds")}}, meta);
    EXPECT_EQ(code_of([&] { ZeroShotClassifier::load(p); }, &msg), ErrorCode::Format);
    EXPECT_NE(msg.find("1 labels for 4 class rows"), std::string::npos) << msg;
    meta = f.metadata;
    meta["version"] = "99";
    write_safetensors(p, {{"class_embeds", f.tensors.at("class_embeds")}}, meta);
    EXPECT_EQ(code_of([&] { ZeroShotClassifier::load(p); }, &msg), ErrorCode::Format);
    EXPECT_NE(msg.find("version 99"), std::string::npos) << msg;
    // a logit scale that is not a finite number
    for (const char* scale : {"inf", "nan", "1e999"}) {
      meta = f.metadata;
      meta["logit_scale"] = scale;
      write_safetensors(p, {{"class_embeds", f.tensors.at("class_embeds")}}, meta);
      EXPECT_EQ(code_of([&] { ZeroShotClassifier::load(p); }, &msg), ErrorCode::Format) << scale;
      EXPECT_NE(msg.find("logit_scale"), std::string::npos) << msg;
    }
    // class metadata nested deeper than the JSON limit: refused before it is built
    meta = f.metadata;
    meta["classes"] = std::string(100000, '[') + std::string(100000, ']');
    write_safetensors(p, {{"class_embeds", f.tensors.at("class_embeds")}}, meta);
    EXPECT_EQ(code_of([&] { ZeroShotClassifier::load(p); }, &msg), ErrorCode::Format);
    EXPECT_NE(msg.find("nested more than 64 levels"), std::string::npos) << msg;
    EXPECT_NE(msg.find("labels.clf"), std::string::npos) << msg;
  }
  EXPECT_EQ(code_of([&] { ZeroShotClassifier::load(dir + "/absent.clf"); }), ErrorCode::NotFound);
}

TEST(ZeroShotClassifierFile, ThousandClassesLoadFast) {
  // a 1000 x 512 classifier (ViT-B/32 size), labels from the built-in imagenet1000 set
  auto classes = builtin_label_set("imagenet1000");
  Embeddings w(1000, 512);
  for (size_t i = 0; i < w.data.size(); ++i) w.data[i] = static_cast<float>((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  auto clf = ZeroShotClassifier::from_embeddings(w, classes, builtin_template_set("imagenet80"), "fp", 100.0f);
  const std::string path = test::temp_dir() + "/imagenet.clf";
  clf.save(path);
  const auto t0 = std::chrono::steady_clock::now();
  auto back = ZeroShotClassifier::load(path, "fp");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(back.num_classes(), 1000);
  EXPECT_EQ(back.labels()[999], classes[999].label());
#ifdef CLIPKIT_TEST_ASAN
  const double limit = 2.0;  // instrumented build
#else
  const double limit = 0.5;
#endif
  EXPECT_LT(s, limit) << "loading took " << s << " s";
  RecordProperty("load_seconds", std::to_string(s));
}
