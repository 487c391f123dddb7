#include "server/thumbnail.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <random>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "clipkit/server.h"
#include "server/file_access.h"

namespace clipkit::server {

namespace {

constexpr const char* kCacheFolder = "thumbs";
constexpr off_t kMaxThumbnailBytes = 4 << 20;  // a cached file larger than this is not ours

bool is_hex_digest(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string file_name(const std::string& sha256, int side) { return sha256 + "-" + std::to_string(side) + ".webp"; }

// The content hash of a cache file name (`<sha256>-<side>.webp`), empty for any other name.
std::string digest_of(const std::string& name) {
  const std::string ext = ".webp";
  if (name.size() < 64 + 2 + ext.size() || name[64] != '-' || name.compare(name.size() - ext.size(), ext.size(), ext) != 0) return "";
  const std::string side = name.substr(65, name.size() - 65 - ext.size());
  if (side.empty() || !std::all_of(side.begin(), side.end(), [](char c) { return c >= '0' && c <= '9'; })) return "";
  const std::string digest = name.substr(0, 64);
  return is_hex_digest(digest) ? digest : "";
}

// Temporary files of interrupted stores older than this are deleted by prune().
constexpr time_t kStaleTemporarySeconds = 3600;

}  // namespace

bool ThumbnailCache::load(const std::string& sha256, int side, std::string* bytes) const {
  if (folder_.empty() || !is_hex_digest(sha256)) return false;
  FileHandle f(open_without_links(folder_ + "/" + kCacheFolder + "/" + file_name(sha256, side)));
  if (f.fd < 0) return false;
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > kMaxThumbnailBytes) return false;
  std::string data(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t r = ::pread(f.fd, data.data() + done, data.size() - done, static_cast<off_t>(done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    done += static_cast<size_t>(r);
  }
  // A file cut short by a crash cannot be here (stores are renamed into place once complete), but
  // check the WebP signature all the same.
  if (data.size() < 12 || data.compare(0, 4, "RIFF") != 0 || data.compare(8, 4, "WEBP") != 0) return false;
  *bytes = std::move(data);
  return true;
}

bool ThumbnailCache::store(const std::string& sha256, int side, const std::string& bytes) const {
  if (folder_.empty() || !is_hex_digest(sha256)) return false;
  FileHandle index_dir(open_without_links(folder_));
  if (index_dir.fd < 0) return false;
  if (::mkdirat(index_dir.fd, kCacheFolder, 0755) != 0 && errno != EEXIST) return false;
  FileHandle dir(::openat(index_dir.fd, kCacheFolder, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (dir.fd < 0) return false;
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" + file_name(sha256, side);
  // O_EXCL: never opens an existing name, so a link planted under that name is not followed.
  FileHandle out(::openat(dir.fd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (out.fd < 0) return false;
  size_t done = 0;
  bool ok = true;
  while (ok && done < bytes.size()) {
    const ssize_t w = ::write(out.fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) ok = false;
    else done += static_cast<size_t>(w);
  }
  ok = ok && ::fsync(out.fd) == 0;
  // renameat replaces the name itself (a link there is replaced, not followed).
  if (!ok || ::renameat(dir.fd, tmp.c_str(), dir.fd, file_name(sha256, side).c_str()) != 0) {
    ::unlinkat(dir.fd, tmp.c_str(), 0);
    return false;
  }
  return true;
}

namespace {

// The cache folder opened without following links, or -1.
int open_cache_folder(const std::string& index_folder) {
  if (index_folder.empty()) return -1;
  FileHandle index_dir(open_without_links(index_folder));
  if (index_dir.fd < 0) return -1;
  return ::openat(index_dir.fd, kCacheFolder, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

}  // namespace

bool ThumbnailCache::remove(const std::string& sha256, int side) const {
  if (!is_hex_digest(sha256)) return false;
  FileHandle dir(open_cache_folder(folder_));
  return dir.fd >= 0 && ::unlinkat(dir.fd, file_name(sha256, side).c_str(), 0) == 0;
}

int64_t ThumbnailCache::prune(const std::function<bool(const std::string& sha256)>& keep) const {
  FileHandle dir(open_cache_folder(folder_));
  if (dir.fd < 0) return 0;
  // Names first, deletions after: the listing is not disturbed by its own deletions.
  std::vector<std::string> names;
  {
    const int listed = ::dup(dir.fd);
    DIR* d = listed < 0 ? nullptr : ::fdopendir(listed);
    if (!d) {
      if (listed >= 0) ::close(listed);
      throw Error(ErrorCode::Io, "cannot list the thumbnail folder " + folder_ + "/" + kCacheFolder + ": " + std::strerror(errno));
    }
    while (const dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
    ::closedir(d);
  }
  const time_t now = ::time(nullptr);
  int64_t deleted = 0;
  for (const auto& name : names) {
    bool drop = false;
    if (name.rfind(".tmp-", 0) == 0) {
      struct stat st {};
      drop = ::fstatat(dir.fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && now - st.st_mtime > kStaleTemporarySeconds;
    } else {
      const std::string digest = digest_of(name);
      drop = !digest.empty() && !keep(digest);
    }
    if (drop && ::unlinkat(dir.fd, name.c_str(), 0) == 0) ++deleted;
  }
  return deleted;
}

}  // namespace clipkit::server

namespace clipkit {

int64_t remove_stale_thumbnails(const Index& index) {
  const server::ThumbnailCache cache(server::real_path(index.dir()));
  return cache.prune([&](const std::string& sha256) { return index.find_sha256(sha256, nullptr); });
}

}  // namespace clipkit
