// Where the fuzz targets whose product code reads from (or writes to) a path keep their files: a
// folder of this process in memory-backed storage (tmpfs: $TMPDIR when it is one, else /dev/shm,
// else the temporary folder), removed when the run ends. On a disk file system every input would
// cost a write-back (ext4 flushes a file truncated and rewritten on close) and every fsync a wait
// for the disk; in memory both are nearly free, and the code under test runs unchanged.
#pragma once
#include <linux/magic.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace fuzzutil {

inline bool on_tmpfs(const std::filesystem::path& p) {
  struct statfs st {};
  return ::statfs(p.c_str(), &st) == 0 && st.f_type == TMPFS_MAGIC && ::access(p.c_str(), W_OK) == 0;
}

inline const std::filesystem::path& scratch_dir() {
  namespace fs = std::filesystem;
  static const fs::path* dir = [] {
    fs::path base = fs::temp_directory_path();
    if (!on_tmpfs(base) && on_tmpfs("/dev/shm")) base = "/dev/shm";
    auto* d = new fs::path(base / ("clipkit-fuzz-" + std::to_string(::getpid())));
    fs::create_directories(*d);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(scratch_dir(), ec);
    });
    return d;
  }();
  return *dir;
}

// A file of this process's scratch folder.
inline std::string scratch_path(const std::string& name) { return (scratch_dir() / name).string(); }

}  // namespace fuzzutil
