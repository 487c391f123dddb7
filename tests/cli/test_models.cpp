// `clipkit models list|download` against a local cpp-httplib server (the hidden --base-url option
// and $CLIPKIT_DOWNLOAD_BASE_URL point the official URLs at it), and `--model ARCH/TAG` resolving to
// the open_clip download folder. Expected open_clip values: open_clip's pretrained.py,
// model_configs/*.json and docs/openclip_results.csv; the preprocess_cfg of the open_clip fixtures
// in tests/data/openclip (written by open_clip for those tags).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/mapped_file.h"
#include "io/checkpoint.h"
#include "io/local_server.h"
#include "support/test_support.h"

using namespace clipkit;
namespace fs = std::filesystem;

TEST(CliModels, ListShowsEveryOfficialCheckpoint) {
  auto r = test::run_cli({"models", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* name : {"RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14",
                           "ViT-L/14@336px", "openai/clip-vit-base-patch32", "openai/clip-vit-large-patch14-336"})
    EXPECT_NE(r.out.find(std::string(name) + " "), std::string::npos) << name;
  EXPECT_NE(r.out.find("https://openaipublic.azureedge.net/clip/models/"
                       "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt"),
            std::string::npos);
  EXPECT_NE(r.out.find("https://huggingface.co/openai/clip-vit-base-patch16"), std::string::npos);
}

TEST(CliModels, DownloadHuggingFaceFolder) {
  iotest::LocalServer server;
  for (const char* f : {"config.json", "preprocessor_config.json", "model.safetensors"})
    server.serve(std::string("/openai/clip-vit-base-patch32/resolve/main/") + f,
                 read_file(test::data_path(std::string("models/tiny-vit-hf/") + f)));
  const std::string dir = test::temp_dir();
  auto r = test::run_cli({"models", "download", "openai/clip-vit-base-patch32", "--dir", dir, "--base-url", server.base()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // sha256sum of the fixture files
  EXPECT_NE(r.out.find("05a6e88ed47c8425cd0e44258e27288f2af8c3252c2ad264f00f32f3138e87da"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("7361af1c38dd663927952f1761af797625f8ebeac036240a0a26f30b8b46c5b0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no published checksum"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model: " + dir + "/clip-vit-base-patch32"), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "");  // no progress bar when stderr is not a terminal
  EXPECT_EQ(load_checkpoint(dir + "/clip-vit-base-patch32").format, "hf");
}

TEST(CliModels, DownloadChecksumMismatchResumeAnd404) {
  iotest::LocalServer server;
  const std::string body = read_file(test::data_path("models/tiny-vit.pt"));
  // Serve the tiny fixture where ViT-B/32 is expected: its hash cannot match the published one.
  server.serve("/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt", body);
  const std::string dir = test::temp_dir();
  setenv("CLIPKIT_DOWNLOAD_BASE_URL", server.base().c_str(), 1);
  auto r = test::run_cli({"models", "download", "ViT-B/32", "--dir", dir});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("checksum mismatch"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("9466c8f154ec51d534b5ecec7b51ae694d66e1cb86b7171a5a9ad67336944900"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/ViT-B-32.pt"));
  EXPECT_FALSE(fs::exists(dir + "/ViT-B-32.pt.part"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;

  // Resume: a .part with the first bytes is continued with a Range request.
  for (const char* f : {"config.json", "preprocessor_config.json", "model.safetensors"})
    server.serve(std::string("/openai/clip-vit-base-patch16/resolve/main/") + f,
                 read_file(test::data_path(std::string("models/tiny-vit-hf/") + f)));
  const std::string hf = read_file(test::data_path("models/tiny-vit-hf/model.safetensors"));
  fs::create_directories(dir + "/clip-vit-base-patch16");
  {
    std::ofstream part(dir + "/clip-vit-base-patch16/model.safetensors.part", std::ios::binary);
    part.write(hf.data(), 4096);
  }
  server.reset_log();
  r = test::run_cli({"models", "download", "openai/clip-vit-base-patch16", "--dir", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(dir + "/clip-vit-base-patch16/model.safetensors"), hf);
  const auto ranges = server.ranges();
  EXPECT_NE(std::find(ranges.begin(), ranges.end(), "bytes=4096-"), ranges.end());

  // 404: nothing served for this repository.
  r = test::run_cli({"models", "download", "openai/clip-vit-large-patch14", "--dir", dir});
  unsetenv("CLIPKIT_DOWNLOAD_BASE_URL");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("HTTP 404"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/clip-vit-large-patch14/config.json"));

  r = test::run_cli({"models", "download", "ViT-Z/1", "--dir", dir});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown model 'ViT-Z/1'"), std::string::npos) << r.err;
}

namespace {

struct ScopedEnv {
  ScopedEnv(const char* name, const std::string& value) : name_(name) { setenv(name, value.c_str(), 1); }
  ~ScopedEnv() { unsetenv(name_); }
  const char* name_;
};

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> v;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) v.push_back(nlohmann::json::parse(line));
  return v;
}

const nlohmann::json* by_name(const std::vector<nlohmann::json>& v, const std::string& name) {
  for (const auto& j : v)
    if (j["name"] == name) return &j;
  return nullptr;
}

// sha256sum of tests/data/openclip/vit-bigg-14/open_clip_model.safetensors
const char* kBigGSha = "cda2d2b2547815cda6d60467f5837e4a7e4c88bf19b9983b750f4ad87ddc2fac";

}  // namespace

TEST(CliModels, ListShowsOpenClipTags) {
  auto r = test::run_cli({"models", "list", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rows = json_lines(r.out);
  ASSERT_NE(by_name(rows, "ViT-B/32"), nullptr);  // OpenAI's names stay listed
  const nlohmann::json* h = by_name(rows, "ViT-H-14/laion2b_s32b_b79k");
  ASSERT_NE(h, nullptr);
  EXPECT_EQ((*h)["kind"], "openclip");
  EXPECT_EQ((*h)["arch"], "ViT-H-14");
  EXPECT_EQ((*h)["tag"], "laion2b_s32b_b79k");
  EXPECT_EQ((*h)["hf_repo"], "laion/CLIP-ViT-H-14-laion2B-s32B-b79K");
  EXPECT_EQ((*h)["url"], "https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K/resolve/main/" +
                             (*h)["file"].get<std::string>());
  EXPECT_EQ((*h)["imagenet_top1"], 0.7796);
  EXPECT_EQ((*h)["params_millions"], 986.11);
  EXPECT_EQ((*h)["resize_mode"], "shortest");
  EXPECT_EQ((*h)["interpolation"], "bicubic");
  EXPECT_EQ((*h)["fill_color"], 0);
  EXPECT_EQ((*h)["mean"], nlohmann::json({0.48145466, 0.4578275, 0.40821073}));
  EXPECT_EQ((*h)["std"], nlohmann::json({0.26862954, 0.26130258, 0.27577711}));

  const nlohmann::json* dfn = by_name(rows, "ViT-H-14-378-quickgelu/dfn5b");
  ASSERT_NE(dfn, nullptr);
  EXPECT_EQ((*dfn)["hf_repo"], "apple/DFN5B-CLIP-ViT-H-14-378");
  EXPECT_EQ((*dfn)["resize_mode"], "squash");
  EXPECT_EQ((*dfn)["imagenet_top1"], 0.8437);
  const nlohmann::json* l14 = by_name(rows, "ViT-L-14/laion2b_s32b_b82k");
  ASSERT_NE(l14, nullptr);
  EXPECT_EQ((*l14)["mean"], nlohmann::json({0.5, 0.5, 0.5}));
  EXPECT_EQ((*l14)["std"], nlohmann::json({0.5, 0.5, 0.5}));
  EXPECT_EQ((*l14)["imagenet_top1"], 0.7525);
  for (const char* name : {"ViT-B-32/laion2b_s34b_b79k", "RN50-quickgelu/openai", "ViT-bigG-14/laion2b_s39b_b160k",
                           "ViT-g-14/laion2b_s34b_b88k", "ViT-L-14/datacomp_xl_s13b_b90k", "ViT-L-14-quickgelu/dfn2b",
                           "ViT-bigG-14-quickgelu/metaclip_fullcc"})
    EXPECT_NE(by_name(rows, name), nullptr) << name;
  EXPECT_EQ((*by_name(rows, "ViT-bigG-14-quickgelu/metaclip_fullcc"))["imagenet_top1"], nullptr);  // none published

  r = test::run_cli({"models", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* cell : {"ViT-H-14-378-quickgelu/dfn5b ", "84.37%", "squash bicubic", "apple/DFN5B-CLIP-ViT-H-14-378 ",
                           "mean=std=0.5", "ViT-B/32 "})
    EXPECT_NE(r.out.find(cell), std::string::npos) << cell;
  r = test::run_cli({"models", "list", "--format", "xml"});
  EXPECT_EQ(r.exit_code, 2);  // a usage error
  EXPECT_NE(r.err.find("must be table, json or csv, not 'xml'"), std::string::npos) << r.err;
}

TEST(CliModels, DownloadOpenClipWritesWeightsAndConfig) {
  iotest::LocalServer server;
  const std::string body = read_file(test::data_path("openclip/vit-bigg-14/open_clip_model.safetensors"));
  const std::string dfn = "/apple/DFN5B-CLIP-ViT-H-14-378/resolve/main/open_clip_pytorch_model.bin";
  const std::string l14 = "/laion/CLIP-ViT-L-14-laion2B-s32B-b82K/resolve/main/open_clip_pytorch_model.bin";
  for (const auto& p : {dfn, l14}) {
    server.serve(p, body);
    server.header(p, "X-Linked-Etag", std::string("\"") + kBigGSha + "\"");
  }
  const std::string home = test::temp_dir();
  ScopedEnv env("CLIPKIT_HOME", home);
  auto r = test::run_cli({"models", "download", "ViT-H-14-378-quickgelu/dfn5b", "--base-url", server.base()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string dir = home + "/openclip/ViT-H-14-378-quickgelu/dfn5b";
  EXPECT_EQ(read_file(dir + "/open_clip_pytorch_model.bin"), body);
  EXPECT_NE(r.out.find(std::string(kBigGSha) + "  (verified)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model: ViT-H-14-378-quickgelu/dfn5b (" + dir + ")"), std::string::npos) << r.out;
  auto cfg = nlohmann::json::parse(read_file(dir + "/open_clip_config.json"));
  // open_clip's model_configs/ViT-H-14-378-quickgelu.json
  EXPECT_EQ(cfg["model_cfg"], nlohmann::json::parse(R"({"embed_dim": 1024, "quick_gelu": true,
      "vision_cfg": {"image_size": 378, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
      "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}})"));
  // The preprocess_cfg open_clip wrote for a dfn5b model (squash), plus the fill colour it resolves.
  auto want = nlohmann::json::parse(read_file(test::data_path("openclip/vit-h-14-378-quickgelu/open_clip_config.json")));
  auto pre = cfg["preprocess_cfg"];
  for (const char* k : {"mean", "std", "interpolation", "resize_mode"}) EXPECT_EQ(pre[k], want["preprocess_cfg"][k]) << k;
  EXPECT_EQ(pre["resize_mode"], "squash");
  EXPECT_EQ(pre["fill_color"], 0);

  // ViT-L-14/laion2b_s32b_b82k: mean = std = 0.5 (as in the rn50-quickgelu fixture, which borrowed them).
  r = test::run_cli({"models", "download", "ViT-L-14:laion2b-s32b-b82k", "--base-url", server.base()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  cfg = nlohmann::json::parse(read_file(home + "/openclip/ViT-L-14/laion2b_s32b_b82k/open_clip_config.json"));
  want = nlohmann::json::parse(read_file(test::data_path("openclip/rn50-quickgelu/open_clip_config.json")));
  for (const char* k : {"mean", "std", "interpolation", "resize_mode"})
    EXPECT_EQ(cfg["preprocess_cfg"][k], want["preprocess_cfg"][k]) << k;
  // open_clip's model_configs/ViT-L-14.json
  EXPECT_EQ(cfg["model_cfg"], nlohmann::json::parse(R"({"embed_dim": 768,
      "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
      "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12}})"));

  // Again: the verified file is kept, nothing is transferred.
  server.reset_log();
  r = test::run_cli({"models", "download", "ViT-L-14/laion2b_s32b_b82k", "--base-url", server.base()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(already present, verified)"), std::string::npos) << r.out;
  EXPECT_TRUE(server.ranges().empty());
}

TEST(CliModels, DownloadOpenClipResumesAfterCutAndRefusesMismatch) {
  iotest::LocalServer server;
  const std::string body = read_file(test::data_path("openclip/vit-bigg-14/open_clip_model.safetensors"));
  const std::string path = "/laion/CLIP-ViT-bigG-14-laion2B-39B-b160k/resolve/main/open_clip_pytorch_model.bin";
  server.serve(path, body);
  server.header(path, "X-Linked-Etag", std::string("\"") + kBigGSha + "\"");
  const std::string home = test::temp_dir();
  ScopedEnv env("CLIPKIT_HOME", home);
  const std::string dir = home + "/openclip/ViT-bigG-14/laion2b_s39b_b160k";

  // The transfer stops after 1 MiB: the partial file is kept, nothing is configured.
  server.cut_next(path, 1 << 20);
  auto r = test::run_cli({"models", "download", "ViT-bigG-14/laion2b_s39b_b160k", "--base-url", server.base()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("resume"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  ASSERT_TRUE(fs::exists(dir + "/open_clip_pytorch_model.bin.part"));
  const auto kept = fs::file_size(dir + "/open_clip_pytorch_model.bin.part");
  EXPECT_GT(kept, 0u);
  EXPECT_LE(kept, 1u << 20);
  EXPECT_FALSE(fs::exists(dir + "/open_clip_config.json"));

  // The rerun continues from the kept bytes and verifies the whole file.
  server.reset_log();
  r = test::run_cli({"models", "download", "ViT-bigG-14/laion2b_s39b_b160k", "--base-url", server.base()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(resumed, verified)"), std::string::npos) << r.out;
  const auto ranges = server.ranges();
  EXPECT_NE(std::find(ranges.begin(), ranges.end(), "bytes=" + std::to_string(kept) + "-"), ranges.end());
  EXPECT_EQ(read_file(dir + "/open_clip_pytorch_model.bin"), body);
  EXPECT_TRUE(fs::exists(dir + "/open_clip_config.json"));

  // A published checksum the bytes do not match: refused, nothing kept.
  const std::string cp = "/laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K/resolve/main/open_clip_pytorch_model.bin";
  server.serve(cp, body);
  server.header(cp, "X-Linked-Etag", "\"" + std::string(64, 'a') + "\"");
  r = test::run_cli({"models", "download", "ViT-B-32/datacomp_xl_s13b_b90k", "--base-url", server.base()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("checksum mismatch"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(kBigGSha), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  const std::string cpdir = home + "/openclip/ViT-B-32/datacomp_xl_s13b_b90k";
  EXPECT_FALSE(fs::exists(cpdir + "/open_clip_pytorch_model.bin"));
  EXPECT_FALSE(fs::exists(cpdir + "/open_clip_pytorch_model.bin.part"));
  EXPECT_FALSE(fs::exists(cpdir + "/open_clip_config.json"));

  // Names that are near misses get a hint instead of a download.
  r = test::run_cli({"models", "download", "ViT-H-14/dfn5b", "--base-url", server.base()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("use 'ViT-H-14-quickgelu/dfn5b'"), std::string::npos) << r.err;
  r = test::run_cli({"models", "download", "ViT-B-32/no_such_tag", "--base-url", server.base()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown open_clip tag 'no_such_tag'"), std::string::npos) << r.err;
}

TEST(CliModels, ModelArchTagResolvesToTheDownloadFolder) {
  const std::string home = test::temp_dir();
  ScopedEnv env("CLIPKIT_HOME", home);
  // Not downloaded: every verb that loads a model names the command that fetches it.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"info", "--model", "ViT-bigG-14/laion2b_s39b_b160k"},
        std::vector<std::string>{"embed", "--model", "ViT-bigG-14/laion2b_s39b_b160k", "--text", "a cat"}}) {
    auto r = test::run_cli(args);
    EXPECT_EQ(r.exit_code, 1) << args[0];
    EXPECT_NE(r.err.find("fetch it with `clipkit models download ViT-bigG-14/laion2b_s39b_b160k`"), std::string::npos)
        << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  // Laid out as `models download` leaves it (the open_clip fixture standing for this tag): the name
  // reads the folder's weights, no network involved.
  const std::string dir = home + "/openclip/ViT-bigG-14/laion2b_s39b_b160k";
  fs::create_directories(dir);
  fs::copy_file(test::data_path("openclip/vit-bigg-14/open_clip_model.safetensors"), dir + "/open_clip_pytorch_model.bin");
  fs::copy_file(test::data_path("openclip/vit-bigg-14/open_clip_config.json"), dir + "/open_clip_config.json");
  const std::string out = test::temp_dir() + "/bigg.safetensors";
  auto r = test::run_cli({"convert", "--dtype", "f32", "ViT-bigG-14/laion2b_s39b_b160k", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Checkpoint converted = load_checkpoint(out);
  const Checkpoint fixture = load_checkpoint(test::data_path("openclip/vit-bigg-14/open_clip_model.safetensors"));
  ASSERT_EQ(converted.tensors.size(), fixture.tensors.size());
  for (const auto& [name, t] : fixture.tensors) {
    if (!t.is_float()) continue;
    EXPECT_EQ(converted.f32(name), t.to_f32()) << name;
  }

  // A model verb: the OpenAI-architecture fixture tiny-vit laid out under an ARCH/TAG name, with an
  // open_clip_config.json describing its architecture (tests/data/golden/tiny-vit.json "config"),
  // embeds exactly as the file itself.
  const std::string tdir = home + "/openclip/ViT-B-32-quickgelu/openai";
  fs::create_directories(tdir);
  fs::copy_file(test::data_path("models/tiny-vit.safetensors"), tdir + "/open_clip_model.safetensors");
  const nlohmann::json cfg = {
      {"model_cfg",
       {{"embed_dim", 64},
        {"quick_gelu", true},
        {"vision_cfg", {{"image_size", 64}, {"layers", 2}, {"width", 128}, {"patch_size", 16}}},
        {"text_cfg", {{"context_length", 77}, {"vocab_size", 49408}, {"width", 64}, {"heads", 1}, {"layers", 2}}}}},
      {"preprocess_cfg",
       {{"mean", {0.48145466, 0.4578275, 0.40821073}},
        {"std", {0.26862954, 0.26130258, 0.27577711}},
        {"interpolation", "bicubic"},
        {"resize_mode", "shortest"},
        {"fill_color", 0}}}};
  {
    std::ofstream f(tdir + "/open_clip_config.json");
    f << cfg.dump(2);
  }
  const std::vector<std::string> texts = {"--text", "a photo of a cat", "--text", "a diagram"};
  std::vector<std::string> named_args = {"embed", "--model", "ViT-B-32-quickgelu/openai"};
  std::vector<std::string> file_args = {"embed", "--model", test::data_path("models/tiny-vit.safetensors")};
  named_args.insert(named_args.end(), texts.begin(), texts.end());
  file_args.insert(file_args.end(), texts.begin(), texts.end());
  r = test::run_cli(named_args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto direct = test::run_cli(file_args);
  ASSERT_EQ(direct.exit_code, 0) << direct.err;
  EXPECT_FALSE(r.out.empty());
  EXPECT_EQ(r.out, direct.out);

  // The model's path is the folder, so what records it (an index) finds the model again.
  r = test::run_cli({"info", "--model", "ViT-B-32-quickgelu/openai"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["path"], tdir);
  const std::string idx = test::temp_dir() + "/idx";
  r = test::run_cli({"index", "create", idx, "--model", "ViT-B-32-quickgelu/openai"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_cli({"index", "info", idx});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(tdir), std::string::npos) << r.out;
}
