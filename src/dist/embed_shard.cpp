// Phase 1 of a sharded build: one shard's files read, decoded and embedded (see build.h).
#include "dist/shard_store.h"

#include <fcntl.h>
#include <unistd.h>

#include "model/ingest_files.h"

namespace clipkit::dist {

namespace {

// Where a shard is embedded when the build has a scratch folder: a folder per index (several builds
// may share one scratch disk) holding the shard under its usual name.
std::string scratch_shard_path(const std::string& scratch, const std::string& index_dir, int shard, int n_shards) {
  const std::string dir = (fs::path(scratch) / ("clipkit-build-" + hash_list({normalize_path(index_dir)}))).string();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(ErrorCode::Io, "cannot create scratch folder " + dir + ": " + ec.message());
  return (fs::path(dir) / fs::path(shard_path(index_dir, shard, n_shards)).filename()).string();
}

// Copies a finished shard from the scratch folder into the index's shards/ folder (under a temporary
// name, synced, then renamed: the shared folder only ever shows finished shards) and removes it from
// the scratch folder.
void publish_shard(std::unique_ptr<Db> db, const std::string& from, const std::string& to) {
  db->exec("PRAGMA journal_mode=DELETE");  // checkpoints the write-ahead log: one self-contained file
  db.reset();
  const std::string tmp = to + ".tmp";
  std::error_code ec;
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
  if (ec) throw Error(ErrorCode::Io, "cannot copy " + from + " to " + tmp + ": " + ec.message());
  const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  const bool synced = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!synced) throw Error(ErrorCode::Io, "cannot sync " + tmp + ": " + std::strerror(errno));
  fs::rename(tmp, to, ec);
  if (ec) throw Error(ErrorCode::Io, "cannot move " + tmp + " to " + to + ": " + ec.message());
  const int dfd = ::open(fs::path(to).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) fs::remove(from + suffix, ec);
  fs::remove(fs::path(from).parent_path(), ec);  // only when empty
}

}  // namespace

