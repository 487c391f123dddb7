// Phase 4 of a sharded build: the catalog, the exact vectors and the merged on-disk lists (see build.h).
#include "dist/shard_store.h"

#include <faiss/IVFlib.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_io.h>
#include <faiss/invlists/OnDiskInvertedLists.h>

namespace clipkit::dist {

MergeReport merge(const BuildOptions& o) {
  const ShardSet s = open_all_shards(o.dir);
  const Trained t = read_trained(o.dir, s);
  MergeReport rep;
  rep.structure = t.factory + (t.ondisk ? " (on disk)" : "");
  const std::string catalog = (fs::path(o.dir) / kCatalogName).string();
  if (fs::exists(catalog)) {
    Db db;
    db.open(catalog, false, true);
    const auto built = get_meta(db, "build_list_hash");
    if (!built || *built != s.id.list_hash)
      throw Error(ErrorCode::InvalidArgument, "index folder " + o.dir + " already holds an index that these shards did not build");
    rep.already_done = true;
    rep.items = db.scalar_i64("SELECT count(*) FROM items");
    rep.files = db.scalar_i64("SELECT count(*) FROM files");
    return rep;
  }
  for (int i = 0; i < s.n && t.ondisk; ++i)
    if (!fs::exists(lists_path(o.dir, i, s.n)))
      throw Error(ErrorCode::NotFound, "shard " + std::to_string(i) + " has not been added to the trained index (run 'clipkit index build ... --add-shard " +
                                           std::to_string(i) + "')");
  // Everything is written in a staging folder, then moved in with the catalog last.
  const fs::path staging = fs::path(o.dir) / kStagingDir;
  std::error_code ec;
  fs::remove_all(staging, ec);
  fs::create_directories(staging, ec);
  if (ec) throw Error(ErrorCode::Io, "cannot create " + staging.string() + ": " + ec.message());
  {
    ModelInfo mi;
    mi.path = s.id.model_path;
    mi.fingerprint = s.id.model_fingerprint;
    mi.arch.embed_dim = s.id.dim;
    IndexCreateOptions co;
    co.kind = t.kind;
    Index::create(staging.string(), mi, co);
  }
  const int dim = s.id.dim;
  const int64_t gen = 1;
  {
    Db db;
    db.open((staging / kCatalogName).string(), false, false);
    db.exec("PRAGMA synchronous=NORMAL");
    const std::string exact_path = (staging / search::kExactVectorsName).string();
    std::FILE* exact = std::fopen(exact_path.c_str(), "wb");
    if (!exact) throw Error(ErrorCode::Io, "cannot create " + exact_path + ": " + std::strerror(errno));
    const std::string header = search::ExactVectors::header(dim, t.items, 1);
    bool write_ok = std::fwrite(header.data(), 1, header.size(), exact) == header.size();
    const double now = unix_now();
    int64_t expect = 1;
    try {
      for (int i = 0; i < s.n; ++i) {
        const auto ids = read_ids(ids_path(o.dir, i, s.n), s.metas[static_cast<size_t>(i)].count);
        Db sh;
        sh.open(shard_path(o.dir, i, s.n), false, true);
        Stmt rows(sh, "SELECT path, size, mtime_ns, sha256, width, height, vector FROM rows ORDER BY pos");
        Transaction tx(db);
        Stmt ins_item(db, "INSERT INTO items(id, sha256, size, width, height, added, gen, vector) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
        Stmt ins_file(db, "INSERT INTO files(path, item_id, size, mtime_ns, added) VALUES(?1, ?2, ?3, ?4, ?5)");
        size_t r = 0;
        while (rows.step()) {
          const int64_t id = ids[r++];
          if (id == 0) {
            ++rep.failed;
            continue;
          }
          if (id > 0) {
            if (id != expect) throw Error(ErrorCode::Format, "id file of shard " + std::to_string(i) + " is out of order");
            ++expect;
            if (rows.bytes(6) != static_cast<size_t>(dim) * sizeof(float))
              throw Error(ErrorCode::Format, "shard file " + sh.path() + " holds a malformed vector");
            ins_item.reset();
            ins_item.bind(1, id).bind(2, rows.text(3)).bind(3, rows.i64(1)).bind(4, rows.i64(4)).bind(5, rows.i64(5)).bind(6, now).bind(7, gen);
            ins_item.bind_blob(8, rows.blob(6), rows.bytes(6));
            ins_item.run();
            write_ok = write_ok && std::fwrite(rows.blob(6), 1, rows.bytes(6), exact) == rows.bytes(6);
            ++rep.items;
          }
          ins_file.reset();
          ins_file.bind(1, rows.text(0)).bind(2, id > 0 ? id : -id).bind(3, rows.i64(1)).bind(4, rows.i64(2)).bind(5, now).run();
          ++rep.files;
        }
        tx.commit();
      }
    } catch (...) {
      std::fclose(exact);
      throw;
    }
    write_ok = std::fflush(exact) == 0 && fsync(fileno(exact)) == 0 && write_ok;
    write_ok = std::fclose(exact) == 0 && write_ok;
    if (!write_ok) throw Error(ErrorCode::Io, "writing " + exact_path + " failed: " + std::strerror(errno));
    if (expect - 1 != t.items) throw Error(ErrorCode::Format, "the id files name " + std::to_string(expect - 1) + " contents, training counted " + std::to_string(t.items));
    Transaction tx(db);
    set_meta(db, "generation", std::to_string(gen));
    set_meta(db, "build_list_hash", s.id.list_hash);
    if (t.ondisk) set_meta(db, "ondisk", t.factory);
    tx.commit();
  }
  if (t.ondisk) {
    fs::remove(staging / kCacheName, ec);  // served from the on-disk structure instead
    auto index = read_faiss((fs::path(shards_dir(o.dir)) / kTrainedName).string());
    faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(index.get());
    std::vector<std::unique_ptr<faiss::Index>> parts;
    std::vector<const faiss::InvertedLists*> lists;
    for (int i = 0; i < s.n; ++i) {
      // The shards' lists are mapped, not read: the merge holds one list at a time.
      parts.push_back(read_faiss(lists_path(o.dir, i, s.n), faiss::IO_FLAG_MMAP));
      const faiss::IndexIVF* p = faiss::ivflib::try_extract_index_ivf(parts.back().get());
      if (!p || p->nlist != ivf->nlist || p->code_size != ivf->code_size)
        throw Error(ErrorCode::Format, lists_path(o.dir, i, s.n) + " does not match the trained index");
      lists.push_back(p->invlists);
    }
    const std::string lists_file = (staging / search::kOnDiskListsName).string();
    try {
      QuietStdout quiet;  // faiss reports each resize of the lists file on stdout
      auto* od = new faiss::OnDiskInvertedLists(ivf->nlist, ivf->code_size, lists_file.c_str());
      const size_t total = od->merge_from(lists.data(), static_cast<int>(lists.size()));
      od->filename = search::kOnDiskListsName;  // the reader maps it from the index's own folder
      ivf->replace_invlists(od, true);
      ivf->ntotal = static_cast<faiss::Index::idx_t>(total);
      index->ntotal = ivf->ntotal;
    } catch (const std::exception& e) {
      throw Error(ErrorCode::Io, "merging the inverted lists into " + lists_file + " failed: " + faiss_message(e));
    }
    if (index->ntotal != t.items)
      throw Error(ErrorCode::Internal, "merged lists hold " + std::to_string(index->ntotal) + " vectors, the catalog " + std::to_string(t.items));
    write_faiss_atomic(*index, (staging / search::kOnDiskIndexName).string());
    parts.clear();
  }
  // Move in: data files first, the catalog last (its presence marks a finished merge).
  for (const auto& e : fs::directory_iterator(staging)) {
    const std::string name = e.path().filename().string();
    if (name == kLockName || name.rfind(kCatalogName, 0) == 0) continue;
    fs::rename(e.path(), fs::path(o.dir) / name, ec);
    if (ec) throw Error(ErrorCode::Io, "cannot move " + e.path().string() + " into " + o.dir + ": " + ec.message());
    if (name == search::kOnDiskIndexName || name == search::kOnDiskListsName) rep.index_bytes += static_cast<int64_t>(fs::file_size(fs::path(o.dir) / name));
  }
  fs::rename(staging / kCatalogName, fs::path(o.dir) / kCatalogName, ec);
  if (ec) throw Error(ErrorCode::Io, "cannot move the catalog into " + o.dir + ": " + ec.message());
  const int dfd = ::open(o.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  fs::remove_all(staging, ec);
  if (!t.ondisk) {
    // Kinds without inverted lists: the index builds its structure from the catalog.
    Index idx = Index::open(o.dir, Index::Mode::ReadWrite);
    rep.index_bytes = static_cast<int64_t>(fs::file_size(fs::path(o.dir) / kCacheName, ec));
  }
  return rep;
}

}  // namespace clipkit::dist
