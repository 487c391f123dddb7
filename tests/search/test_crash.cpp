// Crash safety: an ingest killed with SIGKILL mid-way loses at most its uncommitted batch; the
// index reopens consistent and a re-run resumes where it stopped.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "clipkit/index.h"
#include "search/search_helpers.h"
#include "support/test_support.h"

extern char** environ;
namespace fs = std::filesystem;
using namespace clipkit;

// Runs only as the child of SearchCrash.KillMidIngest (re-executed with a gtest filter).
TEST(SearchCrashChild, Ingest) {
  const char* dir = std::getenv("CLIPKIT_TEST_CRASH_INDEX");
  const char* src = std::getenv("CLIPKIT_TEST_CRASH_SOURCE");
  if (!dir || !src) GTEST_SKIP() << "helper for SearchCrash.KillMidIngest";
  test::FakeModel m;
  Index idx = Index::open(dir);
  AddOptions o;
  o.batch = 3;
  o.threads = 1;
  o.on_batch = [](const AddProgress&) { std::this_thread::sleep_for(std::chrono::milliseconds(300)); };
  idx.add_files({src}, m, o);
}

TEST(SearchCrash, KillMidIngest) {
  test::FakeModel m;
  const std::string src = test::temp_dir() + "/pics";
  fs::create_directories(src);
  const int n = 15;
  for (int k = 0; k < n; ++k) test::write_synthetic_png(src + "/p" + std::to_string(100 + k) + ".png", k);
  const std::string dir = test::temp_dir() + "/idx";
  { Index::create(dir, m.info()); }

  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  env.push_back("CLIPKIT_TEST_CRASH_INDEX=" + dir);
  env.push_back("CLIPKIT_TEST_CRASH_SOURCE=" + src);
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = fs::read_symlink("/proc/self/exe").string();
  std::string filter = "--gtest_filter=SearchCrashChild.Ingest";
  char* argv[] = {exe.data(), filter.data(), nullptr};
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 1);
    execve(exe.c_str(), argv, envp.data());
    _exit(127);
  }
  // Wait until two batches are committed, then kill.
  int64_t seen = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    try {
      Index ro = Index::open(dir, Index::Mode::ReadOnly);
      seen = ro.info().items;
    } catch (const std::exception&) {
    }
    if (seen >= 6) break;
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) FAIL() << "child exited early with status " << status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the child finished before it was killed";
  ASSERT_GE(seen, 6);

  int64_t committed = 0;
  {
    Index idx = Index::open(dir);
    VerifyReport v = idx.verify(true);
    EXPECT_TRUE(v.ok) << (v.problems.empty() ? "" : v.problems[0]);
    committed = idx.info().items;
    EXPECT_EQ(committed % 3, 0) << "only whole batches are committed";
    EXPECT_LT(committed, n);
    EXPECT_EQ(idx.info().files, committed);
  }
  {
    Index idx = Index::open(dir);
    AddReport r = idx.add_files({src}, m);
    EXPECT_EQ(r.skipped, committed);
    EXPECT_EQ(r.added, n - committed);
    EXPECT_EQ(r.failed, 0);
    EXPECT_EQ(idx.info().items, n);
    EXPECT_TRUE(idx.verify(true).ok);
  }
}
