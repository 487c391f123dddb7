// clipkit index create/add/remove/info/verify/rebuild with the tiny-vit fixture model, including a
// SIGKILL in the middle of `index add` followed by verify and resume.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "clipkit/index.h"
#include "search/cli_helpers.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using namespace clipkit;

namespace {


nlohmann::json info_json(const std::string& dir) {
  auto r = test::run_cli({"index", "info", dir, "--format", "json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

}  // namespace

TEST(CliIndex, CreateAddInfoVerifyRemoveRebuild) {
  std::vector<std::string> names;
  const std::string imgs = test::fixture_image_folder(&names);
  fs::create_directories(imgs + "/more");
  fs::copy_file(imgs + "/" + names[0], imgs + "/more/copy.png");
  std::ofstream(imgs + "/more/broken.jpg") << "not a jpeg";
  const std::string dir = test::temp_dir() + "/idx";

  auto r = test::run_cli({"index", "create", dir, "--model", test::tiny_vit_path()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_cli({"index", "create", dir, "--model", test::tiny_vit_path()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;

  r = test::run_cli({"index", "add", dir, imgs, "--recursive", "--batch", "5", "--tag", "fixtures"});
  EXPECT_EQ(r.exit_code, 1) << "one file is broken";
  EXPECT_NE(r.out.find("added " + std::to_string(names.size()) + ", updated 0, duplicates 1, skipped 0, failed 1"), std::string::npos)
      << r.out;
  EXPECT_NE(r.err.find("broken.jpg"), std::string::npos) << r.err;
  EXPECT_EQ(test::non_warning_lines(r.err), 2) << r.err;  // the failure + the error line

  auto j = info_json(dir);
  EXPECT_EQ(j["items"], static_cast<int>(names.size()));
  EXPECT_EQ(j["files"], static_cast<int>(names.size()) + 1);
  EXPECT_EQ(j["dim"], 64);
  EXPECT_EQ(j["kind"], "flat");
  EXPECT_EQ(j["model_path"], fs::absolute(test::tiny_vit_path()).lexically_normal().string());

  r = test::run_cli({"index", "info", dir});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("items:       12 unique contents"), std::string::npos) << r.out;

  r = test::run_cli({"index", "verify", dir, "--deep"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("ok: 12 items, 13 paths, 12 vectors, 13 files re-hashed"), std::string::npos) << r.out;

  // Second run: unchanged files are skipped.
  fs::remove(imgs + "/more/broken.jpg");
  r = test::run_cli({"index", "add", dir, imgs, "-r"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("added 0, updated 0, duplicates 0, skipped 13, failed 0"), std::string::npos) << r.out;

  // Remove a file and a folder; a path that is not indexed is reported.
  r = test::run_cli({"index", "remove", dir, imgs + "/" + names[1], imgs + "/more"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("removed 2 path(s); index holds 11 items"), std::string::npos) << r.out;
  r = test::run_cli({"index", "remove", dir, imgs + "/nope.png"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not indexed: " + imgs + "/nope.png"), std::string::npos) << r.err;

  for (const char* kind : {"hnsw", "IVF4,Flat", "flat"}) {
    r = test::run_cli({"index", "rebuild", dir, "--kind", kind, "--train-min", "11"});
    EXPECT_EQ(r.exit_code, 0) << kind << r.err;
    EXPECT_EQ(info_json(dir)["kind"], kind);
    r = test::run_cli({"index", "verify", dir});
    EXPECT_EQ(r.exit_code, 0) << kind << r.out;
  }
  r = test::run_cli({"index", "rebuild", dir, "--kind", "Bogus99"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("Bogus99"), std::string::npos);
}

TEST(CliIndex, ModelMismatchAndMissingIndex) {
  const std::string imgs = test::fixture_image_folder();
  const std::string dir = test::temp_dir() + "/idx";
  ASSERT_EQ(test::run_cli({"index", "create", dir, "--model", test::tiny_vit_path()}).exit_code, 0);
  auto r = test::run_cli({"index", "add", dir, imgs, "--model", test::data_path("models/tiny-rn.safetensors")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("was built with model " + fs::absolute(test::tiny_vit_path()).lexically_normal().string()), std::string::npos)
      << r.err;
  EXPECT_EQ(info_json(dir)["items"], 0);
  r = test::run_cli({"index", "info", test::temp_dir() + "/none"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  r = test::run_cli({"index", "create", test::temp_dir() + "/x", "--model", test::tiny_vit_path(), "--kind", "IVF8,PQ5"});
  EXPECT_EQ(r.exit_code, 1);  // 64 is not a multiple of 5
  EXPECT_NE(r.err.find("IVF8,PQ5"), std::string::npos) << r.err;
}

TEST(CliIndex, CorruptFilesGiveClearErrors) {
  const std::string imgs = test::fixture_image_folder();
  const std::string dir = test::temp_dir() + "/idx";
  ASSERT_EQ(test::run_cli({"index", "create", dir, "--model", test::tiny_vit_path()}).exit_code, 0);
  ASSERT_EQ(test::run_cli({"index", "add", dir, imgs}).exit_code, 0);
  // Corrupt vector cache: rebuilt from the catalog, with a note; nothing lost.
  {
    std::fstream io(dir + "/vectors.faiss", std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(100);
    io.write("\xff\xff\xff\xff", 4);
  }
  auto r = test::run_cli({"index", "verify", dir});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("corrupt"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ok: 12 items"), std::string::npos) << r.out;
  // Corrupt catalog: one clear line, exit 1.
  {
    std::fstream io(dir + "/catalog.sqlite", std::ios::in | std::ios::out | std::ios::binary);
    io.write("XXXXXXXXXXXXXXXXXXXXXXXX", 24);
  }
  r = test::run_cli({"index", "info", dir});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("catalog.sqlite"), std::string::npos) << r.err;
}

TEST(CliIndex, KillDuringAddThenVerifyAndResume) {
  std::vector<std::string> names;
  const std::string imgs = test::fixture_image_folder(&names);
  const std::string dir = test::temp_dir() + "/idx";
  ASSERT_EQ(test::run_cli({"index", "create", dir, "--model", test::tiny_vit_path()}).exit_code, 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("CLIPKIT_TEST_BATCH_DELAY_MS", "400", 1);
    const int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
      dup2(devnull, 1);
      dup2(devnull, 2);
    }
    std::string exe = CLIPKIT_CLI_PATH;
    std::vector<std::string> args = {exe, "index", "add", dir, imgs, "--batch", "2", "--threads", "1"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(exe.c_str(), argv.data());
    _exit(127);
  }
  int64_t seen = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline && seen < 4) {
    try {
      seen = Index::open(dir, Index::Mode::ReadOnly).info().items;
    } catch (const std::exception&) {
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) FAIL() << "clipkit index add exited early, status " << status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  ASSERT_GE(seen, 4);

  auto r = test::run_cli({"index", "verify", dir, "--deep"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  const int64_t committed = info_json(dir)["items"].get<int64_t>();
  EXPECT_EQ(committed % 2, 0);
  EXPECT_LT(committed, static_cast<int64_t>(names.size()));
  r = test::run_cli({"index", "add", dir, imgs});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("added " + std::to_string(names.size() - static_cast<size_t>(committed)) + ", updated 0, duplicates 0, skipped " +
                       std::to_string(committed)),
            std::string::npos)
      << r.out;
  r = test::run_cli({"index", "verify", dir, "--deep"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(info_json(dir)["items"], static_cast<int>(names.size()));
}
