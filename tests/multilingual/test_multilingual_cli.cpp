// The multilingual CLI contract: embed with an M-CLIP tower alone, paired (--text-model) and an
// open_clip XLM-R checkpoint (--tokenizer); classify with a pair against the zero-shot golden;
// an index that remembers its pair; and the bad inputs, each a one-line error.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "clipkit/index.h"
#include "core/npy.h"
#include "io/safetensors.h"
#include "support/test_support.h"

using namespace clipkit;
namespace fs = std::filesystem;

namespace {

std::string ml(const std::string& rel) { return test::data_path("multilingual/" + rel); }
std::string tiny_vit() { return test::data_path("models/tiny-vit.safetensors"); }

nlohmann::json golden_json(const std::string& name) {
  std::ifstream f(ml("golden/" + name + ".json"));
  return nlohmann::json::parse(f);
}

std::vector<float> golden_f32(const std::string& name, const std::string& tensor) {
  return read_safetensors(ml("golden/" + name + ".safetensors")).tensors.at(tensor).to_f32();
}

void expect_rows_close(const float* got, const float* ref, int64_t rows, int64_t dim, const std::string& what) {
  const size_t n = static_cast<size_t>(rows * dim);
  EXPECT_LE(test::max_abs_diff(got, ref, n), 1e-4 * test::max_abs(ref, n)) << what;
  for (int64_t r = 0; r < rows; ++r) EXPECT_GE(test::cosine(got + r * dim, ref + r * dim, dim), 0.99999) << what << r;
}

std::vector<std::string> image_files(const nlohmann::json& list) {
  std::vector<std::string> out;
  for (const auto& im : list) {
    const std::string f = im.is_string() ? im.get<std::string>() : im.at("file").get<std::string>();
    out.push_back(test::data_path("images/" + f.substr(f.rfind('/') + 1)));
  }
  return out;
}

TEST(MultilingualCli, EmbedMClipAlone) {
  const auto j = golden_json("tiny-mclip");
  const std::string out = test::temp_dir() + "/e.npy";
  std::vector<std::string> args{"embed", "--model", ml("tiny-mclip"), "--out", out, "--text"};
  for (const auto& t : j.at("texts")) args.push_back(t.get<std::string>());
  const auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Tensor e = read_npy(out);
  ASSERT_EQ(e.shape, (Shape{24, 64}));
  expect_rows_close(e.to_f32().data(), golden_f32("tiny-mclip", "text_embeds").data(), 24, 64, "text row ");
}

TEST(MultilingualCli, EmbedPairImageRowsThenTextRows) {
  const auto j = golden_json("tiny-mclip");
  const auto images = image_files(j.at("zeroshot").at("images"));
  const std::string out = test::temp_dir() + "/e.npy";
  std::vector<std::string> args{"embed", "--model", tiny_vit(), "--text-model", ml("tiny-mclip"), "--out", out, "--image"};
  args.insert(args.end(), images.begin(), images.end());
  args.push_back("--text");
  for (const auto& t : j.at("texts")) args.push_back(t.get<std::string>());
  const auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<float> e = read_npy(out).to_f32();
  ASSERT_EQ(e.size(), (12u + 24u) * 64u);
  const auto img = golden_f32("tiny-mclip", "zeroshot.image_embeds");
  for (int64_t i = 0; i < 12; ++i) EXPECT_GE(test::cosine(e.data() + i * 64, img.data() + i * 64, 64), 0.99999) << i;
  expect_rows_close(e.data() + 12 * 64, golden_f32("tiny-mclip", "text_embeds").data(), 24, 64, "text row ");
}

TEST(MultilingualCli, EmbedOpenClipXlmrWithTokenizer) {
  const auto j = golden_json("tiny-xlmr-clip");
  const auto images = image_files(j.at("images"));
  const std::string dir = test::temp_dir();
  fs::copy_file(ml("tiny-xlmr-clip.safetensors"), dir + "/m.safetensors");  // no tokenizer beside it
  const std::string out = dir + "/e.npy";
  std::vector<std::string> args{"embed", "--model", dir + "/m.safetensors", "--tokenizer", ml("sentencepiece.bpe.model"),
                                "--out", out, "--image"};
  args.insert(args.end(), images.begin(), images.end());
  args.push_back("--text");
  for (const auto& t : j.at("texts")) args.push_back(t.get<std::string>());
  const auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<float> e = read_npy(out).to_f32();
  ASSERT_EQ(e.size(), (12u + 24u) * 96u);
  expect_rows_close(e.data(), golden_f32("tiny-xlmr-clip", "image_embeds").data(), 12, 96, "image row ");
  expect_rows_close(e.data() + 12 * 96, golden_f32("tiny-xlmr-clip", "text_embeds").data(), 24, 96, "text row ");
  // Without --tokenizer: the error names the file looked for.
  const auto bad = test::run_cli({"embed", "--model", dir + "/m.safetensors", "--text", "x"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find(dir + "/sentencepiece.bpe.model"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("--tokenizer"), std::string::npos) << bad.err;
}

TEST(MultilingualCli, ClassifyWithPairMatchesZeroShotGolden) {
  const auto zs = golden_json("tiny-mclip").at("zeroshot");
  const std::string dir = test::temp_dir();
  {
    std::ofstream l(dir + "/labels.txt"), t(dir + "/templates.txt");
    for (const auto& c : zs.at("classes")) l << c.get<std::string>() << "\n";
    for (const auto& c : zs.at("templates")) t << c.get<std::string>() << "\n";
  }
  std::vector<std::string> args{"classify", "--model", tiny_vit(), "--text-model", ml("tiny-mclip"), "--labels-file",
                                dir + "/labels.txt", "--templates", dir + "/templates.txt", "--scale", "100",
                                "--top-k", "5", "--format", "json"};
  const auto images = image_files(zs.at("images"));
  args.insert(args.end(), images.begin(), images.end());
  const auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto classes = zs.at("classes").get<std::vector<std::string>>();
  const auto probs = golden_f32("tiny-mclip", "zeroshot.probs_100");
  std::istringstream lines(r.out);
  std::string line;
  size_t i = 0;
  for (; std::getline(lines, line); ++i) {
    ASSERT_LT(i, images.size());
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("image").get<std::string>(), images[i]);
    ASSERT_EQ(j.at("top").size(), 5u);
    for (size_t k = 0; k < 5; ++k) {
      const int c = zs.at("top5_100").at(i).at(k).get<int>();
      EXPECT_EQ(j.at("top").at(k).at("label").get<std::string>(), classes[c]) << "image " << i << " rank " << k;
      EXPECT_NEAR(j.at("top").at(k).at("prob").get<double>(), probs[i * classes.size() + c], 1e-4);
    }
  }
  EXPECT_EQ(i, images.size());
}

TEST(MultilingualCli, IndexRemembersThePair) {
  const std::string dir = test::temp_dir() + "/idx";
  auto r = test::run_cli({"index", "create", dir, "--model", tiny_vit(), "--text-model", ml("tiny-mclip")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_cli({"index", "add", dir, test::data_path("images/00_astronaut.png"),
                     test::data_path("images/02_coffee.png")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_cli({"search", dir, "--text", "eine Tasse Kaffee", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("02_coffee.png"), std::string::npos) << r.out;
  // The image model alone is not the model the index was built with.
  r = test::run_cli({"search", dir, "--text", "x", "--model", tiny_vit(), "--text-model", ml("tiny-xlmr-clip.safetensors")});
  EXPECT_EQ(r.exit_code, 1);
}

TEST(MultilingualCli, RecommendTakesThePairAndRefusesAnother) {
  const std::string dir = test::temp_dir() + "/idx";
  auto r = test::run_cli({"index", "create", dir, "--model", tiny_vit(), "--text-model", ml("tiny-mclip")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_cli({"index", "add", dir, test::data_path("images/00_astronaut.png"), test::data_path("images/02_coffee.png"),
                     "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The recorded pair, or the same pair stated again: the same scores.
  const std::vector<std::string> ask{"recommend", dir, "--positive", "text:eine Tasse Kaffee", "--format", "json", "--threads", "1"};
  r = test::run_cli(ask);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("02_coffee.png"), std::string::npos) << r.out;
  auto stated = ask;
  stated.insert(stated.end(), {"--text-model", ml("tiny-mclip"), "--tokenizer", ml("sentencepiece.bpe.model")});
  const auto again = test::run_cli(stated);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, r.out);
  // A tokenizer with other bytes (an unknown protobuf field appended: the same pieces) is not the recorded one.
  const std::string other = test::temp_dir() + "/other.model";
  fs::copy_file(ml("sentencepiece.bpe.model"), other);
  std::ofstream(other, std::ios::app | std::ios::binary) << std::string("\xa0\x06\x01", 3);
  auto contradicted = ask;
  contradicted.insert(contradicted.end(), {"--tokenizer", other});
  r = test::run_cli(contradicted);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is not the tokenizer index"), std::string::npos) << r.err;
  // An index of the image model with its own text tower contradicts --text-model: both named.
  const std::string own = test::temp_dir() + "/own";
  ASSERT_EQ(test::run_cli({"index", "create", own, "--model", tiny_vit()}).exit_code, 0);
  r = test::run_cli({"recommend", own, "--positive", "text:Kaffee", "--text-model", ml("tiny-mclip"), "--threads", "1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("(its own text tower)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("with text tower " + ml("tiny-mclip")), std::string::npos) << r.err;
}

TEST(MultilingualCli, IndexBuildRecordsThePair) {
  const std::string dir = test::temp_dir() + "/built";
  const std::vector<std::string> build{"index", "build", dir, test::data_path("images/00_astronaut.png"),
                                       test::data_path("images/02_coffee.png"), "--model", tiny_vit(), "--threads", "1"};
  auto with_pair = build;
  with_pair.insert(with_pair.end(), {"--text-model", ml("tiny-mclip")});
  auto r = test::run_cli(with_pair);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  {
    const IndexInfo info = Index::open(dir, Index::Mode::ReadOnly).info();
    EXPECT_EQ(info.text_model_path, fs::absolute(ml("tiny-mclip")).lexically_normal().string());
    EXPECT_EQ(info.tokenizer_path, fs::absolute(ml("tiny-mclip/sentencepiece.bpe.model")).lexically_normal().string());
  }
  // search uses the recorded pair: the pair's text embedding, not the image model's own.
  r = test::run_cli({"search", dir, "--text", "eine Tasse Kaffee", "--format", "json", "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto stated = test::run_cli({"search", dir, "--text", "eine Tasse Kaffee", "--format", "json", "--threads", "1",
                                     "--text-model", ml("tiny-mclip")});
  EXPECT_EQ(stated.out, r.out);
  // Building again without the text tower contradicts the shards it recorded.
  r = test::run_cli(build);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("with text tower "), std::string::npos) << r.err;
}

TEST(MultilingualCli, BadInput) {
  // A pair whose embedding sizes differ: both sizes named.
  auto r = test::run_cli({"embed", "--model", ml("tiny-xlmr-clip.safetensors"), "--text-model", ml("tiny-mclip"),
                          "--text", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("96"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("64"), std::string::npos) << r.err;
  // A text tower alone asked for images.
  r = test::run_cli({"embed", "--model", ml("tiny-mclip"), "--image", test::data_path("images/00_astronaut.png")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--text-model"), std::string::npos) << r.err;
  // A tokenizer file that is not a SentencePiece model.
  r = test::run_cli({"embed", "--model", ml("tiny-mclip"), "--tokenizer", ml("golden/tiny-mclip.json"), "--text", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not a SentencePiece model"), std::string::npos) << r.err;
  // An unknown modelBase whose tensors define the encoder: loads, with a warning.
  const std::string dir = test::temp_dir() + "/mclip";
  fs::create_directories(dir);
  for (const char* f : {"pytorch_model.bin", "sentencepiece.bpe.model"}) fs::copy_file(ml(std::string("tiny-mclip/") + f), dir + "/" + f);
  {
    std::ofstream c(dir + "/config.json");
    c << R"({"architectures": ["MultilingualCLIP"], "modelBase": "someone/my-xlmr", "model_type": "M-CLIP",
            "numDims": 64, "transformerDimensions": 128})";
  }
  const std::string out = test::temp_dir() + "/u.npy";
  r = test::run_cli({"embed", "--model", dir, "--text", "eine Katze", "--out", out});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("someone/my-xlmr"), std::string::npos) << r.err;
  // A text longer than the position table (512 tokens): cut, one warning for all such texts.
  std::string long_text;
  for (int i = 0; i < 700; ++i) long_text += "Katze ";
  r = test::run_cli({"embed", "--model", ml("tiny-mclip"), "--text", long_text, long_text, "--out", out});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const size_t first = r.err.find("position table");
  EXPECT_NE(first, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("position table", first + 1), std::string::npos) << r.err;
}

}  // namespace

namespace {

TEST(MultilingualCli, ModelsListNamesTheMultilingualModels) {
  const auto r = test::run_cli({"models", "list", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* name : {"M-CLIP/XLM-Roberta-Large-Vit-L-14", "M-CLIP/XLM-Roberta-Large-Vit-B-32",
                           "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k"})
    EXPECT_NE(r.out.find(name), std::string::npos) << name;
}

}  // namespace
