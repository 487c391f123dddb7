// Reading indexed files for `clipkit serve` without following links planted on the way, checking
// they still hold the indexed bytes, and answering Range requests.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <string>

namespace clipkit::server {

// A file descriptor closed with its owner.
struct FileHandle {
  int fd = -1;
  explicit FileHandle(int f) : fd(f) {}
  FileHandle(const FileHandle&) = delete;
  FileHandle& operator=(const FileHandle&) = delete;
  ~FileHandle() {
    if (fd >= 0) ::close(fd);
  }
};

// Opens an absolute path that holds no symbolic link, one component at a time, refusing a link
// anywhere on the way (so a link swapped in after the path was resolved is not followed).
// Returns the descriptor, or -1 with errno set (ELOOP / ENOTDIR for a link).
int open_without_links(const std::string& path);

// The SHA-256 (hex) of the first `size` bytes of an open file; empty when it cannot be read.
std::string sha256_of(int fd, uint64_t size);

std::string real_path(const std::string& path);

std::string parent_folder(const std::string& path);

// A Range header for a file of `size` bytes. One range is honoured; a header naming several is
// ignored (the whole file is sent), so that a request can never make the server send more than
// the file once.
struct ByteRange {
  enum Kind { Whole, Part, Unsatisfiable } kind = Whole;
  uint64_t first = 0, last = 0;
};

ByteRange parse_range(const std::string& header, uint64_t size);

}  // namespace clipkit::server
