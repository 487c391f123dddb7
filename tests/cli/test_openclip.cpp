// The CLI on open_clip models (tests/data/openclip/): embed from a folder and from a bare file with
// --arch, preprocess with the model's own settings, info, list archs, and the warning for a bare
// file that states nothing.
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/npy.h"
#include "io/safetensors.h"
#include "support/test_support.h"

namespace {

using namespace clipkit;
using clipkit::test::data_path;
using clipkit::test::run_cli;

nlohmann::json golden_json(const std::string& name) {
  std::ifstream f(data_path("openclip/golden/" + name + ".json"));
  return nlohmann::json::parse(f);
}

std::vector<float> golden(const std::string& name, const std::string& tensor) {
  return read_safetensors(data_path("openclip/golden/" + name + ".safetensors")).tensors.at(tensor).to_f32();
}

std::string sha256_hex(const void* data, size_t n) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data, n, digest, &len, EVP_sha256(), nullptr);
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", digest[i]);
    hex += buf;
  }
  return hex;
}

std::string image(const nlohmann::json& im) {
  const std::string f = im.at("file").get<std::string>();
  return data_path("images/" + f.substr(f.rfind('/') + 1));
}

void expect_close(const float* got, const float* want, size_t n, const std::string& what) {
  EXPECT_GE(test::cosine(got, want, n), 0.99999) << what;
  EXPECT_LE(test::max_abs_diff(got, want, n), 1e-4 * test::max_abs(want, n)) << what;
}

// `clipkit embed ... --out e.npy` for images 0..2 and texts 0..1 of a fixture against its goldens.
void check_embed(const std::string& name, std::vector<std::string> model_args) {
  const nlohmann::json g = golden_json(name);
  const std::string out = test::temp_dir() + "/" + name + ".npy";
  std::vector<std::string> args = {"embed"};
  args.insert(args.end(), model_args.begin(), model_args.end());
  args.push_back("--image");
  for (int i = 0; i < 3; ++i) args.push_back(image(g.at("images")[i]));
  args.push_back("--text");
  for (int t = 0; t < 2; ++t) args.push_back(g.at("texts")[t].get<std::string>());
  args.insert(args.end(), {"--out", out});
  const auto r = run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");  // the configuration states everything: no warning
  const Tensor t = read_npy(out);
  const int64_t dim = g.at("architecture").at("embed_dim").get<int64_t>();
  ASSERT_EQ(t.shape, (Shape{5, dim}));
  const std::vector<float> e = t.to_f32(), img = golden(name, "image_embeds"), txt = golden(name, "text_embeds");
  for (int i = 0; i < 3; ++i) expect_close(&e[i * dim], &img[i * dim], dim, name + " image " + std::to_string(i));
  for (int t2 = 0; t2 < 2; ++t2)
    expect_close(&e[(3 + t2) * dim], &txt[t2 * dim], dim, name + " text " + std::to_string(t2));
}

}  // namespace

TEST(CliOpenClip, EmbedFromFolders) {
  for (const char* name : {"vit-bigg-14", "vit-h-14-378-quickgelu", "rn50-quickgelu"})
    check_embed(name, {"--model", data_path(std::string("openclip/") + name)});
}

TEST(CliOpenClip, EmbedBareFileWithArch) {
  check_embed("vit-h-14", {"--model", data_path("openclip/vit-h-14.safetensors"), "--arch", "ViT-H-14"});
}

