// A read-only memory-mapped file (falls back to reading into memory for empty files).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace clipkit {

class MappedFile {
 public:
  // Throws Error(NotFound/Io) naming the path.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Reads a whole file into a string; throws Error naming the path.
std::string read_file(const std::string& path);
// Writes atomically: temp file in the same folder, fsync, rename, fsync of the folder.
void write_file_atomic(const std::string& path, const void* data, size_t size);

}  // namespace clipkit
