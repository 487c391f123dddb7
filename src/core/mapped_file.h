// A read-only memory-mapped file (falls back to reading into memory for empty files).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace clipkit {

// How a file will be read. Weights: read whole and often (a model's tensors, used in place by the
// kernels): the mapping starts on a 2 MiB boundary and is advised as transparent huge pages, so
// that where the page cache holds the file in 2 MiB folios (as it does once a mapping advised so
// has read it from disk, see cache_as_huge_pages) each is mapped by one page-table entry: no
// fault per 4 KiB page at the first touch, which on virtual machines with shadow page tables costs
// microseconds per page even after the pages were populated.
enum class MapHint { Default, Weights };

class MappedFile {
 public:
  // Throws Error(NotFound/Io) naming the path.
  static std::shared_ptr<const MappedFile> open(const std::string& path, MapHint hint = MapHint::Default);
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

// Drops the file's clean pages from the page cache and reads it back through a Weights mapping,
// so that the cache holds it in 2 MiB folios where the kernel's file system supports them (a file
// just written is cached in the sizes of its writes). Best effort: errors are ignored.
void cache_as_huge_pages(const std::string& path);

// Reads a whole file into a string; throws Error naming the path.
std::string read_file(const std::string& path);
// Writes atomically: temp file in the same folder, fsync, rename, fsync of the folder.
void write_file_atomic(const std::string& path, const void* data, size_t size);

}  // namespace clipkit
