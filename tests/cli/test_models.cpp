// `clipkit models list|download` against a local cpp-httplib server (the hidden --base-url option
// and $CLIPKIT_DOWNLOAD_BASE_URL point the official URLs at it).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

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
