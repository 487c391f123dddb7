// Phase 2 of a sharded build: final ids and the trained structure (see build.h).
#include "dist/shard_store.h"

#include <faiss/IVFlib.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_io.h>
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "search/ondisk_store.h"

namespace clipkit::dist {

TrainReport train(const BuildOptions& o) {
  if (count_shards(o.dir) == 0 && !finished_build(o.dir).empty()) {
    // Merged, its shards since removed.
    TrainReport rep;
    rep.already_done = true;
    rep.factory = "index already merged";
    Db db;
    db.open((fs::path(o.dir) / kCatalogName).string(), false, true);
    rep.items = db.scalar_i64("SELECT count(*) FROM items");
    return rep;
  }
  const ShardSet s = open_all_shards(o.dir);
  TrainReport rep;
  rep.shards = s.n;
  rep.files = s.id.total;
  const std::string meta_path = (fs::path(shards_dir(o.dir)) / kTrainedMeta).string();
  const std::string kind = search::check_kind(o.kind, s.id.dim);
  if (fs::exists(meta_path)) {
    auto kv = read_kv(meta_path);
    if (kv["list_hash"] == s.id.list_hash && kv["kind"] == kind) {
      rep.already_done = true;
      rep.factory = kv["factory"];
      rep.items = std::stoll(kv["items"]);
      return rep;
    }
  }
  // Final ids: first appearance of each content in the sorted list.
  const int dim = s.id.dim;
  for (int i = 0; i < s.n; ++i)
    if (s.metas[static_cast<size_t>(i)].rows_dropped) throw Error(ErrorCode::InvalidArgument, rows_dropped_message(o.dir, i, s.n));
  const IdPassResult ip = assign_ids(o.dir, s, o.id_memory);
  rep.id_buckets = ip.buckets;
  const int64_t items = ip.items;
  for (int i = 0; i < s.n; ++i) {
    // What an earlier training (of another kind) had the shards add is out of date.
    std::error_code ec;
    for (const std::string& p : {lists_path(o.dir, i, s.n), part_catalog_path(o.dir, i, s.n)}) fs::remove(p, ec);
  }
  {
    // The exact vector file at its full size (sparse until the shards fill it). An earlier one is
    // unlinked, not rewritten: a finished merge may hold it as the index's own file.
    const std::string vpath = build_vectors_path(o.dir);
    std::error_code ec;
    fs::remove(vpath, ec);
    const std::string header = search::ExactVectors::header(dim, items, 1);
    const int fd = ::open(vpath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const off_t size = static_cast<off_t>(header.size() + static_cast<size_t>(items) * static_cast<size_t>(dim) * sizeof(float));
    const bool ok = fd >= 0 && ::write(fd, header.data(), header.size()) == static_cast<ssize_t>(header.size()) && ::ftruncate(fd, size) == 0 &&
                    ::fsync(fd) == 0;
    const int err = errno;
    if (fd >= 0) ::close(fd);
    if (!ok) throw Error(ErrorCode::Io, "cannot create " + vpath + ": " + std::strerror(err));
  }
  rep.items = items;
  rep.factory = search::resolve_factory(kind, dim, items);
  auto idx = search::make_index(rep.factory, dim);
  faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(idx->index);
  const bool ondisk = ivf != nullptr;
  const std::string trained_path = (fs::path(shards_dir(o.dir)) / kTrainedName).string();
  if (ondisk) {
    // Uniform sample in id order, as a single process trains (search::train_index).
    const int64_t cap = 50 * std::max<int64_t>(static_cast<int64_t>(ivf->nlist), 256);
    const int64_t n_sample = std::min(items, cap);
    if (items < static_cast<int64_t>(ivf->nlist))
      throw Error(ErrorCode::InvalidArgument, "kind " + rep.factory + " has " + std::to_string(ivf->nlist) + " lists but the sources hold only " +
                                                  std::to_string(items) + " contents; use a kind with fewer lists");
    std::vector<float> sample(static_cast<size_t>(n_sample * dim));
    int64_t k = 0;  // next sample slot; it takes id k * items / n_sample + 1
    for (int i = 0; i < s.n && k < n_sample; ++i) {
      Db db;
      db.open(shard_path(o.dir, i, s.n), false, true);
      Stmt rows(db, "SELECT pos, vector FROM rows WHERE vector IS NOT NULL ORDER BY pos");
      const auto v = read_ids(ids_path(o.dir, i, s.n), s.metas[static_cast<size_t>(i)].count);
      const int64_t first = s.metas[static_cast<size_t>(i)].first;
      while (k < n_sample && rows.step()) {
        const int64_t r = rows.i64(0) - first;
        if (r < 0 || r >= static_cast<int64_t>(v.size())) throw Error(ErrorCode::Format, "shard file " + db.path() + " holds a row outside its slice");
        const int64_t id = v[static_cast<size_t>(r)];
        if (id <= 0 || id - 1 != k * items / n_sample) continue;
        if (rows.bytes(1) != static_cast<size_t>(dim) * sizeof(float)) throw Error(ErrorCode::Format, "shard file " + db.path() + " holds a malformed vector");
        std::memcpy(sample.data() + k * dim, rows.blob(1), static_cast<size_t>(dim) * sizeof(float));
        ++k;
      }
    }
    if (k != n_sample) throw Error(ErrorCode::Internal, "training sample has " + std::to_string(k) + " of " + std::to_string(n_sample) + " vectors");
    search::train_index(*idx, sample.data(), n_sample);
    rep.sample = n_sample;
    write_faiss_atomic(*idx->index, trained_path);
  }
  const std::string kv = "list_hash=" + s.id.list_hash + "\nkind=" + kind + "\nfactory=" + rep.factory + "\nitems=" + std::to_string(items) +
                         "\nondisk=" + (ondisk ? "1" : "0") + "\n";
  write_file_atomic(meta_path, kv.data(), kv.size());
  return rep;
}

}  // namespace clipkit::dist
