// clipkit serve, the item files: an item's original image (only catalog files that still hold the
// indexed bytes, Range) and its thumbnail (made on first request, cached in the index folder).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "clipkit/image.h"
#include "server/server_impl.h"
#include "vision/thumbnail.h"

namespace clipkit {

namespace {
using namespace server;
}  // namespace

// Why the indexed `path` (modification time `mtime_ns`) of `it` cannot be served now, or an
// open descriptor of it in *fd. The file must resolve into a folder that held indexed files
// when the server started (not into the index), be opened with no link on the way, and still
// hold the indexed bytes: same size, and same modification time or else same SHA-256.
std::string SearchServer::Impl::open_indexed(const CatalogItem& it, const std::string& path, int64_t mtime_ns, const std::unordered_set<std::string>& served,
                         std::shared_ptr<FileHandle>* fd) const {
  const std::string resolved = real_path(path);
  if (resolved.empty()) return errno == ENOENT || errno == ENOTDIR ? "missing" : std::string("unreadable: ") + std::strerror(errno);
  if (!served.count(parent_folder(resolved))) return "outside the indexed folders";
  if (!index_folder.empty() && resolved.compare(0, index_folder.size() + 1, index_folder + "/") == 0)
    return "outside the indexed folders (inside the index)";
  const int opened = open_without_links(resolved);
  const int open_error = errno;
  auto f = std::make_shared<FileHandle>(opened);
  if (f->fd < 0)
    return open_error == ELOOP || open_error == ENOTDIR || open_error == ENOENT
               ? "changed since it was indexed (the path now leads elsewhere)"
               : std::string("unreadable: ") + std::strerror(open_error);
  struct stat st {};
  if (::fstat(f->fd, &st) != 0 || !S_ISREG(st.st_mode)) return "not a regular file";
  if (st.st_size != it.size)
    return "changed since it was indexed (" + std::to_string(st.st_size) + " bytes, indexed " + std::to_string(it.size) + ")";
  const int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  if (mtime != mtime_ns && sha256_of(f->fd, static_cast<uint64_t>(it.size)) != it.sha256)
    return "changed since it was indexed (other bytes)";
  *fd = std::move(f);
  return "";
}

// The item `id_text` (after catching up with other writers) and the folders its files may be
// served from.
CatalogItem SearchServer::Impl::find_item(const std::string& id_text, std::shared_ptr<const std::unordered_set<std::string>>* folders) {
  const int64_t id = parse_id(id_text);
  CatalogItem it;
  refresh_locked();
  if (!index.find_id(id, &it)) throw HttpError(404, "no item " + id_text + " in the index");
  const std::lock_guard<std::mutex> lock(folders_mu);
  if (folders_dirty) {
    // Folders of items added since the start (by this server or another process).
    served_folders = resolve_folders();
    folders_dirty = false;
  }
  *folders = served_folders;
  return it;
}

// The first of the item's catalog paths that can still be served (open_indexed) from `folders`,
// else an HttpError: 404 when all its files are gone, 410 when some changed.
std::shared_ptr<FileHandle> SearchServer::Impl::open_servable(const CatalogItem& it, const std::string& id_text,
                                          const std::unordered_set<std::string>& folders) const {
  std::string problems;
  bool all_missing = true;
  std::shared_ptr<FileHandle> file;
  for (size_t i = 0; i < it.paths.size() && !file; ++i) {
    const std::string why = open_indexed(it, it.paths[i], i < it.mtimes_ns.size() ? it.mtimes_ns[i] : 0, folders, &file);
    if (why.empty()) break;
    if (why != "missing") all_missing = false;
    problems += (problems.empty() ? "" : "; ") + it.paths[i] + ": " + why;
  }
  if (!file) throw HttpError(all_missing ? 404 : 410, "item " + id_text + ": none of its files can be served (" + problems + ")");
  return file;
}

// GET /api/items/{id}/thumb: made from the file the image route would serve (same checks), then
// kept in the index folder under the content's SHA-256.
void SearchServer::Impl::item_thumb(const std::string& id_text, httplib::Response& res) {
  std::shared_ptr<const std::unordered_set<std::string>> folders;
  const CatalogItem it = find_item(id_text, &folders);
  std::string bytes;
  if (!thumbs.load(it.sha256, kThumbnailSide, &bytes)) {
    if (static_cast<uint64_t>(it.size) > kMaxThumbnailSourceBytes)
      throw HttpError(413, "item " + id_text + ": its file of " + std::to_string(it.size >> 20) + " MiB is too large to make a thumbnail of");
    const std::shared_ptr<FileHandle> file = open_servable(it, id_text, *folders);
    std::string data(static_cast<size_t>(it.size), '\0');
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t r = ::pread(file->fd, data.data() + done, data.size() - done, static_cast<off_t>(done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) throw HttpError(410, "item " + id_text + ": its file shrank while it was read");
      done += static_cast<size_t>(r);
    }
    DecodeOptions d;
    d.apply_exif_orientation = true;  // a thumbnail is looked at: show it upright
    bytes = with_decode_budget("item " + id_text, [&] {
      return vision::encode_thumbnail(
          decode_image_memory(reinterpret_cast<const uint8_t*>(data.data()), data.size(), "item " + id_text, d),
          kThumbnailSide);
    });
    thumbs.store(it.sha256, kThumbnailSide, bytes);
  }
  res.set_header("Cache-Control", "private, max-age=3600");
  res.set_content(std::move(bytes), "image/webp");
}

void SearchServer::Impl::item_image(const httplib::Request& req, const std::string& id_text, httplib::Response& res) {
  std::shared_ptr<const std::unordered_set<std::string>> folders;
  const CatalogItem it = find_item(id_text, &folders);
  const std::shared_ptr<FileHandle> file = open_servable(it, id_text, *folders);

  const uint64_t size = static_cast<uint64_t>(it.size);
  char head[16] = {};
  const ssize_t got = ::pread(file->fd, head, sizeof head, 0);
  res.set_header("Cache-Control", "private, max-age=60");
  res.set_header("Accept-Ranges", "bytes");
  ByteRange range;
  if (req.has_header("Range") && !req.has_header("If-Range")) range = parse_range(req.get_header_value("Range"), size);
  if (range.kind == ByteRange::Unsatisfiable) {
    res.set_header("Content-Range", "bytes */" + std::to_string(size));
    throw HttpError(416, "the range is outside the file of " + std::to_string(size) + " bytes");
  }
  uint64_t offset = 0, length = size;
  if (range.kind == ByteRange::Part) {
    offset = range.first;
    length = range.last - range.first + 1;
    res.status = 206;
    res.set_header("Content-Range", "bytes " + std::to_string(range.first) + "-" + std::to_string(range.last) + "/" + std::to_string(size));
  }
  const std::string type = sniff_image_type(head, got > 0 ? static_cast<size_t>(got) : 0);
  if (length <= kInlineFileBytes) {
    // A small file is read here whole: one step on the compute pool instead of two.
    std::string body(static_cast<size_t>(length), '\0');
    size_t done = 0;
    while (done < body.size()) {
      const ssize_t r = ::pread(file->fd, body.data() + done, body.size() - done, static_cast<off_t>(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) throw HttpError(410, "item " + id_text + ": its file shrank while it was read");
      done += static_cast<size_t>(r);
    }
    res.set_content(std::move(body), type);
    return;
  }
  res.set_content_provider(static_cast<size_t>(length), type,
                           [file, offset, length](size_t at, size_t want, httplib::DataSink& sink) {
                             char buf[64 * 1024];
                             if (at >= length) return false;
                             const size_t n = static_cast<size_t>(std::min<uint64_t>({want, sizeof buf, length - at}));
                             ssize_t r;
                             do r = ::pread(file->fd, buf, n, static_cast<off_t>(offset + at));
                             while (r < 0 && errno == EINTR);
                             if (r <= 0) return false;  // the file shrank: the connection is closed
                             return sink.write(buf, static_cast<size_t>(r));
                           });
}



// ---- the routes ------------------------------------------------------------------------------
void SearchServer::Impl::add_file_routes() {
  using httplib::Request;
  using httplib::Response;
  http.Get(R"(/api/items/([^/]+)/thumb)", [this](const Request& req, Response& res) { guarded(res, [&] { item_thumb(req.matches[1], res); }); });
  http.Get(R"(/api/items/([^/]+)/image)",
           [this](const Request& req, Response& res) { guarded(res, [&] { item_image(req, req.matches[1], res); }); });
}

}  // namespace clipkit
