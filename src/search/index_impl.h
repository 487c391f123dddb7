// Internal state of clipkit::Index shared by the files that implement it: the open catalog, the
// faiss structure that caches it, and how the two are kept in step (see index.h).
#pragma once

#include "clipkit/index.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/FaissException.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "clipkit/model.h"
#include "core/mapped_file.h"
#include "search/sqlite.h"
#include "search/flat_scan.h"
#include "search/ondisk_store.h"
#include "search/quantized_rows.h"
#include "search/metadata.h"
#include "search/vector_store.h"
#include "search/call_lock.h"
#include "search/catalog_db.h"
#include "search/index_helpers.h"
#include "io/download.h"

namespace clipkit {

namespace fs = std::filesystem;

// The items committed after generation ?1, for for_vectors: found through the items_gen index,
// then read in id order (with "WHERE gen > ?1 ORDER BY id" SQLite reads every row in id order
// instead, all the vectors of the catalog, to catch up with a few changes).
inline constexpr const char* kChangedSince = "WHERE id IN (SELECT id FROM items WHERE gen > ?1)";
using search::Db;
using search::Stmt;
using search::Transaction;

using namespace index_internal;

struct Index::Impl : index_internal::CallState {
  std::string dir;
  Mode mode = Mode::ReadWrite;
  int lock_fd = -1;
  CatalogDb db;
  // meta
  std::string fingerprint, model_path, model_arch, kind;
  std::string text_model_path, tokenizer_path;  // a paired text tower (absent in older catalogs)
  int dim = 0;
  int64_t train_min = 0;
  double created = 0;
  // faiss
  std::unique_ptr<faiss::IndexIDMap2> fidx;
  std::string factory;      // what fidx was built from
  bool trained = true;      // fidx holds the requested kind (false: staged flat)
  int64_t fidx_gen = 0;     // catalog generation fidx reflects
  int64_t saved_gen = -1;   // generation of the cache file on disk
  // Built by `clipkit index build` (search/ondisk_store.h): exact vectors for re-ranking.
  std::shared_ptr<const search::ExactVectors> exact_vectors;
  // An 8-bit copy of the flat store, made by the first unfiltered recommendation (recommend.cpp).
  search::QuantizedCache quantized;
  std::vector<std::string> notes;
  // Ids removed from the catalog but still in the structure: skipped by searches. A structure
  // that can remove ids (Flat) drops them at the next merge; one that cannot (HNSW) keeps them
  // until the next rebuild, which comes once they pass kTombstoneShare of the structure. The
  // cache file keeps them too; opening it finds them in removed_items.
  // The working state of the changes (under write_mu; reads see it through their Snapshot, see
  // search/call_lock.h): vectors not yet in the structure, tombstones, the metadata view (base,
  // changed in place only with `rw` held exclusively) and the rows changed since it.
  std::shared_ptr<const Delta> delta_;
  std::shared_ptr<const std::unordered_set<int64_t>> tomb_ = std::make_shared<std::unordered_set<int64_t>>();
  std::shared_ptr<search::MetaView> view_;
  std::shared_ptr<const MetaOverlay> overlay_ = std::make_shared<MetaOverlay>();
  int64_t view_gen_ = -1;
  static constexpr double kTombstoneShare = 0.1;
  // Merged into the structure and the base view in the background past these sizes.
  static constexpr size_t kMergeRows = 2048;
  static constexpr size_t kMergePaths = 2048;
  // The tombstones of the Snapshot the calling thread reads.
  struct Tombstones {
    const Impl* m;
    size_t count(int64_t id) const { return m->cur().tombstones->count(id); }
    size_t size() const { return m->cur().tombstones->size(); }
    bool empty() const { return m->cur().tombstones->empty(); }
  } tombstones{this};
  // Concurrency: the state behind CallLock (search/call_lock.h).
  using CallLock = index_internal::CallLock<Impl>;

  ~Impl() {
    stop_merger();
    if (lock_fd >= 0) close(lock_fd);
  }

  std::string catalog_path() const { return (fs::path(dir) / kCatalogName).string(); }
  std::string cache_path() const { return (fs::path(dir) / kCacheName).string(); }

