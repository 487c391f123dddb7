// clipkit classifier train: every method's .clf from a labelled folder, read by classify and eval;
// the eval learning curve; bad training sets.
#include <gtest/gtest.h>

#include <webp/decode.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "clipkit/adapt.h"
#include "clipkit/model.h"
#include "clipkit/zeroshot.h"
#include "core/mapped_file.h"
#include "support/test_support.h"

namespace {
using clipkit::test::data_path;
using clipkit::test::run_cli;
namespace fs = std::filesystem;

// 3 classes (3, 2 and 3 images) made from the fixture images.
std::string make_dataset(const std::string& name = "train") {
  const std::string root = clipkit::test::temp_dir() + "/" + name;
  const std::vector<std::pair<std::string, std::vector<std::string>>> layout = {
      {"cat", {"01_chelsea_q90_progressive.jpg", "09_tiny_7x5.png", "11_palette.png"}},
      {"cup", {"02_coffee.png", "10_small_40x50.png"}},
      {"space", {"00_astronaut.png", "03_rocket_q75.jpg", "06_wide_hubble.png"}}};
  for (const auto& [cls, files] : layout) {
    fs::create_directories(root + "/" + cls);
    for (const auto& f : files) fs::copy_file(data_path("images/" + f), root + "/" + cls + "/" + f);
  }
  return root;
}

const std::string kModel = data_path("models/tiny-vit.safetensors");

std::string base64_decode(const std::string& in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char ch : in) {
    const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char* p = ch ? std::strchr(t, ch) : nullptr;
    if (!p) break;  // '=' padding ends the data
    acc = (acc << 6) | static_cast<uint32_t>(p - t);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}
}  // namespace

