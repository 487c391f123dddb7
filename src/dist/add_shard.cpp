// Phase 3 of a sharded build: a shard's vectors added to the trained structure (see build.h).
#include "dist/shard_store.h"

#include <faiss/IVFlib.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_io.h>

namespace clipkit::dist {

AddShardReport add_shard(const BuildOptions& o, int shard) {
  const ShardSet s = open_all_shards(o.dir);
  if (shard < 0 || shard >= s.n)
    throw Error(ErrorCode::InvalidArgument, "--add-shard " + std::to_string(shard) + ": the build has shards 0.." + std::to_string(s.n - 1));
  const Trained t = read_trained(o.dir, s);
  AddShardReport rep;
  rep.shard = shard;
  if (!t.ondisk) {
    rep.skipped = true;
    return rep;
  }
  const std::string out = lists_path(o.dir, shard, s.n);
  if (fs::exists(out)) {
    rep.already_done = true;
    return rep;
  }
  auto index = read_faiss((fs::path(shards_dir(o.dir)) / kTrainedName).string());
  const auto ids = read_ids(ids_path(o.dir, shard, s.n), s.metas[static_cast<size_t>(shard)].count);
  const int dim = s.id.dim;
  Db db;
  db.open(shard_path(o.dir, shard, s.n), false, true);
  Stmt rows(db, "SELECT pos, vector FROM rows WHERE vector IS NOT NULL ORDER BY pos");
  const int64_t first = s.metas[static_cast<size_t>(shard)].first;
  std::vector<float> vecs;
  std::vector<faiss::Index::idx_t> labels;
  auto flush = [&] {
    if (labels.empty()) return;
    try {
      index->add_with_ids(static_cast<faiss::Index::idx_t>(labels.size()), vecs.data(), labels.data());
    } catch (const std::exception& e) {
      throw Error(ErrorCode::Internal, "adding shard " + std::to_string(shard) + " to the trained index failed: " + faiss_message(e));
    }
    rep.added += static_cast<int64_t>(labels.size());
    vecs.clear();
    labels.clear();
  };
  while (rows.step()) {
    const int64_t r = rows.i64(0) - first;
    if (r < 0 || r >= static_cast<int64_t>(ids.size())) throw Error(ErrorCode::Format, "shard file " + db.path() + " holds a row outside its slice");
    const int64_t id = ids[static_cast<size_t>(r)];
    if (id <= 0) continue;  // the content's vector went in with an earlier shard
    if (rows.bytes(1) != static_cast<size_t>(dim) * sizeof(float)) throw Error(ErrorCode::Format, "shard file " + db.path() + " holds a malformed vector");
    const float* v = static_cast<const float*>(rows.blob(1));
    vecs.insert(vecs.end(), v, v + dim);
    labels.push_back(id);
    if (labels.size() >= 65536) flush();
  }
  flush();
  write_faiss_atomic(*index, out);
  return rep;
}

}  // namespace clipkit::dist