  std::string meta(const char* key) {
    Stmt s(db, "SELECT value FROM meta WHERE key = ?1");
    s.bind(1, key);
    if (!s.step()) throw Error(ErrorCode::Format, "index catalog " + catalog_path() + " has no '" + key + "' entry");
    return s.text(0);
  }
  std::string meta_or_empty(const char* key) {
    Stmt s(db, "SELECT value FROM meta WHERE key = ?1");
    s.bind(1, key);
    return s.step() ? s.text(0) : std::string();
  }
  void set_meta(const char* key, const std::string& value) {
    Stmt s(db, "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value");
    s.bind(1, key).bind(2, value).run();
  }
  // The checksum of the cache file this catalog last wrote (absent in catalogs from before it was kept).
  std::optional<uint64_t> recorded_cache_checksum() {
    Stmt s(db, "SELECT value FROM meta WHERE key = 'cache_checksum'");
    if (!s.step()) return std::nullopt;
    try {
      return std::stoull(s.text(0));
    } catch (const std::logic_error&) {
      return std::nullopt;  // malformed: the cache is not trusted, rebuild
    }
  }
  int64_t generation() { return std::stoll(meta("generation")); }

  bool table_exists(const char* name) {
    Stmt s(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1");
    s.bind(1, name);
    return s.step();
  }
  // Tables added after the first catalog format: created by the first writer that opens an older
  // catalog (readers treat a missing table as empty).
  void ensure_schema() {
    db.exec(
        "CREATE TABLE IF NOT EXISTS path_meta(path TEXT PRIMARY KEY, meta TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS removed_items(id INTEGER PRIMARY KEY, gen INTEGER NOT NULL);"
        "CREATE INDEX IF NOT EXISTS removed_items_gen ON removed_items(gen);"
        "CREATE TABLE IF NOT EXISTS path_changes(gen INTEGER NOT NULL, path TEXT NOT NULL);"
        "CREATE INDEX IF NOT EXISTS path_changes_gen ON path_changes(gen);");
    // Readers whose metadata view is older than this read it again in full.
    Stmt s(db, "INSERT OR IGNORE INTO meta(key, value) VALUES('change_log_since', (SELECT value FROM meta WHERE key = 'generation'))");
    s.run();
  }
  // Records that `path` changed (file, tags or metadata) in generation `gen`.
  void log_change(const std::string& path, int64_t gen) {
    Stmt s(db, "INSERT INTO path_changes(gen, path) VALUES(?1, ?2)");
    s.bind(1, gen).bind(2, path).run();
  }
  // Drops change-log entries more than `keep` generations old (readers that far behind reload).
  void prune_change_log(int64_t keep = 10000) {
    const int64_t cut = generation() - keep;
    Stmt since(db, "SELECT value FROM meta WHERE key = 'change_log_since'");
    if (!since.step()) return;
    try {
      if (std::stoll(since.text(0)) >= cut) return;
    } catch (const std::logic_error&) {
      // malformed: rewritten below
    }
    Transaction tx(db);
    Stmt d(db, "DELETE FROM path_changes WHERE gen <= ?1");
    d.bind(1, cut).run();
    set_meta("change_log_since", std::to_string(cut));
    tx.commit();
  }
  // The Snapshot of the calling thread with its metadata view loaded (the first read that needs the
  // view loads it, under write_mu: the changes meanwhile wait, the reads do not).
  const Snapshot& viewed();
  // The metadata row of (item, path) in a Snapshot, or null.
  static const search::MetaRow* meta_row(const Snapshot& s, int64_t id, const std::string& path) {
    if (!s.view) return nullptr;
    const auto o = s.overlay->rows.find(path);
    if (o != s.overlay->rows.end()) return o->second && o->second->item == id ? o->second.get() : nullptr;
    const auto r = s.view->rows.find({id, path});
    return r != s.view->rows.end() ? &r->second : nullptr;
  }

  // Publishes the working state as the Snapshot that reads start from.
  void publish_state();
  void clear_delta();
  // Adds committed vectors to the delta (those the structure or the delta already holds are skipped).
  void add_to_delta(int64_t n, const float* vecs, const faiss::Index::idx_t* ids);
  // Ids removed from the catalog: out of the delta, or tombstones of the structure.
  void remove_staged(const std::vector<int64_t>& ids);
  // Brings the metadata rows up to generation `gen` (when the view is loaded): the paths the
  // catalog's change log names are read again into the overlay (or everything, when the log
  // does not reach back that far). Reads through the calling thread's connection.
  void catch_up_view(int64_t gen);
  // After a committed change of generation `gen`: its new vectors join the delta, its removed ids
  // leave it or become tombstones, its metadata rows are read again; then it is published.
  void stage(const std::vector<faiss::Index::idx_t>& add_ids, const std::vector<float>& add_vecs, const std::vector<int64_t>& removed,
             int64_t gen);
  // Asks for the background merge once the delta, the tombstones or the changed rows are large;
  // a structure without removal that holds too many tombstones is rebuilt by this change.
  void merge_if_due();
  void background_merge();
  // With `rw` exclusive and write_mu: the delta and the tombstones go into the structure (a
  // structure without removal keeps its tombstones), the changed rows into the base view.
  void merge_pending();
  // With `rw` exclusive and write_mu: whatever the changes left for an exclusive call.
  void run_exclusive_work();
  // A read that found the catalog ahead of its Snapshot (another process's or Index's change):
  // when no change is under way (or `wait`: once it is done), it brings the state up to the
  // generation of its own catalog transaction and reads on with that; else it reads its Snapshot.
  void catch_up_read(int64_t gen, bool wait = false);
  std::string path_meta(const std::string& path) {
    if (!table_exists("path_meta")) return "{}";
    Stmt s(db, "SELECT meta FROM path_meta WHERE path = ?1");
    s.bind(1, path);
    return s.step() ? s.text(0) : std::string("{}");
  }

  // Starts a write: refuses a read-only index; a Shared one takes the writer lock (released by
  // end_write) and catches up with the catalog first.
  void begin_write() {
    if (mode == Mode::ReadOnly) throw Error(ErrorCode::InvalidArgument, "index " + dir + " is open read-only");
    if (mode == Mode::Shared) {
      take_lock();
      try {
        refresh();
        ensure_schema();
      } catch (...) {
        end_write();
        throw;
      }
    }
  }
  void end_write() {
    if (mode == Mode::Shared && lock_fd >= 0) {
      close(lock_fd);
      lock_fd = -1;
    }
  }
  struct WriteScope {
    Impl& m;
    explicit WriteScope(Impl& impl) : m(impl) { m.begin_write(); }
    ~WriteScope() { m.end_write(); }
  };

  // The exact stored vector of `id`: from faiss's own flat storage when it keeps one (Flat, HNSW),
  // else read from the catalog into `buf`. Null when the id is unknown.
  const float* exact_vector(int64_t id, std::vector<float>& buf) {
    if (exact_vectors) {  // an on-disk build keeps them in a memory-mapped file
      if (const float* v = exact_vectors->row(id)) return v;
    }
    const faiss::IndexFlat* flat = dynamic_cast<const faiss::IndexFlat*>(fidx->index);
    if (!flat) {
      if (const auto* h = dynamic_cast<const faiss::IndexHNSW*>(fidx->index)) flat = dynamic_cast<const faiss::IndexFlat*>(h->storage);
    }
    if (flat && flat->ntotal == fidx->ntotal) {
      const auto it = fidx->rev_map.find(id);
      if (it != fidx->rev_map.end()) return flat->get_xb() + it->second * dim;
    }
    if (const Delta* d = cur().delta.get())
      if (const float* v = d->find(id)) return v;
    Stmt v(db, "SELECT vector FROM items WHERE id = ?1");
    v.bind(1, id);
    if (!v.step() || v.bytes(0) != static_cast<size_t>(dim) * sizeof(float)) return nullptr;
    buf.resize(static_cast<size_t>(dim));
    std::memcpy(buf.data(), v.blob(0), buf.size() * sizeof(float));
    return buf.data();
  }

  // Items passing a filter: id -> first passing path (in the metadata view, unchanged during a read).
  using Allowed = std::unordered_map<int64_t, const std::string*>;
  // The best `want` items by exact inner product with the unit vector q, best first (ties: lower
  // id first), among `allowed` (all when null) and not in `excluded`. Without `rerank`, an
  // approximate structure's candidates keep the scores it computed. Passing sets of up to
  // `exact_scan_max` items are scored exactly one by one (SearchOptions::exact_scan_max). Defined
  // in index_search.cpp.
  std::vector<std::pair<float, int64_t>> ranked(const float* q, int64_t want, const Allowed* allowed,
                                                const std::unordered_set<int64_t>& excluded, int ef_search, int nprobe,
                                                int64_t exact_scan_max, bool rerank = true);
  // ranked() is the structure's candidates (ranked_structure) merged with the delta's (with_delta).
  std::vector<std::pair<float, int64_t>> ranked_structure(const float* q, int64_t want, const Allowed* allowed,
                                                          const std::unordered_set<int64_t>& excluded, int ef_search, int nprobe,
                                                          int64_t exact_scan_max, bool rerank);
  std::vector<std::pair<float, int64_t>> with_delta(const float* q, int64_t want, const Allowed* allowed,
                                                    const std::unordered_set<int64_t>& excluded,
                                                    std::vector<std::pair<float, int64_t>> cand);
  // The passing items of a search's filters, or nullopt when it has none (index_search.cpp).
  std::optional<Allowed> allowed_for(const SearchOptions& o);
  // Hits (with paths and metadata) for ranked candidates (index_search.cpp).
  std::vector<SearchHit> make_hits(const std::vector<std::pair<float, int64_t>>& cand, const Allowed* allowed, int k, float min_score);

  // Catches up with commits made through other connections (see Index::refresh).
  // Incrementally through the delta, the tombstones and the metadata overlay, then published; a
  // change that needs the structure rebuilt (another kind, removals not listed) is rebuilt here
  // with `rw` exclusive, else left to the next exclusive call (exclusive_due). Returns whether
  // the state moved.
  bool refresh() {
    const int64_t gen = generation();
    if (gen == fidx_gen && fidx) return false;
    std::string new_kind = meta("kind");
    int64_t remove_gen = 0, new_train_min = 0;
    try {
      remove_gen = std::stoll(meta("remove_gen"));
      new_train_min = std::stoll(meta("train_min"));
    } catch (const std::logic_error&) {
      throw Error(ErrorCode::Format, "index catalog " + catalog_path() + " has a malformed meta entry");
    }
    bool full = !fidx || new_kind != kind || new_train_min != train_min || fidx_gen < 0;
    std::vector<int64_t> removed;
    if (!full && remove_gen > fidx_gen) {
      // Removals since fidx_gen are listed in removed_items; a rebuild (or an older writer) lists none.
      if (!removals_listed(remove_gen)) {
        full = true;
      } else {
        Stmt r(db, "SELECT id FROM removed_items WHERE gen > ?1");
        r.bind(1, fidx_gen);
        while (r.step()) removed.push_back(r.i64(0));
      }
    }
    if (full) {
      if (!in_exclusive) {
        exclusive_due = true;
        return false;
      }
      kind = new_kind;
      train_min = new_train_min;
      rebuild_structure();
      return true;
    }
    if (fidx_gen < gen) {
      for_vectors(kChangedSince, fidx_gen, [&](int64_t m, const float* v, const faiss::Index::idx_t* ids) { add_to_delta(m, v, ids); });
    }
    remove_staged(removed);
    fidx_gen = gen;
    catch_up_view(gen);
    publish_state();
    merge_if_due();
    return true;
  }
  // Whether removed_items lists the removals of generation `remove_gen` (a rebuild, or an older
  // writer, lists none).
  bool removals_listed(int64_t remove_gen) {
    if (!table_exists("removed_items")) return false;
    Stmt c(db, "SELECT count(*) FROM removed_items WHERE gen = ?1");
    c.bind(1, remove_gen);
    c.step();
    return c.i64(0) > 0;
  }
  int64_t item_count() { return db.scalar_i64("SELECT count(*) FROM items"); }

  void read_meta() {
    std::string fmt;
    try {
      fmt = meta("format");
    } catch (const Error& e) {
      throw Error(ErrorCode::Format, "index catalog " + catalog_path() + " is not a clipkit index catalog (" + e.what() + ")");
    }
    if (fmt != "clipkit-index") throw Error(ErrorCode::Format, "index catalog " + catalog_path() + " is not a clipkit index catalog");
    int version = 0;
    try {
      version = std::stoi(meta("version"));
    } catch (const std::logic_error&) {
      throw Error(ErrorCode::Format, "index catalog " + catalog_path() + " has a malformed 'version' entry");
    }
    if (version != kFormatVersion)
      throw Error(ErrorCode::Format, "index " + dir + " has format version " + std::to_string(version) + ", this build reads " +
                                         std::to_string(kFormatVersion));
    fingerprint = meta("model_fingerprint");
    model_path = meta("model_path");
    model_arch = meta_or_empty("model_arch");  // absent in older catalogs
    text_model_path = meta_or_empty("text_model_path");
    tokenizer_path = meta_or_empty("tokenizer_path");
    kind = meta("kind");
    try {
      dim = std::stoi(meta("dim"));
      train_min = std::stoll(meta("train_min"));
      created = std::stod(meta("created"));
      (void)generation();
    } catch (const std::logic_error&) {
      throw Error(ErrorCode::Format, "index catalog " + catalog_path() + " has a malformed meta entry");
    }
    if (dim <= 0 || dim > 65536) throw Error(ErrorCode::Format, "index catalog " + catalog_path() + " has invalid dim " + std::to_string(dim));
  }

  std::vector<float> load_vector(int64_t id) {
    if (exact_vectors) {  // an on-disk build: its catalog keeps no vectors
      if (const float* v = exact_vectors->row(id)) return std::vector<float>(v, v + dim);
    }
    Stmt s(db, "SELECT vector FROM items WHERE id = ?1");
    s.bind(1, id);
    if (!s.step()) throw Error(ErrorCode::NotFound, "no indexed item with id " + std::to_string(id) + " in " + dir);
    if (s.bytes(0) != static_cast<size_t>(dim) * sizeof(float))
      throw Error(ErrorCode::Format, "index catalog " + catalog_path() + ": vector of item " + std::to_string(id) + " has " +
                                         std::to_string(s.bytes(0)) + " bytes, expected " + std::to_string(dim * sizeof(float)));
    std::vector<float> v(static_cast<size_t>(dim));
    std::memcpy(v.data(), s.blob(0), v.size() * sizeof(float));
    return v;
  }

  // Streams (id, vector) pairs of items matching `where` in chunks.
  template <typename F>
  void for_vectors(const std::string& where, int64_t bind_value, F&& f, int64_t chunk = 8192) {
    // An on-disk build's vectors are in its exact vector file, not in the catalog.
    const std::string sql = std::string("SELECT id, ") + (exact_vectors ? "NULL" : "vector") + " FROM items " + where + " ORDER BY id";
    Stmt s(db, sql.c_str());
    if (where.find("?1") != std::string::npos) s.bind(1, bind_value);
    std::vector<faiss::Index::idx_t> ids;
    std::vector<float> vecs;
    auto emit = [&] {
      if (!ids.empty()) f(static_cast<int64_t>(ids.size()), vecs.data(), ids.data());
      ids.clear();
      vecs.clear();
    };
    while (s.step()) {
      const int64_t id = s.i64(0);
      if (exact_vectors) {
        const float* v = exact_vectors->row(id);
        if (!v) throw Error(ErrorCode::Format, "exact vector file of " + dir + " has no vector for item " + std::to_string(id));
        ids.push_back(id);
        vecs.insert(vecs.end(), v, v + dim);
        if (static_cast<int64_t>(ids.size()) >= chunk) emit();
        continue;
      }
      if (s.bytes(1) != static_cast<size_t>(dim) * sizeof(float))
        throw Error(ErrorCode::Format, "index catalog " + catalog_path() + ": vector of item " + std::to_string(id) + " has " +
                                           std::to_string(s.bytes(1)) + " bytes, expected " + std::to_string(dim * sizeof(float)));
      ids.push_back(id);
      const float* p = static_cast<const float*>(s.blob(1));
      vecs.insert(vecs.end(), p, p + dim);
      if (static_cast<int64_t>(ids.size()) >= chunk) emit();
    }
    emit();
  }

  bool needs_training() const { return search::kind_needs_training(kind, dim); }
  int64_t effective_train_min() const { return train_min > 0 ? train_min : search::auto_train_min(kind, dim); }

  // Builds the faiss structure from every stored vector (training when the kind needs it and the
  // catalog is big enough; otherwise staging in an exact flat index).
  void rebuild_structure() {
    const int64_t n = item_count();
    const bool train = needs_training();
    if (train && n < effective_train_min()) {
      factory = "Flat";
      trained = false;
    } else {
      factory = search::resolve_factory(kind, dim, n);
      trained = true;
    }
    auto idx = search::make_index(factory, dim);
    try {
      if (train && trained) {
        std::vector<float> all;  // training sees every vector (subsampled inside)
        all.reserve(static_cast<size_t>(n) * dim);
        for_vectors("", 0, [&](int64_t m, const float* v, const faiss::Index::idx_t*) { all.insert(all.end(), v, v + m * dim); });
        search::train_index(*idx, all.data(), n);
      }
      for_vectors("", 0, [&](int64_t m, const float* v, const faiss::Index::idx_t* ids) { idx->add_with_ids(m, v, ids); });
    } catch (const faiss::FaissException& e) {
      throw Error(ErrorCode::Internal, "building the faiss index failed: " + first_line(e.what()));
    }
    fidx = std::move(idx);
    fidx_gen = generation();
    tomb_ = std::make_shared<std::unordered_set<int64_t>>();
    clear_delta();
    catch_up_view(fidx_gen);
    publish_state();
  }

  // Trains when an untrained kind has reached its training size.
  bool maybe_train() {
    if (trained || !needs_training()) return false;
    if (item_count() < effective_train_min()) return false;
    if (!in_exclusive) {  // replaces the structure: after the change releases write_mu (search/call_lock.h)
      exclusive_due = true;
      return false;
    }
    rebuild_structure();
    notes.push_back("trained " + factory + " on " + std::to_string(fidx->ntotal) + " vectors");
    return true;
  }

  // An on-disk build serves its memory-mapped structure instead of the cache; it is read-only.
  bool open_ondisk() {
    Stmt s(db, "SELECT value FROM meta WHERE key = 'ondisk'");
    if (!s.step()) return false;
    const std::string built = s.text(0);
    if (mode == Mode::ReadWrite)
      throw Error(ErrorCode::InvalidArgument, "index " + dir + " is an on-disk build (" + built +
                                                  ") and is read-only; build it again with 'clipkit index build' to change it");
    fidx = search::open_ondisk_index(dir, dim, item_count());
    exact_vectors = search::ExactVectors::open_if_present(dir, dim, item_count());
    if (!exact_vectors) {
      // The catalog of an on-disk build keeps no vectors (empty values): they are only in the file.
      Stmt v(db, "SELECT length(vector) FROM items LIMIT 1");
      if (v.step() && v.i64(0) == 0)
        throw Error(ErrorCode::NotFound, "index " + dir + " is an on-disk build whose exact vector file " + search::kExactVectorsName + " is missing");
    }
    factory = built;
    trained = true;
    fidx_gen = saved_gen = generation();
    return true;
  }

  // Brings the faiss cache up to date with the catalog (see the header comment of index.h).
  void reconcile() {
    if (open_ondisk()) return;
    const int64_t gen = generation();
    const int64_t n = item_count();
    int64_t remove_gen = 0;
    try {
      remove_gen = std::stoll(meta("remove_gen"));
    } catch (const std::logic_error&) {
      throw Error(ErrorCode::Format, "index catalog " + catalog_path() + " has a malformed 'remove_gen' entry");
    }
    search::CacheHeader h;
    std::unique_ptr<faiss::IndexIDMap2> loaded;
    std::error_code ec;
    if (fs::exists(cache_path(), ec)) {
      try {
        // A catalog that recorded its cache's checksum reads only that cache; any other is rebuilt.
        const std::optional<uint64_t> recorded = recorded_cache_checksum();
        loaded = search::load_cache(cache_path(), dim, &h, recorded ? &*recorded : nullptr);
      } catch (const Error& e) {
        notes.push_back(std::string(e.what()) + "; rebuilt from the catalog");
      }
    } else if (n > 0) {
      notes.push_back("vector cache " + cache_path() + " is missing; rebuilt from the catalog");
    }
    const int64_t removed_held = loaded ? held_removed(*loaded) : 0;
    if (loaded && h.generation == gen && loaded->ntotal == n + removed_held) {
      fidx = std::move(loaded);
      factory = h.factory;
      trained = h.trained != 0;
      fidx_gen = gen;
      saved_gen = gen;
      return;
    }
    if (loaded && h.generation < gen && (remove_gen <= h.generation || removals_listed(remove_gen))) {
      fidx = std::move(loaded);
      factory = h.factory;
      trained = h.trained != 0;
      const int64_t before = fidx->ntotal;
      size_t dropped = 0;
      try {
        for_vectors(kChangedSince, h.generation,
                    [&](int64_t m, const float* v, const faiss::Index::idx_t* ids) { fidx->add_with_ids(m, v, ids); });
        if (remove_gen > h.generation && search::supports_remove(*fidx)) {
          // removed since the cache was written (a structure without removal holds them as tombstones)
          std::vector<faiss::Index::idx_t> gone;
          Stmt r(db, "SELECT id FROM removed_items WHERE gen > ?1");
          r.bind(1, h.generation);
          while (r.step()) gone.push_back(r.i64(0));
          faiss::IDSelectorBatch sel(gone.size(), gone.data());
          dropped = fidx->remove_ids(sel);
        }
      } catch (const faiss::FaissException& e) {
        throw Error(ErrorCode::Internal, "updating the faiss index failed: " + first_line(e.what()));
      }
      fidx_gen = gen;
      if (fidx->ntotal == n + removed_held) {
        notes.push_back("vector cache was behind the catalog (generation " + std::to_string(h.generation) + " < " +
                        std::to_string(gen) + "): added " + std::to_string(fidx->ntotal + static_cast<int64_t>(dropped) - before) +
                        " vectors from the catalog" + (dropped ? " and removed " + std::to_string(dropped) : std::string()));
        return;
      }
      notes.push_back("vector cache disagreed with the catalog; rebuilt from the catalog");
    } else if (loaded) {
      notes.push_back("vector cache generation " + std::to_string(h.generation) + " does not match the catalog (" +
                      std::to_string(gen) + "); rebuilt from the catalog");
    }
    rebuild_structure();
  }

  // The ids of removed items that a structure without removal still holds: they become the
  // tombstones (none when the structure can remove ids, or the catalog lists no removals).
  int64_t held_removed(const faiss::IndexIDMap2& idx) {
    auto t = std::make_shared<std::unordered_set<int64_t>>();
    tomb_ = t;
    if (search::supports_remove(idx) || !table_exists("removed_items")) return 0;
    Stmt r(db, "SELECT id FROM removed_items");
    while (r.step())
      if (idx.rev_map.count(r.i64(0))) t->insert(r.i64(0));
    return static_cast<int64_t>(t->size());
  }

  // Writes the cache file (with `rw` exclusive, or while nothing else uses the Index): the delta
  // and the tombstones are merged into the structure first.
  void flush() {
    if (mode != Mode::ReadWrite || !fidx) return;
    merge_pending();
    if (saved_gen == fidx_gen && fs::exists(cache_path())) return;
    search::CacheHeader h;
    h.trained = trained ? 1 : 0;
    h.generation = fidx_gen;
    h.ntotal = fidx->ntotal;
    h.factory = factory;
    const uint64_t sum = search::save_cache(cache_path(), *fidx, h);
    set_meta("cache_checksum", std::to_string(sum));
    saved_gen = fidx_gen;
  }

  void take_lock() {
    const std::string p = (fs::path(dir) / kLockName).string();
    lock_fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0) throw Error(ErrorCode::Io, "cannot open lock file " + p + ": " + std::strerror(errno));
    // A reader may hold the lock for a moment while it writes back a repaired cache.
    int tries = 0;
    while (flock(lock_fd, LOCK_EX | LOCK_NB) != 0 && ++tries < 50) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (tries >= 50)
      throw Error(ErrorCode::Io, "index " + dir + " is being modified by another process (lock " + p + " is held)");
  }

