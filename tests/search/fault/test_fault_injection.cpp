// Storage faults along an ingest: `clipkit index add` runs with the N-th write, pwrite, ftruncate,
// fsync, fdatasync or rename failing (fault_inject.cpp, loaded with LD_PRELOAD), for N = 1, 2, ...
// until an ingest completes without reaching the fault. After every run the command has ended
// with a one-line error (or success), the index passes `index verify --deep`, every file the
// command reported committed is still there, and a clean rerun completes the index.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>

#include "search/cli_helpers.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using namespace clipkit;

namespace {

// The sweeps run hundreds of ingests, each syncing its files: on a memory file system those syncs
// cost nothing (the faults are injected, not waited for). A TMPDIR set by the caller wins.
[[maybe_unused]] const bool g_tmp_in_memory = [] {
  if (getenv("TMPDIR") || ::access("/dev/shm", W_OK | X_OK) != 0) return false;
  setenv("TMPDIR", "/dev/shm", 1);
  return true;
}();

struct Verified {
  bool ok = false;
  int64_t items = -1, paths = -1;
  std::string text;
};

Verified verify_deep(const std::string& dir) {
  const auto r = test::run_cli({"index", "verify", dir, "--deep", "--format", "json"});
  Verified v;
  v.text = r.out + r.err;
  const auto lines = test::json_lines(r.out);
  if (r.exit_code != 0 || lines.empty()) return v;
  v.ok = lines.back()["ok"].get<bool>();
  v.items = lines.back()["items"].get<int64_t>();
  v.paths = lines.back()["paths"].get<int64_t>();
  return v;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Sets the fault variables for the next run_cli call and clears them again.
class FaultEnv {
 public:
  FaultEnv(long at, const std::string& err, bool sticky, const std::string& report) {
    setenv("LD_PRELOAD", CLIPKIT_FAULT_LIBRARY, 1);
    setenv("CLIPKIT_FAULT_AT", std::to_string(at).c_str(), 1);
    setenv("CLIPKIT_FAULT_ERRNO", err.c_str(), 1);
    setenv("CLIPKIT_FAULT_STICKY", sticky ? "1" : "0", 1);
    setenv("CLIPKIT_FAULT_REPORT", report.c_str(), 1);
  }
  ~FaultEnv() {
    for (const char* v : {"LD_PRELOAD", "CLIPKIT_FAULT_AT", "CLIPKIT_FAULT_ERRNO", "CLIPKIT_FAULT_STICKY", "CLIPKIT_FAULT_REPORT"})
      unsetenv(v);
  }
};

// Runs the ingest with the fault at N = 1, 2, ... and checks the index after each; returns the
// number of fault points exercised (runs that reached their fault).
int sweep(const std::string& err, bool sticky, int* acknowledged_runs) {
  // A small ingest: the four smallest fixture images, two per commit, so that faults come before,
  // between and after committed batches. Every run starts from a copy of one empty index.
  const std::string root = test::temp_dir();
  const std::string images = root + "/images";
  fs::create_directories(images);
  for (const char* name : {"08_pixel_1x1.png", "09_tiny_7x5.png", "10_small_40x50.png", "11_palette.png"})
    fs::copy_file(test::data_path(std::string("images/") + name), images + "/" + name);
  const int64_t n_files = 4;
  const std::string empty = root + "/empty.idx";
  {
    const auto r = test::run_cli({"index", "create", empty, "--model", test::tiny_vit_path(), "--threads", "1"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (r.exit_code != 0) return 0;
  }
  const std::regex acked_re("(?:all )?([0-9]+)(?: of [0-9]+)? file\\(s\\) were committed before the error");
  int covered = 0;
  *acknowledged_runs = 0;
  for (long at = 1; at <= 5000; ++at) {
    SCOPED_TRACE("fault at call " + std::to_string(at) + " (" + err + (sticky ? ", sticky" : "") + ")");
    const std::string dir = root + "/idx" + std::to_string(at);
    const std::string report = root + "/report" + std::to_string(at);
    fs::copy(empty, dir);
    test::CommandResult r;
    {
      FaultEnv env(at, err, sticky, report);
      r = test::run_cli({"index", "add", dir, images, "--commit-every", "2", "--threads", "1", "--decode-threads", "1"});
    }
    const bool hit = fs::exists(report);
    const std::string where = hit ? read_text(report) : "";
    SCOPED_TRACE("failed call: " + where + "stderr: " + r.err);
    if (!hit) {
      // The ingest finished before reaching call N: it must have succeeded completely.
      EXPECT_EQ(r.exit_code, 0);
      const Verified v = verify_deep(dir);
      EXPECT_TRUE(v.ok) << v.text;
      EXPECT_EQ(v.paths, n_files);
      return covered;
    }
    ++covered;
    // A clear error (exit status 1, not a signal) or, where the failed call was retried or was
    // not needed for durability, success.
    EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1) << "exit status " << r.exit_code;
    int64_t acked = 0;
    if (r.exit_code == 0) {
      acked = n_files;
    } else {
      std::string last = r.err;
      while (!last.empty() && last.back() == '\n') last.pop_back();
      last = last.substr(last.rfind('\n') == std::string::npos ? 0 : last.rfind('\n') + 1);
      EXPECT_NE(last.find("clipkit index add"), std::string::npos) << "the error names the verb: " << last;
      EXPECT_EQ(r.err.find("terminate"), std::string::npos);
      std::smatch m;
      if (std::regex_search(r.err, m, acked_re)) acked = std::stoll(m[1].str());
      if (acked > 0) ++*acknowledged_runs;
    }
    for (const auto& e : fs::directory_iterator(dir))
      EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "temporary file left: " << e.path();
    const Verified v = verify_deep(dir);
    EXPECT_TRUE(v.ok) << v.text;
    EXPECT_GE(v.paths, acked) << "files reported committed were lost";
    EXPECT_EQ(v.items, v.paths) << "every image is distinct";
    // A clean rerun resumes and completes the index.
    r = test::run_cli({"index", "add", dir, images, "--commit-every", "2", "--threads", "1", "--decode-threads", "1"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const Verified after = verify_deep(dir);
    EXPECT_TRUE(after.ok) << after.text;
    EXPECT_EQ(after.paths, n_files);
    if (::testing::Test::HasFailure()) return covered;
    fs::remove_all(dir);
  }
  ADD_FAILURE() << "the ingest never completed below the sweep's limit";
  return covered;
}

}  // namespace

TEST(FaultInjection, EveryStorageCallFailingOnceWithEio) {
  int acknowledged = 0;
  const int covered = sweep("EIO", false, &acknowledged);
  RecordProperty("fault_points", covered);
  std::cout << "fault points covered: " << covered << " (failed runs that reported committed files: " << acknowledged << ")\n";
  // The sweep reaches the catalog and the vector cache, and faults after committed batches.
  EXPECT_GT(covered, 10);
  EXPECT_GT(acknowledged, 0);
}

TEST(FaultInjection, DiskFullFromEveryStorageCallOn) {
  int acknowledged = 0;
  const int covered = sweep("ENOSPC", true, &acknowledged);
  RecordProperty("fault_points", covered);
  std::cout << "fault points covered: " << covered << " (failed runs that reported committed files: " << acknowledged << ")\n";
  // The sweep reaches the catalog and the vector cache, and faults after committed batches.
  EXPECT_GT(covered, 10);
  EXPECT_GT(acknowledged, 0);
}
