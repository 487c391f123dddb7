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

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
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
    void* p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
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
