// A minimal read-only zip reader for PyTorch archives: central directory (zip64 aware), stored
// entries as zero-copy views into the memory-mapped file, deflated entries inflated with zlib.
// Encrypted entries, multi-disk archives and other compression methods are rejected.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"

namespace clipkit {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;         // 0 = stored, 8 = deflated
  uint16_t flags = 0;
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;           // uncompressed
  uint64_t local_header_offset = 0;
};

// Bytes of one entry: a view into the mapped archive (stored) or an owned buffer (inflated).
struct ZipBlob {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::shared_ptr<const void> owner;  // keeps `data` alive
  bool mapped = false;                // `data` points into the file mapping (stored entries)
};

class ZipArchive {
 public:
  // Memory-maps and parses the central directory; throws Error(Format) naming the file.
  static ZipArchive open(const std::string& path);
  static ZipArchive open(std::shared_ptr<const MappedFile> file);

  const std::string& path() const { return file_->path(); }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  // nullptr when absent.
  const ZipEntry* find(const std::string& name) const;
  // Stored entries are returned as views; deflated ones are inflated (and CRC-checked).
  // `verify_crc` also checks the CRC of stored entries (costs a pass over the bytes).
  ZipBlob read(const ZipEntry& entry, bool verify_crc = false) const;

 private:
  std::shared_ptr<const MappedFile> file_;
  std::vector<ZipEntry> entries_;
};

// True when the bytes start like a zip archive (local file header or empty-archive record).
bool looks_like_zip(const uint8_t* data, size_t size);

}  // namespace clipkit