TEST(CliOpenClip, BareFileWithoutArchWarnsOnce) {
  const auto r = run_cli({"embed", "--model", data_path("openclip/vit-h-14.safetensors"), "--text", "a cat"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("clipkit embed: warning: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("--arch NAME"), std::string::npos) << r.err;
  const auto i = run_cli({"info", "--model", data_path("openclip/vit-h-14.safetensors")});
  ASSERT_EQ(i.exit_code, 0) << i.err;
  EXPECT_EQ(std::count(i.err.begin(), i.err.end(), '\n'), 1) << i.err;
  EXPECT_EQ(nlohmann::json::parse(i.out).at("config_source"), "assumed");
  // With --arch: no warning.
  const auto a = run_cli({"info", "--model", data_path("openclip/vit-h-14.safetensors"), "--arch", "ViT-H-14"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.err, "");
}

TEST(CliOpenClip, PreprocessWithTheModelsOwnSettings) {
  struct Case {
    const char* name;
    std::vector<std::string> model;
  };
  const std::vector<Case> cases = {
      {"vit-h-14-378-quickgelu", {"--model", data_path("openclip/vit-h-14-378-quickgelu")}},  // squash
      {"rn50-quickgelu", {"--model", data_path("openclip/rn50-quickgelu")}},                  // mean = std = 0.5
      {"vit-h-14", {"--model", data_path("openclip/vit-h-14.safetensors"), "--arch", "ViT-H-14"}},
  };
  for (const Case& c : cases) {
    const nlohmann::json g = golden_json(c.name);
    const int n = g.at("preprocess").at("size").get<int>();
    const std::string dir = test::temp_dir();
    for (int i : {1, 5, 11}) {  // wide JPEG, RGBA, palette
      const nlohmann::json& im = g.at("images")[i];
      const std::string out = dir + "/" + std::to_string(i) + ".npy";
      std::vector<std::string> args = {"preprocess"};
      args.insert(args.end(), c.model.begin(), c.model.end());
      args.insert(args.end(), {"-o", out, image(im)});
      const auto r = run_cli(args);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_EQ(r.err, "");
      const Tensor t = read_npy(out);
      ASSERT_EQ(t.shape, (Shape{3, n, n})) << c.name;
      // The float32 bytes open_clip fed its model (sha256 in the golden JSON).
      const std::string got = sha256_hex(t.data, static_cast<size_t>(t.nbytes()));
      EXPECT_EQ(got, im.at("pixels_f32_sha256").get<std::string>()) << c.name << " image " << i;
    }
  }
  // --model gives the settings: the explicit ones are refused; --arch needs --model.
  const auto r = run_cli({"preprocess", "--model", data_path("openclip/rn50-quickgelu"), "--resolution", "64", "-o",
                          test::temp_dir() + "/x.npy", data_path("images/00_astronaut.png")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--resolution"), std::string::npos) << r.err;
  const auto a = run_cli({"preprocess", "--arch", "ViT-H-14", "--resolution", "64", "-o", test::temp_dir() + "/x.npy",
                          data_path("images/00_astronaut.png")});
  EXPECT_NE(a.exit_code, 0);
  EXPECT_NE(a.err.find("--arch needs --model"), std::string::npos) << a.err;
}

TEST(CliOpenClip, InfoShowsHeadWidthsActivationAndPreprocessing) {
  const auto r = run_cli({"info", "--model", data_path("openclip/vit-bigg-14")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["config_source"], "open_clip_config.json");
  EXPECT_EQ(j["architecture"]["vision_heads"], 2);
  EXPECT_EQ(j["architecture"]["vision_head_width"], 104);
  EXPECT_EQ(j["architecture"]["text_heads"], 2);
  EXPECT_EQ(j["architecture"]["text_head_width"], 4);
  EXPECT_EQ(j["architecture"]["activation"], "gelu");
  EXPECT_EQ(j["preprocess"]["resolution"], 28);
  EXPECT_EQ(j["preprocess"]["resize_mode"], "shortest");
  EXPECT_EQ(j["preprocess"]["interpolation"], "bicubic");
  const auto s = nlohmann::json::parse(run_cli({"info", "--model", data_path("openclip/vit-h-14-378-quickgelu")}).out);
  EXPECT_EQ(s["architecture"]["activation"], "quick_gelu");
  EXPECT_EQ(s["architecture"]["vision_head_width"], 80);
  EXPECT_EQ(s["preprocess"]["resize_mode"], "squash");
  const auto rn = nlohmann::json::parse(run_cli({"info", "--model", data_path("openclip/rn50-quickgelu")}).out);
  EXPECT_EQ(rn["architecture"]["kind"], "resnet");
  EXPECT_EQ(rn["architecture"]["vision_heads"], 4);  // 32 * 8 / 64
  EXPECT_EQ(rn["preprocess"]["mean"][0], 0.5);
}

TEST(CliOpenClip, ListArchs) {
  const auto r = run_cli({"list", "archs", "--format", "csv"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 28);  // header + 27 names
  EXPECT_NE(r.out.find("\nRN50,"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nViT-H-14,vit 224/14,gelu,80,"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nViT-bigG-14,vit 224/14,gelu,104,4.9231,"), std::string::npos) << r.out;
  const auto j = run_cli({"list", "archs", "--format", "json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  std::vector<nlohmann::json> all;
  std::istringstream lines(j.out);
  for (std::string line; std::getline(lines, line);) all.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(all.size(), 27u);
  bool seen = false;
  for (const auto& a : all)
    if (a["name"] == "ViT-H-14-378-quickgelu") {
      seen = true;
      EXPECT_EQ(a["kind"], "vit");
      EXPECT_EQ(a["activation"], "quick_gelu");
      EXPECT_EQ(a["vision_head_width"], 80);
      EXPECT_EQ(a["image_size"], 378);
      EXPECT_EQ(a["config"]["vision_cfg"]["patch_size"], 14);
    }
  EXPECT_TRUE(seen);
  const auto bad = run_cli({"list", "tags"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
}

namespace {

// `clipkit embed ARGS --image (3 fixture images) --text (2 fixture texts) --out F`: the rows, and
// what it printed on stderr.
std::vector<float> embed_rows(const std::string& name, std::vector<std::string> model_args, std::string* err) {
  const nlohmann::json g = golden_json(name);
  const std::string out = test::temp_dir() + "/rows.npy";
  std::vector<std::string> args = {"embed"};
  args.insert(args.end(), model_args.begin(), model_args.end());
  args.push_back("--image");
  for (int i = 0; i < 3; ++i) args.push_back(image(g.at("images")[i]));
  args.push_back("--text");
  for (int t = 0; t < 2; ++t) args.push_back(g.at("texts")[t].get<std::string>());
  args.insert(args.end(), {"--out", out});
  const auto r = run_cli(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  *err = r.err;
  return r.exit_code == 0 ? read_npy(out).to_f32() : std::vector<float>{};
}

}  // namespace

// A converted open_clip checkpoint carries the configuration it was read with (the --arch name, or
// the open_clip_config.json beside it) in its metadata: it loads again without --arch and without
// the warning, configured the same (head widths, activation, preprocessing), in every dtype.
TEST(CliOpenClip, ConvertCarriesTheConfiguration) {
  struct Case {
    const char* name;
    std::vector<std::string> source;  // how the original loads
    const char* config_source;        // what `info` says of the converted file
  };
  const std::vector<Case> cases = {
      {"vit-h-14", {"--model", data_path("openclip/vit-h-14.safetensors"), "--arch", "ViT-H-14"},
       "metadata open_clip_arch ViT-H-14"},
      {"vit-h-14-378-quickgelu", {"--model", data_path("openclip/vit-h-14-378-quickgelu")}, "metadata open_clip_config"},
      {"rn50-quickgelu", {"--model", data_path("openclip/rn50-quickgelu")}, "metadata open_clip_config"},
  };
  const std::string dir = test::temp_dir();
  for (const Case& c : cases) {
    const std::string in = c.source[1];
    std::vector<std::string> arch(c.source.begin() + 2, c.source.end());  // "--arch NAME" or nothing
    for (const char* dtype : {"f32", "f16", "int8"}) {
      const std::string what = std::string(c.name) + " " + dtype;
      const std::string out = dir + "/" + c.name + "-" + dtype + ".safetensors";
      std::vector<std::string> conv = {"convert", "--dtype", dtype};
      conv.insert(conv.end(), arch.begin(), arch.end());
      conv.insert(conv.end(), {in, out});
      const auto r = run_cli(conv);
      ASSERT_EQ(r.exit_code, 0) << what << ": " << r.err;
      const auto info = run_cli({"info", "--model", out});
      ASSERT_EQ(info.exit_code, 0) << info.err;
      EXPECT_EQ(info.err, "") << what;  // no "does not state" warning
      const auto j = nlohmann::json::parse(info.out);
      EXPECT_EQ(j["config_source"], c.config_source) << what;
      std::vector<std::string> src_info = {"info"};
      src_info.insert(src_info.end(), c.source.begin(), c.source.end());
      const auto s = nlohmann::json::parse(run_cli(src_info).out);
      EXPECT_EQ(j["architecture"], s["architecture"]) << what;
      EXPECT_EQ(j["preprocess"], s["preprocess"]) << what;
      if (std::string(dtype) == "f32") {
        check_embed(c.name, {"--model", out});  // the goldens, at f32 tolerance, without --arch
        continue;
      }
      // Stored f16 / int8: the same embeddings as the original computed in that dtype.
      std::string err_conv, err_src;
      const std::vector<float> got = embed_rows(c.name, {"--model", out, "--dtype", dtype}, &err_conv);
      std::vector<std::string> src = c.source;
      src.insert(src.end(), {"--dtype", dtype});
      const std::vector<float> want = embed_rows(c.name, src, &err_src);
      EXPECT_EQ(err_conv, "") << what;
      ASSERT_EQ(got.size(), want.size()) << what;
      ASSERT_FALSE(got.empty()) << what;
      // f16: the same rounded weights. int8: a ResNet's convolutions are stored int8 in the file but
      // kept float by `--dtype int8` on the original, hence the int8 tolerance; the configuration
      // itself is compared exactly above (architecture and preprocessing).
      const double min_cos = std::string(dtype) == "f16" ? 0.99999 : 0.999;
      const size_t dim = got.size() / 5;
      for (size_t row = 0; row < 5; ++row)
        EXPECT_GE(test::cosine(&got[row * dim], &want[row * dim], dim), min_cos) << what << " row " << row;
    }
  }
  // Converted again without --arch, a converted file keeps what it stores.
  const std::string again = dir + "/again.safetensors";
  ASSERT_EQ(run_cli({"convert", "--dtype", "f32", dir + "/vit-h-14-int8.safetensors", again}).exit_code, 0);
  const auto a = run_cli({"info", "--model", again});
  EXPECT_EQ(a.err, "");
  EXPECT_EQ(nlohmann::json::parse(a.out)["config_source"], "metadata open_clip_arch ViT-H-14");
  // An unknown name, or one that does not fit the tensors, is refused before anything is written.
  for (const char* bad : {"ViT-Nope-14", "RN50"}) {
    const std::string out = dir + "/bad.safetensors";
    const auto r = run_cli({"convert", "--dtype", "f32", "--arch", bad, data_path("openclip/vit-h-14.safetensors"), out});
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("clipkit convert: ", 0), 0u) << r.err;
    EXPECT_FALSE(std::ifstream(out).good()) << bad;
  }
}

// An index created with --arch records the name: `index add` and `search` on it load the recorded
// model configured the same way without --arch (a bare file alone would load with OpenAI's
// defaults and a warning, and fail the index's fingerprint check).
TEST(CliOpenClip, IndexRecordsTheArchitecture) {
  const std::string dir = test::temp_dir() + "/h14.idx";
  const std::string model = data_path("openclip/vit-h-14.safetensors");
  const auto c = run_cli({"index", "create", dir, "--model", model, "--arch", "ViT-H-14"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(c.err, "");
  const auto info = run_cli({"index", "info", dir, "--format", "json"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_EQ(nlohmann::json::parse(info.out)["model_arch"], "ViT-H-14");
  const auto add = run_cli({"index", "add", dir, data_path("images/00_astronaut.png"), data_path("images/02_coffee.png")});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  EXPECT_EQ(add.err.find("warning"), std::string::npos) << add.err;
  const auto s = run_cli({"search", dir, "--image", data_path("images/02_coffee.png"), "-k", "1", "--format", "json"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(s.err, "");
  const auto hit = nlohmann::json::parse(s.out.substr(0, s.out.find('\n')));
  EXPECT_NE(hit["path"].get<std::string>().find("02_coffee.png"), std::string::npos) << s.out;
  EXPECT_NEAR(hit["score"].get<double>(), 1.0, 1e-5);
  // A different name stated by hand is still checked against the index.
  const auto wrong = run_cli({"search", dir, "--text", "a cup", "--arch", "ViT-H-14-quickgelu"});
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.err.find("was built with model"), std::string::npos) << wrong.err;
  // An index of a model that states its own configuration records no name.
  const std::string dir2 = test::temp_dir() + "/bigg.idx";
  ASSERT_EQ(run_cli({"index", "create", dir2, "--model", data_path("openclip/vit-bigg-14")}).exit_code, 0);
  EXPECT_FALSE(nlohmann::json::parse(run_cli({"index", "info", dir2, "--format", "json"}).out).contains("model_arch"));
}
