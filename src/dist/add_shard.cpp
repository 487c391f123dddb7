// Phase 3 of a sharded build (see build.h): one pass over a shard writes its part of the merge (the
// catalog rows under their final ids, its new exact vectors in id order) and, for IVF kinds, adds its
// new vectors to a copy of the trained structure. Every shard does this at the same time, so the
// merge only appends finished parts.
#include "dist/shard_store.h"

#include <faiss/IVFlib.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_io.h>

#include <cstdio>

namespace clipkit::dist {

namespace {

void sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  const bool ok = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) throw Error(ErrorCode::Io, "cannot sync " + path + ": " + std::strerror(errno));
}

void move_into_place(const std::string& tmp, const std::string& path) {
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error(ErrorCode::Io, "cannot move " + tmp + " to " + path + ": " + ec.message());
}

}  // namespace

AddShardReport add_shard(const BuildOptions& o, int shard) {
  const ShardSet s = open_all_shards(o.dir);
  if (shard < 0 || shard >= s.n)
    throw Error(ErrorCode::InvalidArgument, "--add-shard " + std::to_string(shard) + ": the build has shards 0.." + std::to_string(s.n - 1));
  const Trained t = read_trained(o.dir, s);
  AddShardReport rep;
  rep.shard = shard;
  rep.lists = t.ondisk;
  // The lists are written last (IVF kinds), the part's catalog otherwise: their presence marks a finished shard.
  const std::string part = part_catalog_path(o.dir, shard, s.n), exact = part_vectors_path(o.dir, shard, s.n);
  const std::string lists = lists_path(o.dir, shard, s.n);
  if (fs::exists(part) && fs::exists(exact) && (!t.ondisk || fs::exists(lists))) {
    rep.already_done = true;
    return rep;
  }
  std::unique_ptr<faiss::Index> index;
  if (t.ondisk) index = read_faiss((fs::path(shards_dir(o.dir)) / kTrainedName).string());
  const auto ids = read_ids(ids_path(o.dir, shard, s.n), s.metas[static_cast<size_t>(shard)].count);
  const int dim = s.id.dim;
  const size_t vbytes = static_cast<size_t>(dim) * sizeof(float);
  Db db;
  db.open(shard_path(o.dir, shard, s.n), false, true);
  Stmt rows(db, "SELECT pos, path, size, mtime_ns, sha256, width, height, vector FROM rows ORDER BY pos");
  const int64_t first = s.metas[static_cast<size_t>(shard)].first;

  const std::string part_tmp = part + ".tmp", exact_tmp = exact + ".tmp";
  std::error_code ec;
  fs::remove(part_tmp, ec);
  auto out_owner = std::make_unique<Db>();
  Db& out = *out_owner;
  out.open(part_tmp, true, false);
  out.exec("PRAGMA journal_mode=OFF");  // a temporary file, synced and renamed once complete
  out.exec("PRAGMA synchronous=OFF");
  out.exec(
      "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE items(id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, width INTEGER NOT NULL,"
      " height INTEGER NOT NULL, vector BLOB NOT NULL);"
      "CREATE TABLE files(pos INTEGER PRIMARY KEY, path TEXT NOT NULL, item_id INTEGER NOT NULL, size INTEGER NOT NULL,"
      " mtime_ns INTEGER NOT NULL);");
  std::FILE* vf = std::fopen(exact_tmp.c_str(), "wb");
  if (!vf) throw Error(ErrorCode::Io, "cannot create " + exact_tmp + ": " + std::strerror(errno));
  bool write_ok = true;
  std::vector<float> vecs;
  std::vector<faiss::Index::idx_t> labels;
  auto flush = [&] {
    if (labels.empty()) return;
    try {
      index->add_with_ids(static_cast<faiss::Index::idx_t>(labels.size()), vecs.data(), labels.data());
    } catch (const std::exception& e) {
      throw Error(ErrorCode::Internal, "adding shard " + std::to_string(shard) + " to the trained index failed: " + faiss_message(e));
    }
    vecs.clear();
    labels.clear();
  };
  int64_t first_id = 0, next_id = 0, files = 0, failed = 0;
  try {
    Transaction tx(out);
    Stmt ins_item(out, "INSERT INTO items(id, sha256, size, width, height, vector) VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    Stmt ins_file(out, "INSERT INTO files(pos, path, item_id, size, mtime_ns) VALUES(?1, ?2, ?3, ?4, ?5)");
    while (rows.step()) {
      const int64_t r = rows.i64(0) - first;
      if (r < 0 || r >= static_cast<int64_t>(ids.size())) throw Error(ErrorCode::Format, "shard file " + db.path() + " holds a row outside its slice");
      const int64_t id = ids[static_cast<size_t>(r)];
      if (id == 0) {
        ++failed;
        continue;
      }
      if (id > 0) {  // the content's first appearance: its vector goes in with this shard
        if (first_id == 0) first_id = next_id = id;
        if (id != next_id) throw Error(ErrorCode::Format, "id file of shard " + std::to_string(shard) + " is out of order");
        ++next_id;
        if (rows.bytes(7) != vbytes) throw Error(ErrorCode::Format, "shard file " + db.path() + " holds a malformed vector");
        ins_item.reset();
        ins_item.bind(1, id).bind(2, rows.text(4)).bind(3, rows.i64(2)).bind(4, rows.i64(5)).bind(5, rows.i64(6));
        ins_item.bind_blob(6, rows.blob(7), vbytes);
        ins_item.run();
        write_ok = write_ok && std::fwrite(rows.blob(7), 1, vbytes, vf) == vbytes;
        if (index) {
          const float* v = static_cast<const float*>(rows.blob(7));
          vecs.insert(vecs.end(), v, v + dim);
          labels.push_back(id);
          if (labels.size() >= 65536) flush();
        }
      }
      ins_file.reset();
      ins_file.bind(1, rows.i64(0)).bind(2, rows.text(1)).bind(3, id > 0 ? id : -id).bind(4, rows.i64(2)).bind(5, rows.i64(3)).run();
      ++files;
    }
    set_meta(out, "first_id", std::to_string(first_id));
    set_meta(out, "items", std::to_string(next_id - first_id));
    set_meta(out, "files", std::to_string(files));
    set_meta(out, "failed", std::to_string(failed));
    tx.commit();
  } catch (...) {
    std::fclose(vf);
    throw;
  }
  write_ok = std::fflush(vf) == 0 && fsync(fileno(vf)) == 0 && write_ok;
  write_ok = std::fclose(vf) == 0 && write_ok;
  if (!write_ok) throw Error(ErrorCode::Io, "writing " + exact_tmp + " failed: " + std::strerror(errno));
  flush();
  rep.added = next_id - first_id;
  out_owner.reset();
  sync_file(part_tmp);
  move_into_place(exact_tmp, exact);
  move_into_place(part_tmp, part);
  if (index) write_faiss_atomic(*index, lists);
  return rep;
}

}  // namespace clipkit::dist
