// Downloads against a local cpp-httplib server: success, resume from a partial .part file,
// checksum mismatch, HTTP errors, redirects. Expected digests are the fixtures' SHA-256 sums
// computed with coreutils `sha256sum` (and the FIPS 180-2 test vector for "abc").
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "clipkit/error.h"
#include "core/mapped_file.h"
#include "io/checkpoint.h"
#include "io/download.h"
#include "io/local_server.h"
#include "support/test_support.h"

using namespace clipkit;
namespace fs = std::filesystem;

namespace {

const char* kPtSha = "9466c8f154ec51d534b5ecec7b51ae694d66e1cb86b7171a5a9ad67336944900";  // tiny-vit.pt

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

DownloadOptions local(const iotest::LocalServer& s) {
  DownloadOptions o;
  o.base_url = s.base();
  o.connect_timeout_s = 5;
  o.read_timeout_s = 10;
  return o;
}

const std::string kUrl = "https://example.invalid/clip/models/tiny-vit.pt";

}  // namespace

TEST(Download, Sha256) {
  EXPECT_EQ(sha256_digest_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_digest_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_file(test::data_path("models/tiny-vit.pt")), kPtSha);
}

TEST(Download, KnownModels) {
  // The nine OpenAI checkpoints, each URL carrying its SHA-256 as the folder name.
  int openai = 0;
  for (const auto& m : known_models()) {
    if (m.kind != "openai-jit") continue;
    ++openai;
    ASSERT_EQ(m.files.size(), 1u);
    const auto& f = m.files[0];
    EXPECT_EQ(f.sha256.size(), 64u);
    EXPECT_EQ(f.url, "https://openaipublic.azureedge.net/clip/models/" + f.sha256 + "/" + f.name);
  }
  EXPECT_EQ(openai, 9);
  ASSERT_NE(find_model("ViT-B/32"), nullptr);
  EXPECT_EQ(find_model("vit-b-32"), find_model("ViT-B/32"));
  EXPECT_EQ(find_model("ViT-L/14@336px")->files[0].name, "ViT-L-14-336px.pt");
  EXPECT_EQ(find_model("ViT-B/32")->files[0].sha256, "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af");
  const ModelSource* hf = find_model("openai/clip-vit-base-patch32");
  ASSERT_NE(hf, nullptr);
  EXPECT_EQ(hf->kind, "hf");
  EXPECT_EQ(hf->files.back().url, "https://huggingface.co/openai/clip-vit-base-patch32/resolve/main/model.safetensors");
  EXPECT_EQ(find_model("ViT-H/14"), nullptr);
  EXPECT_EQ(rebase_url("https://huggingface.co/a/b/resolve/main/x.json", "http://127.0.0.1:9/"),
            "http://127.0.0.1:9/a/b/resolve/main/x.json");
}

TEST(Download, SuccessVerifiesAndRenames) {
  iotest::LocalServer server;
  const std::string body = read_file(test::data_path("models/tiny-vit.pt"));
  server.serve("/clip/models/tiny-vit.pt", body);
  const std::string dir = test::temp_dir();
  const std::string dest = dir + "/sub/tiny-vit.pt";
  uint64_t last = 0;
  DownloadOptions o = local(server);
  o.progress = [&](const std::string& file, uint64_t done, uint64_t total) {
    EXPECT_EQ(file, "tiny-vit.pt");
    EXPECT_EQ(total, body.size());
    EXPECT_GE(done, last);
    last = done;
  };
  DownloadResult r = download_file(kUrl, dest, kPtSha, o);
  EXPECT_EQ(r.sha256, kPtSha);
  EXPECT_TRUE(r.verified);
  EXPECT_EQ(r.bytes, body.size());
  EXPECT_EQ(r.fetched, body.size());
  EXPECT_EQ(last, body.size());
  EXPECT_EQ(read_file(dest), body);
  EXPECT_FALSE(fs::exists(dest + ".part"));
  EXPECT_EQ(load_checkpoint(dest).format, "openai-jit");
  // A second call finds the verified file and fetches nothing.
  server.reset_log();
  DownloadResult again = download_file(kUrl, dest, kPtSha, o);
  EXPECT_TRUE(again.already_present);
  EXPECT_TRUE(server.ranges().empty());
}

TEST(Download, ResumesFromPartialFile) {
  iotest::LocalServer server;
  const std::string body = read_file(test::data_path("models/tiny-vit.pt"));
  server.serve("/clip/models/tiny-vit.pt", body);
  const std::string dest = test::temp_dir() + "/tiny-vit.pt";
  const size_t half = body.size() / 2 + 123;
  write_bytes(dest + ".part", body.substr(0, half));
  DownloadResult r = download_file(kUrl, dest, kPtSha, local(server));
  EXPECT_EQ(r.resumed_from, half);
  EXPECT_EQ(r.fetched, body.size() - half);
  ASSERT_EQ(server.ranges().size(), 1u);
  EXPECT_EQ(server.ranges()[0], "bytes=" + std::to_string(half) + "-");
  EXPECT_EQ(read_file(dest), body);
  EXPECT_FALSE(fs::exists(dest + ".part"));

  // A .part that already holds the whole file (the server answers 416) is verified and kept.
  const std::string dest2 = test::temp_dir() + "/tiny-vit.pt";
  write_bytes(dest2 + ".part", body);
  DownloadResult r2 = download_file(kUrl, dest2, kPtSha, local(server));
  EXPECT_EQ(r2.fetched, 0u);
  EXPECT_EQ(read_file(dest2), body);
}