  void fill_paths(CatalogItem& it) {
    Stmt f(db, "SELECT path, mtime_ns FROM files WHERE item_id = ?1 ORDER BY path");
    f.bind(1, it.id);
    while (f.step()) {
      it.paths.push_back(f.text(0));
      it.mtimes_ns.push_back(f.i64(1));
    }
    Stmt t(db, "SELECT DISTINCT t.tag FROM tags t JOIN files f ON f.path = t.path WHERE f.item_id = ?1 ORDER BY t.tag");
    t.bind(1, it.id);
    while (t.step()) it.tags.push_back(t.text(0));
  }

  bool get_item(int64_t id, CatalogItem* out) {
    Stmt s(db, "SELECT id, sha256, size, width, height, added FROM items WHERE id = ?1");
    s.bind(1, id);
    if (!s.step()) return false;
    if (!out) return true;
    CatalogItem it;
    it.id = s.i64(0);
    it.sha256 = s.text(1);
    it.size = s.i64(2);
    it.width = static_cast<int>(s.i64(3));
    it.height = static_cast<int>(s.i64(4));
    it.added = s.f64(5);
    fill_paths(it);
    *out = std::move(it);
    return true;
  }

  // One committed change: new items, file rows, orphan cleanup; returns ids to add/remove in faiss.
  struct Change {
    struct NewItem {
      std::string sha256;
      int64_t size = 0;
      int width = 0, height = 0;
      std::vector<float> vector;
    };
    struct FileRow {
      std::string path, sha256;
      int64_t size = 0, mtime_ns = 0;
    };
    std::vector<NewItem> items;
    std::vector<FileRow> files;
    std::vector<std::string> tags;
    std::map<std::string, std::string> meta;  // path -> metadata JSON (replaces the path's)
  };