TEST(CliClassifierTrain, LinearProbeMatchesTheLibraryAndClassifyReadsIt) {
  const std::string ds = make_dataset();
  const std::string out = clipkit::test::temp_dir();
  const auto r = run_cli({"classifier", "train", "--model", kModel, "--train", ds, "--method", "linear-probe", "--C", "10",
                          "--cache", out + "/cache", "--out", out + "/p.clf"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("linear-probe: C = 10 (given)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("validation accuracy: "), std::string::npos) << r.out;

  // the library on the same images gives the same classifier
  auto m = clipkit::Model::load(kModel);
  const auto folder = clipkit::read_labeled_folder(ds);
  const auto feats = clipkit::encode_labeled_folder(*m, folder, {});
  clipkit::TrainOptions opt;
  opt.C = 10;
  const auto lib = clipkit::train_classifier(feats, folder.classes, nullptr, opt, nullptr, m->info().fingerprint);
  const auto saved = clipkit::ZeroShotClassifier::load(out + "/p.clf", m->info().fingerprint);
  EXPECT_EQ(saved.method(), "linear-probe");
  ASSERT_EQ(saved.class_embeddings().data.size(), lib.class_embeddings().data.size());
  for (size_t i = 0; i < lib.class_embeddings().data.size(); ++i)
    EXPECT_NEAR(saved.class_embeddings().data[i], lib.class_embeddings().data[i], 1e-5);
  const auto ts = nlohmann::json::parse(saved.trained_head()->training_set);
  EXPECT_EQ(ts["images"].get<int>(), 8);
  EXPECT_EQ(ts["per_class"], (std::vector<int>{3, 2, 3}));
  EXPECT_EQ(ts["digest"].get<std::string>().size(), 64u);

  // classify uses it unchanged; a second run reads the cached embeddings and gives the same file
  const auto c = run_cli({"classify", "--model", kModel, "--classifier", out + "/p.clf", "--format", "json", "-k", "1", ds});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const auto preds = lib.classify(feats.features, 0.0f, 1);
  for (size_t i = 0; i < preds.size(); ++i)
    EXPECT_NE(c.out.find("\"label\":\"" + preds[i].top[0].label + "\""), std::string::npos);
  const auto info = run_cli({"classifier", "info", out + "/p.clf"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("method: linear-probe"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("\"C\":10.0"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("model: " + kModel), std::string::npos) << info.out;
  // another model is refused, naming both
  const std::string other = data_path("models/tiny-rn.safetensors");
  const auto refused = run_cli({"classify", "--model", other, "--classifier", out + "/p.clf", ds});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("was built for model " + kModel + " (fingerprint " + m->info().fingerprint +
                             ") but the loaded model is " + other + " (fingerprint "),
            std::string::npos)
      << refused.err;
  const auto again = run_cli({"classifier", "train", "--model", kModel, "--train", ds, "--method", "linear-probe", "--C",
                              "10", "--cache", out + "/cache", "--out", out + "/p2.clf"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(clipkit::read_file(out + "/p.clf"), clipkit::read_file(out + "/p2.clf"));

  // eval scores it beside the strategies
  const auto e = run_cli({"eval", "--model", kModel, "--dataset", ds, "--strategies", "photo", "--classifier",
                          out + "/p.clf", "--report", out + "/e.json"});
  ASSERT_EQ(e.exit_code, 0) << e.err;
  const auto j = nlohmann::json::parse(clipkit::read_file(out + "/e.json"));
  ASSERT_EQ(j["strategies"].size(), 2u);
  EXPECT_NE(j["strategies"][1]["name"].get<std::string>().find("(linear-probe)"), std::string::npos);
  int hits = 0;
  for (size_t i = 0; i < preds.size(); ++i) hits += preds[i].top[0].index == feats.labels[i];
  EXPECT_NEAR(j["strategies"][1]["top1"].get<double>(), hits / 8.0, 1e-9);
}

TEST(CliClassifierTrain, EveryMethodMakesAClassifierThatClassifyReads) {
  const std::string ds = make_dataset();
  const std::string out = clipkit::test::temp_dir();
  for (const std::string method : {"zs-probe", "tip-adapter", "tip-adapter-f"}) {
    SCOPED_TRACE(method);
    std::vector<std::string> args = {"classifier", "train", "--model", kModel, "--train", ds, "--method", method,
                                     "--no-cache", "--seed", "3", "--out", out + "/" + method + ".clf"};
    if (method == "zs-probe") args.insert(args.end(), {"--C", "auto"});
    const auto r = run_cli(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find(method == "zs-probe" ? "C = " : "alpha = "), std::string::npos) << r.out;
    const auto c = run_cli({"classify", "--model", kModel, "--classifier", out + "/" + method + ".clf", ds});
    EXPECT_EQ(c.exit_code, 0) << c.err;
    const auto info = clipkit::ZeroShotClassifier::load(out + "/" + method + ".clf");
    EXPECT_EQ(info.method(), method);
  }
  // --alpha/--beta given are kept
  const auto r = run_cli({"classifier", "train", "--model", kModel, "--train", ds, "--method", "tip-adapter", "--alpha",
                          "2", "--beta", "3", "--no-cache", "--out", out + "/given.clf"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("alpha = 2, beta = 3 (given)"), std::string::npos) << r.out;
}

TEST(CliClassifierTrain, BadTrainingSetsAreOneLineErrorsNamingTheClass) {
  const std::string ds = make_dataset();
  const std::string out = clipkit::test::temp_dir();
  auto train = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"classifier", "train", "--model", kModel, "--method", "linear-probe", "--no-cache",
                                     "--out", out + "/x.clf"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_cli(args);
  };
  auto r = train({"--train", ds, "--shots", "3"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("class 'cup' has only 2 readable image(s)"), std::string::npos) << r.err;
  r = train({"--train", ds, "--labels", "cat,cup,planet"});
  EXPECT_NE(r.err.find("class 'space' of the folder is not in --labels"), std::string::npos) << r.err;
  // a class folder whose only file is not a readable image
  const std::string broken = make_dataset("broken");
  fs::remove_all(broken + "/cup");
  fs::create_directories(broken + "/cup");
  std::ofstream(broken + "/cup/bad.png") << "not a png";
  r = train({"--train", broken});
  EXPECT_NE(r.err.find("class 'cup' has no readable image"), std::string::npos) << r.err;
  // a single class
  const std::string one = clipkit::test::temp_dir() + "/one";
  fs::create_directories(one + "/cat");
  fs::copy_file(data_path("images/02_coffee.png"), one + "/cat/a.png");
  r = train({"--train", one});
  EXPECT_NE(r.err.find("at least two classes"), std::string::npos) << r.err;
  for (const auto& line : {r.err}) EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
  r = train({"--train", ds, "--C", "-1"});
  EXPECT_NE(r.err.find("--C must be a positive number or 'auto'"), std::string::npos) << r.err;
  // a classifier trained for another model is refused, naming both models
  ASSERT_EQ(train({"--train", ds}).exit_code, 0);
  r = run_cli({"classify", "--model", data_path("models/tiny-rn.safetensors"), "--classifier", out + "/x.clf", ds});
  EXPECT_NE(r.exit_code, 0);
  auto vit = clipkit::Model::load(kModel);
  auto rn = clipkit::Model::load(data_path("models/tiny-rn.safetensors"));
  EXPECT_NE(r.err.find(vit->info().fingerprint), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(rn->info().fingerprint), std::string::npos) << r.err;
}

TEST(CliEvalFewShot, LearningCurveOfEveryMethod) {
  const std::string ds = make_dataset();
  const std::string out = clipkit::test::temp_dir();
  const auto r = run_cli({"eval", "--model", kModel, "--dataset", ds, "--strategies", "photo", "--few-shot", "1",
                          "--methods", "zero-shot,linear-probe,tip-adapter,zs-probe", "--repeats", "2", "--seed", "5",
                          "--report", out + "/c.json", "--report", out + "/c.html", "--report", out + "/c.md"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("few-shot learning curve"), std::string::npos) << r.out;
  const auto j = nlohmann::json::parse(clipkit::read_file(out + "/c.json"));
  const auto& c = j["learning_curve"];
  EXPECT_EQ(c["test_images"].get<int>(), 5);  // round(n/2) of each class: 2 + 1 + 2
  ASSERT_EQ(c["methods"].size(), 4u);
  for (const auto& m : c["methods"]) {
    ASSERT_EQ(m["points"].size(), 1u);
    const auto runs = m["points"][0]["top1_runs"].get<std::vector<double>>();
    ASSERT_EQ(runs.size(), 2u);
    for (double v : runs) EXPECT_EQ(v * 5, std::round(v * 5));  // a count of the 5 test images
  }
  const std::string html = clipkit::read_file(out + "/c.html");
  EXPECT_NE(html.find("<polyline"), std::string::npos);
  EXPECT_NE(html.find("photo (best)"), std::string::npos);  // the only strategy is the best one
  EXPECT_NE(r.out.find("best: photo (top-1 "), std::string::npos) << r.out;
  EXPECT_NE(html.find("aria-label='per-class accuracy'"), std::string::npos);
  // the gallery embeds a thumbnail of each misclassified picture with its true and predicted label
  if (j["strategies"][0]["top1"].get<double>() < 1.0) {
    EXPECT_NE(html.find("<h2>Misclassified images</h2>"), std::string::npos);
    EXPECT_NE(html.find("true <b>"), std::string::npos);
    const std::string tag = "src=\"data:image/webp;base64,";
    size_t at = html.find(tag), thumbs = 0;
    for (; at != std::string::npos; at = html.find(tag, at + 1), ++thumbs) {
      const size_t from = at + tag.size();
      const std::string webp = base64_decode(html.substr(from, html.find('"', from) - from));
      int w = 0, h = 0;
      ASSERT_TRUE(WebPGetInfo(reinterpret_cast<const uint8_t*>(webp.data()), webp.size(), &w, &h));
      EXPECT_LE(std::max(w, h), 128);
    }
    EXPECT_GT(thumbs, 0u);
    EXPECT_EQ(html.find("data:image/png"), std::string::npos);  // no original file embedded
    EXPECT_EQ(html.find("data:image/jpeg"), std::string::npos);
  }
  EXPECT_NE(clipkit::read_file(out + "/c.md").find("## Few-shot learning curve"), std::string::npos);
  const auto bad = run_cli({"eval", "--model", kModel, "--dataset", ds, "--few-shot", "4"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("class 'cat' has only 1"), std::string::npos) << bad.err;
}

// The contract's spelling: the evaluated folder as the first argument, the training images from
// --train (never from the evaluated folder). --dataset DIR (the other tests) names the same folder;
// two different folders, or none, are usage errors.
TEST(CliEvalFewShot, FolderArgumentWithATrainingFolder) {
  const std::string ds = make_dataset("test"), train = make_dataset("train");
  const std::string out = clipkit::test::temp_dir();
  const auto r = run_cli({"eval", ds, "--model", kModel, "--strategies", "photo", "--few-shot", "1",
                          "--methods", "zero-shot,linear-probe", "--repeats", "1", "--train", train, "--report", out + "/c.json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(clipkit::read_file(out + "/c.json"));
  EXPECT_EQ(j["images"].get<int>(), 8);
  EXPECT_EQ(j["learning_curve"]["test_images"].get<int>(), 8);  // every image of DIR is tested
  // without --strategies the zero-shot parts use classify's default templates, not the first default strategy
  const auto dflt = run_cli({"eval", ds, "--model", kModel, "--few-shot", "1", "--methods", "zero-shot", "--repeats", "1",
                             "--train", train});
  ASSERT_EQ(dflt.exit_code, 0) << dflt.err;
  EXPECT_NE(dflt.out.find("zero-shot parts use the templates of 'photo'"), std::string::npos) << dflt.out;
  const auto two = run_cli({"eval", ds, "--dataset", train, "--model", kModel});
  EXPECT_EQ(two.exit_code, 2);
  EXPECT_NE(two.err.find("clipkit eval: two datasets given"), std::string::npos) << two.err;
  const auto none = run_cli({"eval", "--model", kModel});
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.err.find("clipkit eval: name the labelled folder"), std::string::npos) << none.err;
}