TEST(Download, ChecksumMismatchRemovesPartial) {
  iotest::LocalServer server;
  const std::string body = read_file(test::data_path("models/tiny-vit.pt"));
  server.serve("/clip/models/tiny-vit.pt", body);
  const std::string dest = test::temp_dir() + "/tiny-vit.pt";
  const std::string wrong(64, 'a');
  try {
    download_file(kUrl, dest, wrong, local(server));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Mismatch);
    const std::string msg = e.what();
    EXPECT_NE(msg.find(wrong), std::string::npos) << msg;
    EXPECT_NE(msg.find(kPtSha), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(dest));
  EXPECT_FALSE(fs::exists(dest + ".part"));

  // A corrupt partial file makes the resumed result mismatch: removed, and the next run succeeds.
  std::string bad = body.substr(0, 1000);
  bad[10] ^= 1;
  write_bytes(dest + ".part", bad);
  EXPECT_THROW(download_file(kUrl, dest, kPtSha, local(server)), Error);
  EXPECT_FALSE(fs::exists(dest + ".part"));
  EXPECT_FALSE(fs::exists(dest));
  EXPECT_EQ(download_file(kUrl, dest, kPtSha, local(server)).sha256, kPtSha);

  // An existing final file with the wrong content is replaced only by a verified download.
  write_bytes(dest, "stale");
  EXPECT_EQ(download_file(kUrl, dest, kPtSha, local(server)).sha256, kPtSha);
  EXPECT_EQ(read_file(dest), body);
}

TEST(Download, HttpErrorsAndRedirects) {
  iotest::LocalServer server;
  server.serve("/files/abc.txt", "abc");
  server.redirect("/clip/models/moved.txt", "/files/abc.txt");
  const std::string dir = test::temp_dir();
  try {
    download_file("https://example.invalid/missing.pt", dir + "/missing.pt", "", local(server));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
    EXPECT_NE(std::string(e.what()).find("HTTP 404"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir + "/missing.pt"));
  EXPECT_FALSE(fs::exists(dir + "/missing.pt.part"));
  // Redirects are followed; without a known checksum the computed one is reported.
  DownloadResult r = download_file("https://example.invalid/clip/models/moved.txt", dir + "/abc.txt", "", local(server));
  EXPECT_FALSE(r.verified);
  EXPECT_EQ(r.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(read_file(dir + "/abc.txt"), "abc");
  // Under a base-URL override, a redirect to another host is rebased onto the override like the
  // first URL (nothing is fetched from elsewhere), and a redirect loop ends in a clear error.
  server.redirect("/clip/models/cdn.txt", "https://cdn.example.invalid/files/abc.txt");
  r = download_file("https://example.invalid/clip/models/cdn.txt", dir + "/cdn.txt", "", local(server));
  EXPECT_EQ(read_file(dir + "/cdn.txt"), "abc");
  server.redirect("/clip/models/loop.txt", "/clip/models/loop.txt");
  try {
    download_file("https://example.invalid/clip/models/loop.txt", dir + "/loop.txt", "", local(server));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too many redirects"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir + "/loop.txt"));
  // Nothing listening: a clear I/O error.
  DownloadOptions o;
  o.base_url = "http://127.0.0.1:1";
  o.connect_timeout_s = 2;
  EXPECT_THROW(download_file(kUrl, dir + "/x.pt", "", o), Error);
  EXPECT_THROW(download_file("ftp://x/y", dir + "/y", "", {}), Error);
}

TEST(Download, EnvironmentBaseUrlAndHfModel) {
  iotest::LocalServer server;
  for (const char* f : {"config.json", "preprocessor_config.json", "model.safetensors"})
    server.serve(std::string("/openai/clip-vit-base-patch32/resolve/main/") + f,
                 read_file(test::data_path(std::string("models/tiny-vit-hf/") + f)));
  setenv("CLIPKIT_DOWNLOAD_BASE_URL", server.base().c_str(), 1);
  const std::string dir = test::temp_dir();
  auto results = download_model("openai/clip-vit-base-patch32", dir);
  unsetenv("CLIPKIT_DOWNLOAD_BASE_URL");
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[2].sha256, "05a6e88ed47c8425cd0e44258e27288f2af8c3252c2ad264f00f32f3138e87da");
  const std::string path = model_path(*find_model("openai/clip-vit-base-patch32"), dir);
  EXPECT_EQ(path, dir + "/clip-vit-base-patch32");
  Checkpoint ck = load_checkpoint(path);
  EXPECT_EQ(ck.format, "hf");
  EXPECT_EQ(ck.hf_config["text_config"]["hidden_act"], "quick_gelu");
  EXPECT_THROW(download_model("ViT-X/99", dir), Error);
}