  // Applies a change in one transaction and to faiss. Returns the ids of the new items.
  std::vector<int64_t> commit(const Change& c) {
    const int64_t gen = generation() + 1;
    const double now = unix_now();
    std::vector<int64_t> new_ids;
    std::vector<faiss::Index::idx_t> add_ids;
    std::vector<float> add_vecs;
    std::vector<int64_t> orphans;
    {
      Transaction tx(db);
      Stmt find_sha(db, "SELECT id FROM items WHERE sha256 = ?1");
      Stmt ins_item(db, "INSERT INTO items(sha256, size, width, height, added, gen, vector) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)");
      for (const auto& it : c.items) {
        find_sha.reset();
        find_sha.bind(1, it.sha256);
        if (find_sha.step()) {
          new_ids.push_back(find_sha.i64(0));
          continue;
        }
        if (it.vector.size() != static_cast<size_t>(dim))
          throw Error(ErrorCode::Shape, "vector for " + it.sha256 + " has " + std::to_string(it.vector.size()) + " values, the index dim is " +
                                            std::to_string(dim));
        std::vector<float> v = it.vector;
        for (float x : v)
          if (!std::isfinite(x)) throw Error(ErrorCode::InvalidArgument, "vector for content " + it.sha256 + " is not finite");
        normalize_vec(v.data(), dim);
        ins_item.reset();
        ins_item.bind(1, it.sha256).bind(2, it.size).bind(3, it.width).bind(4, it.height).bind(5, now).bind(6, gen);
        ins_item.bind_blob(7, v.data(), v.size() * sizeof(float));
        ins_item.run();
        const int64_t id = sqlite3_last_insert_rowid(db.handle());
        new_ids.push_back(id);
        add_ids.push_back(id);
        add_vecs.insert(add_vecs.end(), v.begin(), v.end());
      }
      Stmt old_file(db, "SELECT item_id FROM files WHERE path = ?1");
      Stmt up_file(db,
                   "INSERT INTO files(path, item_id, size, mtime_ns, added) VALUES(?1, ?2, ?3, ?4, ?5) "
                   "ON CONFLICT(path) DO UPDATE SET item_id = excluded.item_id, size = excluded.size, mtime_ns = excluded.mtime_ns");
      Stmt ins_tag(db, "INSERT OR IGNORE INTO tags(path, tag) VALUES(?1, ?2)");
      std::set<int64_t> maybe_orphan;
      for (const auto& f : c.files) {
        find_sha.reset();
        find_sha.bind(1, f.sha256);
        if (!find_sha.step()) throw Error(ErrorCode::Internal, "content " + f.sha256 + " of " + f.path + " is not in the catalog");
        const int64_t item = find_sha.i64(0);
        old_file.reset();
        old_file.bind(1, f.path);
        if (old_file.step() && old_file.i64(0) != item) maybe_orphan.insert(old_file.i64(0));
        up_file.reset();
        up_file.bind(1, f.path).bind(2, item).bind(3, f.size).bind(4, f.mtime_ns).bind(5, now).run();
        log_change(f.path, gen);
        for (const auto& t : c.tags) {
          ins_tag.reset();
          ins_tag.bind(1, f.path).bind(2, t).run();
        }
        const auto mi = c.meta.find(f.path);
        if (mi != c.meta.end()) {
          Stmt um(db, "INSERT INTO path_meta(path, meta) VALUES(?1, ?2) ON CONFLICT(path) DO UPDATE SET meta = excluded.meta");
          um.bind(1, f.path).bind(2, mi->second).run();
        }
      }
      orphans = delete_orphans(maybe_orphan, gen);
      set_meta("generation", std::to_string(gen));
      tx.commit();
    }
    apply_faiss(add_ids, add_vecs, orphans, gen);
    return new_ids;
  }

  std::vector<int64_t> delete_orphans(const std::set<int64_t>& candidates, int64_t gen) {
    std::vector<int64_t> orphans;
    Stmt cnt(db, "SELECT count(*) FROM files WHERE item_id = ?1");
    Stmt del(db, "DELETE FROM items WHERE id = ?1");
    for (int64_t id : candidates) {
      cnt.reset();
      cnt.bind(1, id);
      cnt.step();
      if (cnt.i64(0) != 0) continue;
      del.reset();
      del.bind(1, id).run();
      Stmt rec(db, "INSERT OR REPLACE INTO removed_items(id, gen) VALUES(?1, ?2)");
      rec.bind(1, id).bind(2, gen).run();
      orphans.push_back(id);
    }
    if (!orphans.empty()) set_meta("remove_gen", std::to_string(gen));
    return orphans;
  }

  void apply_faiss(const std::vector<faiss::Index::idx_t>& add_ids, const std::vector<float>& add_vecs,
                   const std::vector<int64_t>& orphans, int64_t gen) {
    stage(add_ids, add_vecs, orphans, gen);
  }
};


}  // namespace clipkit
