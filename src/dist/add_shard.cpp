// Phase 3 of a sharded build (see build.h): one pass over a shard writes its part of the merge (the
// catalog rows under their final ids, its new exact vectors in id order) and, for IVF kinds, adds its
// new vectors to a copy of the trained structure. Every shard does this at the same time, so the
// merge only appends finished parts.
#include "dist/shard_store.h"

#include <faiss/IVFlib.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_io.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "search/ondisk_store.h"

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
  if (count_shards(o.dir) == 0 && !finished_build(o.dir).empty()) {
    AddShardReport rep;  // merged, its shards since removed
    rep.shard = shard;
    rep.already_done = true;
    return rep;
  }
  const ShardSet s = open_all_shards(o.dir);
  if (shard < 0 || shard >= s.n)
    throw Error(ErrorCode::InvalidArgument, "--add-shard " + std::to_string(shard) + ": the build has shards 0.." + std::to_string(s.n - 1));
  const Trained t = read_trained(o.dir, s);
  AddShardReport rep;
  rep.shard = shard;
  rep.lists = t.ondisk;
  // The lists are written last (IVF kinds), the part's catalog otherwise: their presence marks a finished shard.
  const std::string part = part_catalog_path(o.dir, shard, s.n), exact = build_vectors_path(o.dir);
  const std::string lists = lists_path(o.dir, shard, s.n);
  if (fs::exists(part) && (!t.ondisk || fs::exists(lists))) {
    rep.already_done = true;
    return rep;
  }
  std::unique_ptr<faiss::Index> index;
  if (t.ondisk) index = read_faiss((fs::path(shards_dir(o.dir)) / kTrainedName).string());
  const auto ids = read_ids(ids_path(o.dir, shard, s.n), s.metas[static_cast<size_t>(shard)].count);
  const int dim = s.id.dim;
  const size_t vbytes = static_cast<size_t>(dim) * sizeof(float);
  auto db_owner = std::make_unique<Db>();
  Db& db = *db_owner;
  db.open(shard_path(o.dir, shard, s.n), false, true);
  if (s.metas[static_cast<size_t>(shard)].rows_dropped)
    throw Error(ErrorCode::InvalidArgument, rows_dropped_message(o.dir, shard, s.n));
  auto rows_owner = std::make_unique<Stmt>(db, "SELECT pos, path, size, mtime_ns, sha256, width, height, vector FROM rows ORDER BY pos");
  Stmt& rows = *rows_owner;
  const int64_t first = s.metas[static_cast<size_t>(shard)].first;

  const std::string part_tmp = part + ".tmp";
  std::error_code ec;
  fs::remove(part_tmp, ec);
  auto out_owner = std::make_unique<Db>();
  Db& out = *out_owner;
  out.open(part_tmp, true, false);
  out.exec("PRAGMA page_size=16384");
  out.exec("PRAGMA journal_mode=OFF");  // a temporary file, synced and renamed once complete
  out.exec("PRAGMA synchronous=OFF");
  out.exec(
      "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE items(id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, width INTEGER NOT NULL,"
      " height INTEGER NOT NULL, vector BLOB NOT NULL);"
      "CREATE TABLE files(pos INTEGER PRIMARY KEY, path TEXT NOT NULL, item_id INTEGER NOT NULL, size INTEGER NOT NULL,"
      " mtime_ns INTEGER NOT NULL);");
  // This shard's new vectors go to their ids' rows of the build's exact vector file (written by
  // every shard at once, each at its own rows; a rerun writes the same bytes again).
  const int vfd = ::open(exact.c_str(), O_WRONLY | O_CLOEXEC);
  if (vfd < 0) throw Error(ErrorCode::Io, "cannot open " + exact + " (run 'clipkit index build ... --train' again): " + std::strerror(errno));
  const off_t vsize = ::lseek(vfd, 0, SEEK_END);
  const off_t header = static_cast<off_t>(search::ExactVectors::header(dim, t.items, 1).size());
  if (vsize != header + static_cast<off_t>(t.items) * static_cast<off_t>(vbytes)) {
    ::close(vfd);
    throw Error(ErrorCode::Format, exact + " does not have the size the training recorded; run 'clipkit index build ... --train' again");
  }
  bool write_ok = true;
  int write_errno = 0;
  // Vectors of consecutive ids are written in runs of up to 8 MB.
  std::vector<char> run;
  int64_t run_first = 0;
  auto write_run = [&] {
    if (run.empty() || !write_ok) return;
    const off_t at = header + static_cast<off_t>(run_first - 1) * static_cast<off_t>(vbytes);
    size_t done = 0;
    while (done < run.size()) {
      const ssize_t w = ::pwrite(vfd, run.data() + done, run.size() - done, at + static_cast<off_t>(done));
      if (w <= 0) {
        write_ok = false;
        write_errno = errno;
        break;
      }
      done += static_cast<size_t>(w);
    }
    run.clear();
  };
  std::vector<float> vecs;
  std::vector<faiss::Index::idx_t> labels;
  // faiss encodes a PQ batch through distance tables of batch x 256 x M floats (1 GB for 32,768
  // vectors at PQ32), so the vectors go in 4,096 at a time: 134 MB at PQ32, 268 MB at PQ64.
  constexpr size_t kAddChunk = 4096;
  auto flush = [&] {
    if (labels.empty()) return;
    try {
      for (size_t i = 0; i < labels.size(); i += kAddChunk) {
        const size_t m = std::min(kAddChunk, labels.size() - i);
        index->add_with_ids(static_cast<faiss::Index::idx_t>(m), vecs.data() + i * static_cast<size_t>(dim), labels.data() + i);
      }
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
        // On-disk kinds serve every vector from the exact vector file: the catalog keeps none.
        static const char kNoVector = 0;
        if (t.ondisk) ins_item.bind_blob(6, &kNoVector, 0);
        else ins_item.bind_blob(6, rows.blob(7), vbytes);
        ins_item.run();
        if (run.empty()) run_first = id;
        const auto* b = static_cast<const char*>(rows.blob(7));
        run.insert(run.end(), b, b + vbytes);
        if (run.size() >= (size_t{8} << 20)) write_run();
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
    write_run();
  } catch (...) {
    ::close(vfd);
    throw;
  }
  if (write_ok && ::fdatasync(vfd) != 0) {
    write_ok = false;
    write_errno = errno;
  }
  ::close(vfd);
  if (!write_ok) throw Error(ErrorCode::Io, "writing " + exact + " failed: " + std::strerror(write_errno));
  flush();
  rep.added = next_id - first_id;
  out_owner.reset();
  sync_file(part_tmp);
  move_into_place(part_tmp, part);
  if (index) write_faiss_atomic(*index, lists);
  if (o.discard_shards) {
    // Everything the later phases read of this shard is now in its part, its lists and the exact
    // vector file: its rows go, its description stays.
    rows_owner.reset();
    db_owner.reset();
    drop_shard_rows(o.dir, shard, s.n);
  }
  return rep;
}

}  // namespace clipkit::dist
