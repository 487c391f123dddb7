// Phase 4 of a sharded build: the catalog, the exact vectors and the merged on-disk lists (see build.h).
#include "dist/shard_store.h"

#include <faiss/IVFlib.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_io.h>
#include <faiss/invlists/OnDiskInvertedLists.h>

namespace clipkit::dist {

MergeReport merge(const BuildOptions& o) {
  const std::string catalog = (fs::path(o.dir) / kCatalogName).string();
  if (count_shards(o.dir) == 0 && !finished_build(o.dir).empty()) {
    // Merged, its shards since removed.
    Db db;
    db.open(catalog, false, true);
    MergeReport rep;
    rep.already_done = true;
    rep.items = db.scalar_i64("SELECT count(*) FROM items");
    rep.files = db.scalar_i64("SELECT count(*) FROM files");
    return rep;
  }
  const ShardSet s = open_all_shards(o.dir);
  const Trained t = read_trained(o.dir, s);
  MergeReport rep;
  rep.structure = t.factory + (t.ondisk ? " (on disk)" : "");
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
  for (int i = 0; i < s.n; ++i)
    if (!fs::exists(part_catalog_path(o.dir, i, s.n)) ||
        (t.ondisk && !fs::exists(lists_path(o.dir, i, s.n))))
      throw Error(ErrorCode::NotFound, "shard " + std::to_string(i) + " has not been added (run 'clipkit index build ... --add-shard " +
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
    mi.text_model_path = s.id.text_model_path;
    mi.tokenizer_path = s.id.tokenizer_path;
    mi.arch_name = s.id.model_arch;
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
    // The exact vectors are already in place (the add phase wrote them at their ids): the index
    // gets a second name for the build's file, no copy. A rerun links it again.
    const std::string exact_path = (staging / search::kExactVectorsName).string();
    const std::string built_vectors = build_vectors_path(o.dir);
    {
      const uintmax_t want = search::ExactVectors::header(dim, t.items, 1).size() + static_cast<uintmax_t>(t.items) * dim * sizeof(float);
      const uintmax_t have = fs::file_size(built_vectors, ec);
      if (ec || have != want)
        throw Error(ErrorCode::NotFound, built_vectors + " is missing or has the wrong size; run 'clipkit index build ... --train' and every --add-shard again");
      fs::create_hard_link(built_vectors, exact_path, ec);
      if (ec) throw Error(ErrorCode::Io, "cannot link " + built_vectors + " as " + exact_path + ": " + ec.message());
    }
    const double now = unix_now();
    int64_t expect = 1;
    {
      // Each shard's part is appended as it is: SQLite copies the rows (no row passes through
      // here); memory stays the same whatever the size.
      for (int i = 0; i < s.n; ++i) {
        const std::string part = part_catalog_path(o.dir, i, s.n);
        {
          Stmt attach(db, "ATTACH DATABASE ?1 AS part");
          attach.bind(1, part).run();
        }
        int64_t first_id = 0, items = 0, files = 0, failed = 0;
        try {
          {
            Stmt m(db, "SELECT key, value FROM part.meta");
            std::map<std::string, std::string> kv;
            while (m.step()) kv[m.text(0)] = m.text(1);
            try {
              first_id = std::stoll(kv.at("first_id"));
              items = std::stoll(kv.at("items"));
              files = std::stoll(kv.at("files"));
              failed = std::stoll(kv.at("failed"));
            } catch (const std::exception&) {
              throw Error(ErrorCode::Format, part + " is malformed; run 'clipkit index build ... --add-shard " + std::to_string(i) + "' again");
            }
          }
          if (items > 0 && first_id != expect)
            throw Error(ErrorCode::Format, part + " starts at id " + std::to_string(first_id) + ", expected " + std::to_string(expect));
          Transaction tx(db);
          Stmt ins_items(db,
                         "INSERT INTO items(id, sha256, size, width, height, added, gen, vector)"
                         " SELECT id, sha256, size, width, height, ?1, ?2, vector FROM part.items ORDER BY id");
          ins_items.bind(1, now).bind(2, gen).run();
          Stmt ins_files(db, "INSERT INTO files(path, item_id, size, mtime_ns, added) SELECT path, item_id, size, mtime_ns, ?1 FROM part.files ORDER BY pos");
          ins_files.bind(1, now).run();
          tx.commit();
        } catch (...) {
          db.exec("DETACH DATABASE part");
          throw;
        }
        db.exec("DETACH DATABASE part");
        expect += items;
        rep.items += items;
        rep.files += files;
        rep.failed += failed;
      }
    }
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
