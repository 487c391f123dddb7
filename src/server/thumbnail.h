// Thumbnails of indexed images for the web page (made by vision::encode_thumbnail), cached in the
// index folder under the content's SHA-256.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace clipkit::server {

// Long side of a thumbnail, in pixels. Smaller images keep their size.
constexpr int kThumbnailSide = 256;

// The thumbnail cache: `<index folder>/thumbs/<sha256>-<side>.webp`.
class ThumbnailCache {
 public:
  // `index_folder` resolved (no link); an empty folder disables the cache.
  explicit ThumbnailCache(std::string index_folder) : folder_(std::move(index_folder)) {}

  // The cached thumbnail of content `sha256` into *bytes; false when there is none (or it cannot
  // be read safely: a link, not a regular file, too large).
  bool load(const std::string& sha256, int side, std::string* bytes) const;

  // Stores a thumbnail atomically (a temporary file in the cache folder, renamed into place; no
  // link is followed). Failures (a read-only index folder, a full disk) leave the cache as it was
  // and return false: the thumbnail is then simply made again next time.
  bool store(const std::string& sha256, int side, const std::string& bytes) const;

  // Deletes the thumbnail of content `sha256` at `side`; false when there was none.
  bool remove(const std::string& sha256, int side) const;

  // Deletes every thumbnail whose content `keep` rejects, and the temporary files of stores that
  // were interrupted more than an hour ago (a younger one may belong to a store in progress).
  // Names the cache never writes are left alone. Returns how many files were deleted.
  int64_t prune(const std::function<bool(const std::string& sha256)>& keep) const;

 private:
  std::string folder_;
};

}  // namespace clipkit::server
