// clipkit serve, the change routes (--writable): add a file or an uploaded image, remove an item,
// patch an item's metadata. Each is one committed transaction.

#include <sys/stat.h>

#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "clipkit/image.h"
#include "server/api_requests.h"
#include "server/server_impl.h"

namespace clipkit {

namespace {
using namespace server;
}  // namespace

void SearchServer::Impl::require_writable() const {
  if (!opt.writable) throw HttpError(403, "this server is read-only (start it with --writable to accept changes)");
}

// Where an uploaded image is stored: UPLOAD_DIR/SHA256.EXT, written once (atomically).
std::string SearchServer::Impl::store_upload(const std::string& bytes) const {
  if (opt.upload_dir.empty()) throw HttpError(403, "this server accepts no uploads (start it with --upload-dir DIR)");
  const char* type = sniff_image_type(bytes.data(), bytes.size());
  const std::string t = type;
  const std::string ext = t == "image/png" ? ".png" : t == "image/jpeg" ? ".jpg" : t == "image/webp" ? ".webp"
                          : t == "image/gif" ? ".gif" : t == "image/bmp" ? ".bmp" : "";
  if (ext.empty()) throw HttpError(415, "the upload is not a PNG, JPEG, WebP, GIF or BMP image");
  DecodeOptions d;
  d.max_pixels = opt.max_upload_pixels;
  (void)decode_image_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "uploaded image", d);
  const std::string path = real_path(opt.upload_dir) + "/" + content_sha256(bytes.data(), bytes.size()) + ext;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) return path;
  const std::string tmp = path + ".part";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) throw Error(ErrorCode::Io, "cannot write the upload to " + opt.upload_dir);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error(ErrorCode::Io, "cannot store the upload in " + opt.upload_dir);
  return path;
}

// A file named by POST /api/items must resolve under an allowed root.
std::string SearchServer::Impl::allowed_file(const std::string& path) const {
  const std::string r = real_path(path);
  if (r.empty()) throw HttpError(404, "'" + path + "' does not exist on the server");
  for (const auto& root : roots)
    if (r.compare(0, root.size() + 1, root + "/") == 0) return r;
  throw HttpError(403, "'" + path + "' is outside the allowed roots of this server");
}

void SearchServer::Impl::add_item(const std::string& body, httplib::Response& res) {
  require_writable();
  ItemBody b = parse_item_body(parse_json_object(body, opt.max_upload_bytes));
  const std::string path = b.image_bytes.empty() ? allowed_file(b.path) : store_upload(b.image_bytes);
  AddOptions ao;
  ao.tags = b.tags;
  if (!b.meta.empty()) ao.meta[path] = b.meta;
  AddReport r;
  CatalogItem it;
  int64_t gen = 0;
  {
    const auto lock = change_lock();
    r = index.add_files({path}, *model, ao);
    if (!r.failures.empty()) throw HttpError(400, "cannot add " + path + ": " + r.failures.front().reason);
    if (!index.find_path(path, &it)) throw HttpError(500, "the added file is not in the catalog");
    gen = index.info().generation;
    folders_dirty = true;
  }
  send_json(res,
            {{"id", it.id}, {"path", path}, {"added", r.added}, {"updated", r.updated}, {"duplicates", r.duplicates}, {"generation", gen}},
            r.added > 0 ? 201 : 200);
}

void SearchServer::Impl::delete_item(const std::string& id_text, httplib::Response& res) {
  require_writable();
  const int64_t id = parse_id(id_text);
  const auto lock = change_lock();
  refresh_locked();
  CatalogItem it;
  if (!index.find_id(id, &it)) throw HttpError(404, "no item " + id_text + " in the index");
  const int64_t n = index.remove_paths(it.paths);
  // The content left the catalog (unless another writer brought it back since): so does its thumbnail.
  if (!index.find_sha256(it.sha256, nullptr)) thumbs.remove(it.sha256, server::kThumbnailSide);
  send_json(res, {{"id", id}, {"removed_paths", n}, {"generation", index.info().generation}});
}

void SearchServer::Impl::patch_meta(const std::string& id_text, const std::string& body, httplib::Response& res) {
  require_writable();
  const int64_t id = parse_id(id_text);
  const json patch = parse_json_object(body, opt.max_json_bytes);
  const auto lock = change_lock();
  refresh_locked();
  CatalogItem it;
  if (!index.find_id(id, &it)) throw HttpError(404, "no item " + id_text + " in the index");
  index.set_item_metadata(id, patch.dump(), true);
  send_json(res, {{"id", id}, {"meta", json::parse(index.metadata(it.paths.front()))}, {"generation", index.info().generation}});
}



// ---- the routes ------------------------------------------------------------------------------
void SearchServer::Impl::add_write_routes() {
  using httplib::Request;
  using httplib::Response;
  // On the write lane: a change does not queue behind the reads waiting for a compute thread.
  using server::Lane;
  http.Post("/api/items", [this](const Request& req, Response& res) { guarded(res, [&] { add_item(req.body, res); }); }, Lane::Write);
  http.Delete(R"(/api/items/([^/]+))",
              [this](const Request& req, Response& res) { guarded(res, [&] { delete_item(req.matches[1], res); }); }, Lane::Write);
  http.Patch(R"(/api/items/([^/]+)/meta)",
             [this](const Request& req, Response& res) { guarded(res, [&] { patch_meta(req.matches[1], req.body, res); }); },
             Lane::Write);
}

}  // namespace clipkit