ShardReport embed_shard(const BuildOptions& o, const Model& model, int shard, int n_shards) {
  if (o.batch <= 0) throw Error(ErrorCode::InvalidArgument, "batch size must be positive, got " + std::to_string(o.batch));
  if (n_shards < 1 || shard < 0 || shard >= n_shards) throw Error(ErrorCode::InvalidArgument, "shard index out of range");
  std::vector<std::string> missing;
  const std::vector<std::string> files = list_sources(o.sources, o.recursive, o.dir, &missing);
  if (!missing.empty()) throw Error(ErrorCode::NotFound, "source not found: " + missing.front());
  if (files.empty()) throw Error(ErrorCode::NotFound, "no image files found in the given sources");
  const ModelInfo& mi = model.info();
  ShardIdentity id;
  id.list_hash = hash_list(files);
  id.total = static_cast<int64_t>(files.size());
  id.model_fingerprint = mi.fingerprint;
  id.model_path = mi.path.empty() ? std::string() : normalize_path(mi.path);
  if (!mi.text_model_path.empty()) {
    id.text_model_path = normalize_path(mi.text_model_path);
    if (!mi.tokenizer_path.empty()) id.tokenizer_path = normalize_path(mi.tokenizer_path);
  }
  id.model_arch = mi.arch_name;
  id.dim = mi.arch.embed_dim;
  std::error_code ec;
  if (count_shards(o.dir) == 0 && finished_build(o.dir) == id.list_hash) {
    // Merged from this very list, its shards since removed: nothing to embed.
    ShardReport rep;
    rep.shard = shard;
    rep.shards = n_shards;
    rep.files = shard_slice(id.total, shard, n_shards).count;
    rep.already_complete = true;
    return rep;
  }
  fs::create_directories(shards_dir(o.dir), ec);
  if (ec) throw Error(ErrorCode::Io, "cannot create " + shards_dir(o.dir) + ": " + ec.message());
  // With a scratch folder the shard is embedded there and copied into shards/ once finished; a shard
  // already in shards/ (finished, or started without a scratch folder) goes on where it is.
  const std::string final_path = shard_path(o.dir, shard, n_shards);
  const bool in_scratch = !o.scratch.empty() && !fs::exists(final_path);
  const std::string path = in_scratch ? scratch_shard_path(o.scratch, o.dir, shard, n_shards) : final_path;
  auto db_owner = std::make_unique<Db>();
  Db& db = *db_owner;
  const ShardMeta meta = open_shard(db, path, id, shard, n_shards);
  ShardReport rep;
  rep.shard = shard;
  rep.shards = n_shards;
  rep.files = meta.count;
  const int64_t end = meta.first + meta.count;
  int64_t next = meta.first;
  {
    Stmt s(db, "SELECT max(pos) FROM rows");
    if (s.step() && !s.is_null(0)) next = s.i64(0) + 1;
  }
  rep.resumed_at = next - meta.first;
  if (meta.complete) {
    rep.already_complete = true;
    if (in_scratch) publish_shard(std::move(db_owner), path, final_path);  // finished, but stopped before the copy
    return rep;
  }
  // Each batch is read, hashed and checked against the shard by the ingest layer, then decoded by
  // its threads while the model embeds the batch before it and the shard commits it. A content
  // embedded earlier in this shard (or in this batch) is stored once.
  IngestFileChecks checks;
  checks.content_stored = [&db](const std::string& sha) {
    Stmt known(db, "SELECT 1 FROM rows WHERE sha256 = ?1 AND vector IS NOT NULL LIMIT 1");
    known.bind(1, sha);
    return known.step();
  };
  IngestFileOptions io;
  io.batch = static_cast<size_t>(o.batch);
  io.threads = o.threads;
  io.preprocess = model.preprocess_config();
  io.decode = ingest_decode_options(io.preprocess, false);
  const int dim = id.dim;
  run_file_batches(files, static_cast<size_t>(next), static_cast<size_t>(end), checks, io, [&](IngestFileBatch& batch) {
    const int64_t b0 = static_cast<int64_t>(batch.begin), b1 = static_cast<int64_t>(batch.end);
    std::vector<IngestFile>& w = batch.files;
    std::vector<std::vector<float>> vectors(w.size());
    const IngestEmbedded e = embed_file_batch(model, batch, dim);
    for (size_t k = 0; k < e.order.size() && e.rows.rows > 0; ++k) {
      IngestFile& x = w[e.order[k]];
      std::vector<float>& v = vectors[e.order[k]];
      const float* r = e.rows.row(static_cast<int64_t>(k));
      v.assign(r, r + dim);
      for (float f : v)
        if (!std::isfinite(f)) {
          x.error = "embedding is not finite";
          x.embed = false;
        }
      if (x.embed) normalize_vec(v.data(), dim);  // as the catalog stores it
    }
    // A path whose content failed in this batch fails with the same reason.
    std::map<std::string, std::string> failed_content;
    for (const auto& x : w)
      if (!x.sha.empty() && !x.error.empty()) failed_content.emplace(x.sha, x.error);
    {
      Transaction tx(db);
      Stmt ins(db, "INSERT INTO rows(pos, path, size, mtime_ns, sha256, width, height, vector, error) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
      for (size_t i = 0; i < w.size(); ++i) {
        IngestFile& x = w[i];
        if (x.error.empty() && !x.embed) {
          const auto why = failed_content.find(x.sha);
          if (why != failed_content.end()) x.error = why->second;
        }
        ins.reset();
        // a file that could not be read records no size
        ins.bind(1, b0 + static_cast<int64_t>(i)).bind(2, x.path).bind(3, x.sha.empty() ? int64_t{0} : x.size).bind(4, x.mtime_ns);
        if (!x.sha.empty()) ins.bind(5, x.sha);
        ins.bind(6, x.width).bind(7, x.height);
        if (x.embed) ins.bind_blob(8, vectors[i].data(), vectors[i].size() * sizeof(float));
        if (!x.error.empty()) ins.bind(9, x.error);
        ins.run();
        if (!x.error.empty()) rep.failures.push_back({x.path, x.error});
        else if (x.embed) ++rep.embedded;
        else ++rep.duplicates;
      }
      tx.commit();
    }
    if (o.on_batch) o.on_batch(b1 - meta.first);
  });
  {
    Transaction tx(db);
    set_meta(db, "complete", "1");
    tx.commit();
  }
  if (in_scratch) publish_shard(std::move(db_owner), path, final_path);
  return rep;
}

struct ShardWriter::State {
  Db db;
  ShardMeta meta;
  int dim = 0;
  int64_t written = 0;
};

ShardWriter::ShardWriter(const std::string& index_dir, int shard, int n_shards, const ShardIdentity& id) : st_(std::make_unique<State>()) {
  std::error_code ec;
  fs::create_directories(shards_dir(index_dir), ec);
  st_->meta = open_shard(st_->db, shard_path(index_dir, shard, n_shards), id, shard, n_shards);
  st_->dim = id.dim;
}

ShardWriter::~ShardWriter() = default;

Slice ShardWriter::slice() const { return {st_->meta.first, st_->meta.count}; }

bool ShardWriter::complete() const { return st_->meta.complete; }

void ShardWriter::append(const std::vector<std::string>& paths, const std::vector<std::string>& sha256, const float* vectors) {
  if (sha256.size() != paths.size() || st_->written + static_cast<int64_t>(paths.size()) > st_->meta.count)
    throw Error(ErrorCode::InvalidArgument, "write_shard: shard " + std::to_string(st_->meta.shard) + " takes " + std::to_string(st_->meta.count) + " rows");
  Db& db = st_->db;
  Transaction tx(db);
  Stmt ins(db, "INSERT OR REPLACE INTO rows(pos, path, size, mtime_ns, sha256, width, height, vector, error) VALUES(?1, ?2, 0, 0, ?3, 0, 0, ?4, NULL)");
  const size_t vbytes = static_cast<size_t>(st_->dim) * sizeof(float);
  for (size_t i = 0; i < paths.size(); ++i) {
    ins.reset();
    ins.bind(1, st_->meta.first + st_->written + static_cast<int64_t>(i)).bind(2, paths[i]).bind(3, sha256[i]);
    ins.bind_blob(4, vectors + i * static_cast<size_t>(st_->dim), vbytes);
    ins.run();
  }
  tx.commit();
  st_->written += static_cast<int64_t>(paths.size());
}

void ShardWriter::finish() {
  if (st_->written != st_->meta.count)
    throw Error(ErrorCode::InvalidArgument, "write_shard: shard " + std::to_string(st_->meta.shard) + " takes " + std::to_string(st_->meta.count) +
                                                " rows, got " + std::to_string(st_->written));
  Transaction tx(st_->db);
  set_meta(st_->db, "complete", "1");
  tx.commit();
}

}  // namespace clipkit::dist
