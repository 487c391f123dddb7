#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "clipkit/error.h"

namespace clipkit {

static Error sys_error(const std::string& what, const std::string& path) {
  const int e = errno;
  return Error(e == ENOENT ? ErrorCode::NotFound : ErrorCode::Io, what + " '" + path + "': " + std::strerror(e));
}

namespace {

constexpr size_t kHugePage = size_t{2} << 20;

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif

// A read-only private mapping of the whole file at a 2 MiB boundary (file offset 0 on a huge page
// boundary, so that the file's 2 MiB folios can be mapped whole), advised as huge pages;
// MAP_FAILED when it cannot be made.
void* map_weights(int fd, size_t size) {
  const size_t reserve = size + kHugePage;
  void* r = mmap(nullptr, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) return MAP_FAILED;
  const uintptr_t start = reinterpret_cast<uintptr_t>(r);
  const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  void* p = mmap(reinterpret_cast<void*>(aligned), size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
  if (p == MAP_FAILED) {
    munmap(r, reserve);
    return MAP_FAILED;
  }
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t used_end = (aligned + size + page - 1) / page * page, end = start + reserve;
  if (aligned > start) munmap(r, aligned - start);
  if (end > used_end) munmap(reinterpret_cast<void*>(used_end), end - used_end);
  madvise(p, size, MADV_HUGEPAGE);  // best effort
  return p;
}

}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path, MapHint hint) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw sys_error("cannot open", path);
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    throw sys_error("cannot stat", path);
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorCode::Io, "'" + path + "' is a directory, not a file");
  }
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    void* p = hint == MapHint::Weights && f->size_ >= kHugePage ? map_weights(fd, f->size_) : MAP_FAILED;
    if (p == MAP_FAILED) p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw sys_error("cannot map", path);
    }
    f->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return f;
}

MappedFile::~MappedFile() {
  if (data_ && size_) munmap(const_cast<uint8_t*>(data_), size_);
}

void cache_as_huge_pages(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st {};
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<size_t>(st.st_size) >= kHugePage) {
    const size_t size = static_cast<size_t>(st.st_size);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    void* p = map_weights(fd, size);
    if (p != MAP_FAILED) {
      madvise(p, size, MADV_POPULATE_READ);  // reads the file back, in huge folios where supported
      munmap(p, size);
    }
  }
  ::close(fd);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    errno = errno ? errno : ENOENT;
    throw sys_error("cannot open", path);
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw sys_error("cannot read", path);
  return ss.str();
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  namespace fs = std::filesystem;
  fs::path target(path);
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  std::random_device rd;
  const std::string tmp = (dir / (target.filename().string() + ".tmp." + std::to_string(rd()))).string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw sys_error("cannot write", path);  // the temporary name would mean nothing to the user
  const uint8_t* p = static_cast<const uint8_t*>(data);
  size_t left = size;
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      Error err = sys_error("cannot write", path);
      ::close(fd);
      ::unlink(tmp.c_str());
      throw err;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    Error err = sys_error("cannot write", path);
    ::unlink(tmp.c_str());
    throw err;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Error err = sys_error("cannot rename temporary file to", path);
    ::unlink(tmp.c_str());
    throw err;
  }
  // The rename is durable only once the folder is synced; a failure there is reported (the file
  // is in place, but may not survive a crash). File systems that cannot sync a folder say EINVAL.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    const int rc = ::fsync(dfd);
    const int e = errno;
    ::close(dfd);
    if (rc != 0 && e != EINVAL) {
      errno = e;
      throw sys_error("cannot sync the folder of", path);
    }
  }
}

}  // namespace clipkit
