#include "clipkit/index.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <faiss/IndexFlat.h>
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
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "clipkit/model.h"
#include "core/mapped_file.h"
#include "search/sqlite.h"
#include "search/flat_scan.h"
#include "search/vector_store.h"

namespace fs = std::filesystem;

#include "io/download.h"

namespace clipkit {

using search::Db;
using search::Stmt;
using search::Transaction;

std::string content_sha256(const void* data, size_t size) { return sha256_digest_hex(data, size); }

namespace {

constexpr const char* kCatalogName = "catalog.sqlite";
constexpr const char* kCacheName = "vectors.faiss";
constexpr const char* kLockName = "lock";
constexpr int kFormatVersion = 1;

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string normalize_path(const std::string& p) {
  std::error_code ec;
  fs::path a = fs::absolute(fs::path(p), ec);
  if (ec) a = fs::path(p);
  std::string s = a.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

bool is_image_name(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e == ".jpg" || e == ".jpeg" || e == ".png" || e == ".webp" || e == ".bmp" || e == ".gif";
}

void normalize_vec(float* v, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += static_cast<double>(v[i]) * v[i];
  if (s <= 0) return;
  const float inv = static_cast<float>(1.0 / std::sqrt(s));
  for (int64_t i = 0; i < d; ++i) v[i] *= inv;
}

float dot(const float* a, const float* b, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(s);
}

std::string first_line(const std::string& s) {
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

template <typename F>
void parallel_for(int64_t n, int threads, F&& f) {
  if (n <= 0) return;
  int t = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  t = static_cast<int>(std::min<int64_t>(t, n));
  if (t <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::thread> pool;
  for (int k = 0; k < t; ++k)
    pool.emplace_back([&] {
      for (int64_t i; (i = next.fetch_add(1)) < n;) f(i);
    });
  for (auto& th : pool) th.join();
}

}  // namespace

struct Index::Impl {
  std::string dir;
  Mode mode = Mode::ReadWrite;
  int lock_fd = -1;
  Db db;
  // meta
  std::string fingerprint, model_path, model_arch, kind;
  int dim = 0;
  int64_t train_min = 0;
  double created = 0;
  // faiss
  std::unique_ptr<faiss::IndexIDMap2> fidx;
  std::string factory;      // what fidx was built from
  bool trained = true;      // fidx holds the requested kind (false: staged flat)
  int64_t fidx_gen = 0;     // catalog generation fidx reflects
  int64_t saved_gen = -1;   // generation of the cache file on disk
  std::vector<std::string> notes;

  ~Impl() {
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
    {
      Stmt s(db, "SELECT value FROM meta WHERE key = 'model_arch'");  // absent in older catalogs
      model_arch = s.step() ? s.text(0) : std::string();
    }
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
    const std::string sql = "SELECT id, vector FROM items " + where + " ORDER BY id";
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
  }

  // Trains when an untrained kind has reached its training size.
  bool maybe_train() {
    if (trained || !needs_training()) return false;
    if (item_count() < effective_train_min()) return false;
    rebuild_structure();
    notes.push_back("trained " + factory + " on " + std::to_string(fidx->ntotal) + " vectors");
    return true;
  }

  // Brings the faiss cache up to date with the catalog (see the header comment of index.h).
  void reconcile() {
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
    if (loaded && h.generation == gen && loaded->ntotal == n) {
      fidx = std::move(loaded);
      factory = h.factory;
      trained = h.trained != 0;
      fidx_gen = gen;
      saved_gen = gen;
      return;
    }
    if (loaded && h.generation < gen && remove_gen <= h.generation) {
      fidx = std::move(loaded);
      factory = h.factory;
      trained = h.trained != 0;
      const int64_t before = fidx->ntotal;
      try {
        for_vectors("WHERE gen > ?1", h.generation,
                    [&](int64_t m, const float* v, const faiss::Index::idx_t* ids) { fidx->add_with_ids(m, v, ids); });
      } catch (const faiss::FaissException& e) {
        throw Error(ErrorCode::Internal, "updating the faiss index failed: " + first_line(e.what()));
      }
      fidx_gen = gen;
      if (fidx->ntotal == n) {
        notes.push_back("vector cache was behind the catalog (generation " + std::to_string(h.generation) + " < " +
                        std::to_string(gen) + "): added " + std::to_string(fidx->ntotal - before) + " vectors from the catalog");
        return;
      }
      notes.push_back("vector cache disagreed with the catalog; rebuilt from the catalog");
    } else if (loaded) {
      notes.push_back("vector cache generation " + std::to_string(h.generation) + " does not match the catalog (" +
                      std::to_string(gen) + "); rebuilt from the catalog");
    }
    rebuild_structure();
  }

  void flush() {
    if (mode != Mode::ReadWrite || !fidx) return;
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

  // Removes ids from faiss after a committed removal.
  void faiss_remove(const std::vector<int64_t>& ids) {
    if (ids.empty()) return;
    if (!search::supports_remove(*fidx)) {
      rebuild_structure();
      return;
    }
    std::vector<faiss::Index::idx_t> v(ids.begin(), ids.end());
    faiss::IDSelectorBatch sel(v.size(), v.data());
    try {
      fidx->remove_ids(sel);
    } catch (const faiss::FaissException&) {
      rebuild_structure();
    }
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

  // Does any path of item `id` pass the filter? Returns the first such path.
  bool filter_path(const CatalogItem& it, const SearchFilter& f, std::string* path) {
    for (const auto& p : it.paths) {
      if (!f.path_prefix.empty() && p.compare(0, f.path_prefix.size(), f.path_prefix) != 0) continue;
      bool all = true;
      for (const auto& tag : f.tags) {
        Stmt t(db, "SELECT 1 FROM tags WHERE path = ?1 AND tag = ?2");
        t.bind(1, p).bind(2, tag);
        if (!t.step()) {
          all = false;
          break;
        }
      }
      if (!all) continue;
      *path = p;
      return true;
    }
    return false;
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
        for (const auto& t : c.tags) {
          ins_tag.reset();
          ins_tag.bind(1, f.path).bind(2, t).run();
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
      orphans.push_back(id);
    }
    if (!orphans.empty()) set_meta("remove_gen", std::to_string(gen));
    return orphans;
  }

  void apply_faiss(const std::vector<faiss::Index::idx_t>& add_ids, const std::vector<float>& add_vecs,
                   const std::vector<int64_t>& orphans, int64_t gen) {
    // Keep fidx in step; if it was behind (should not happen), rebuild from the catalog.
    if (fidx_gen != gen - 1) {
      rebuild_structure();
      return;
    }
    try {
      if (!add_ids.empty()) fidx->add_with_ids(static_cast<faiss::Index::idx_t>(add_ids.size()), add_vecs.data(), add_ids.data());
    } catch (const faiss::FaissException& e) {
      fidx_gen = -1;
      throw Error(ErrorCode::Internal, "adding to the faiss index failed: " + first_line(e.what()));
    }
    fidx_gen = gen;
    faiss_remove(orphans);
    fidx_gen = gen;
  }
};

Index::Index(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Index::Index(Index&&) noexcept = default;
Index& Index::operator=(Index&&) noexcept = default;
Index::~Index() {
  if (!impl_) return;
  try {
    impl_->flush();
  } catch (...) {
    // the cache is rebuilt from the catalog on the next open
  }
}

Index Index::create(const std::string& dir, const ModelInfo& model, const IndexCreateOptions& options) {
  const int dim = model.arch.embed_dim;
  if (dim <= 0) throw Error(ErrorCode::InvalidArgument, "model " + model.path + " reports no embedding dim");
  if (model.fingerprint.empty()) throw Error(ErrorCode::InvalidArgument, "model " + model.path + " has no fingerprint");
  const std::string kind = search::check_kind(options.kind, dim);
  if (options.train_min < 0) throw Error(ErrorCode::InvalidArgument, "train_min must be >= 0");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(ErrorCode::Io, "cannot create index folder " + dir + ": " + ec.message());
  if (fs::exists(fs::path(dir) / kCatalogName)) throw Error(ErrorCode::InvalidArgument, "an index already exists in " + dir);
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->mode = Mode::ReadWrite;
  impl->take_lock();
  impl->db.open(impl->catalog_path(), true, false);
  Db& db = impl->db;
  db.exec("PRAGMA journal_mode=WAL");
  db.exec("PRAGMA synchronous=FULL");
  {
    Transaction tx(db);
    db.exec(
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE items(id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,"
        " width INTEGER NOT NULL, height INTEGER NOT NULL, added REAL NOT NULL, gen INTEGER NOT NULL, vector BLOB NOT NULL);"
        "CREATE INDEX items_gen ON items(gen);"
        "CREATE TABLE files(path TEXT PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items(id), size INTEGER NOT NULL,"
        " mtime_ns INTEGER NOT NULL, added REAL NOT NULL);"
        "CREATE INDEX files_item ON files(item_id);"
        "CREATE TABLE tags(path TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY(path, tag));");
    impl->set_meta("format", "clipkit-index");
    impl->set_meta("version", std::to_string(kFormatVersion));
    impl->set_meta("model_fingerprint", model.fingerprint);
    impl->set_meta("model_path", model.path.empty() ? std::string() : normalize_path(model.path));
    impl->set_meta("model_arch", model.arch_name);
    impl->set_meta("dim", std::to_string(dim));
    impl->set_meta("kind", kind);
    impl->set_meta("train_min", std::to_string(options.train_min));
    impl->set_meta("created", std::to_string(unix_now()));
    impl->set_meta("generation", "0");
    impl->set_meta("remove_gen", "0");
    tx.commit();
  }
  impl->read_meta();
  impl->rebuild_structure();
  impl->flush();
  return Index(std::move(impl));
}

Index Index::open(const std::string& dir, Mode mode) {
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->mode = mode;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(ErrorCode::NotFound, "index folder " + dir + " does not exist");
  if (!fs::exists(impl->catalog_path(), ec))
    throw Error(ErrorCode::NotFound, "no index in " + dir + " (" + kCatalogName + " is missing; create one with 'clipkit index create')");
  if (mode == Mode::ReadWrite) {
    impl->take_lock();
    // Leftovers of a cache write interrupted by a crash (we hold the writer lock).
    const std::string stale = std::string(kCacheName) + ".tmp.";
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.path().filename().string().rfind(stale, 0) == 0) fs::remove(e.path(), ec);
  }
  // Read-only openers still need write access to the WAL shared memory; open read-write unless
  // the folder is not writable.
  const bool ro = mode == Mode::ReadOnly && access(dir.c_str(), W_OK) != 0;
  impl->db.open(impl->catalog_path(), false, ro);
  impl->db.exec("PRAGMA synchronous=FULL");
  impl->read_meta();
  impl->reconcile();
  if (mode == Mode::ReadWrite) {
    impl->maybe_train();
    impl->flush();
  } else if (impl->saved_gen != impl->fidx_gen && !ro) {
    // A reader that had to repair the cache writes it back when no writer is active, so that the
    // next open is fast again.
    const std::string p = (fs::path(dir) / kLockName).string();
    const int fd = ::open(p.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        impl->mode = Mode::ReadWrite;
        try {
          impl->flush();
        } catch (const Error&) {
          // only a cache; the next writer refreshes it
        }
        impl->mode = Mode::ReadOnly;
      }
      close(fd);
    }
  }
  return Index(std::move(impl));
}

IndexInfo Index::info() const {
  Impl& m = *impl_;
  IndexInfo i;
  i.dir = m.dir;
  i.model_fingerprint = m.fingerprint;
  i.model_path = m.model_path;
  i.model_arch = m.model_arch;
  i.dim = m.dim;
  i.kind = m.kind;
  i.structure = m.factory;
  i.trained = m.trained;
  i.train_min = m.needs_training() ? m.effective_train_min() : 0;
  i.items = m.item_count();
  i.files = m.db.scalar_i64("SELECT count(*) FROM files");
  i.generation = m.generation();
  i.created = m.created;
  return i;
}

int Index::dim() const { return impl_->dim; }
const std::string& Index::dir() const { return impl_->dir; }

const std::vector<std::string>& Index::open_notes() const { return impl_->notes; }

void Index::check_model(const Model& model) const {
  const ModelInfo& mi = model.info();
  if (mi.fingerprint != impl_->fingerprint || mi.arch.embed_dim != impl_->dim)
    throw Error(ErrorCode::Mismatch, "index " + impl_->dir + " was built with model " +
                                         (impl_->model_path.empty() ? std::string("(unknown path)") : impl_->model_path) +
                                         " (fingerprint " + impl_->fingerprint + ", dim " + std::to_string(impl_->dim) +
                                         "), not with " + (mi.path.empty() ? std::string("this model") : mi.path) +
                                         " (fingerprint " + mi.fingerprint + ", dim " + std::to_string(mi.arch.embed_dim) + ")");
}

std::vector<int64_t> Index::add_vectors(const std::vector<VectorRecord>& records) {
  if (impl_->mode != Mode::ReadWrite) throw Error(ErrorCode::InvalidArgument, "index " + impl_->dir + " is open read-only");
  Impl::Change c;
  // Group records by tag set: the change applies one tag list, so commit per distinct tag list.
  std::vector<int64_t> ids;
  size_t i = 0;
  while (i < records.size()) {
    c = Impl::Change{};
    c.tags = records[i].tags;
    size_t j = i;
    for (; j < records.size() && records[j].tags == c.tags; ++j) {
      const auto& r = records[j];
      if (r.sha256.empty() || r.path.empty())
        throw Error(ErrorCode::InvalidArgument, "vector record '" + r.path + "' needs both a path and a sha256");
      c.items.push_back({r.sha256, r.size, r.width, r.height, r.vector});
      c.files.push_back({normalize_path(r.path), r.sha256, r.size, r.mtime_ns});
    }
    auto got = impl_->commit(c);
    ids.insert(ids.end(), got.begin(), got.end());
    i = j;
  }
  impl_->maybe_train();
  return ids;
}

AddReport Index::add_files(const std::vector<std::string>& inputs, const Model& model, const AddOptions& options) {
  Impl& m = *impl_;
  if (m.mode != Mode::ReadWrite) throw Error(ErrorCode::InvalidArgument, "index " + m.dir + " is open read-only");
  check_model(model);
  if (options.batch <= 0) throw Error(ErrorCode::InvalidArgument, "batch size must be positive, got " + std::to_string(options.batch));
  for (const auto& t : options.tags)
    if (t.empty()) throw Error(ErrorCode::InvalidArgument, "empty tag");
  AddReport rep;
  // 1. Expand the inputs into a sorted list of candidate files.
  std::vector<std::string> files;
  const std::string index_dir = normalize_path(m.dir);
  for (const auto& in : inputs) {
    std::error_code ec;
    const fs::path p(in);
    const auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) {
      rep.failures.push_back({in, "not found"});
      continue;
    }
    if (fs::is_directory(st)) {
      auto take = [&](const fs::directory_entry& e) {
        std::error_code e2;
        if (e.is_regular_file(e2) && is_image_name(e.path())) {
          const std::string np = normalize_path(e.path().string());
          if (np.compare(0, index_dir.size() + 1, index_dir + "/") != 0) files.push_back(np);
        }
      };
      if (options.recursive) {
        for (fs::recursive_directory_iterator it(p, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end;
             it.increment(ec))
          take(*it);
      } else {
        for (fs::directory_iterator it(p, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end; it.increment(ec))
          take(*it);
      }
      if (ec) rep.failures.push_back({in, "cannot list folder: " + ec.message()});
    } else {
      files.push_back(normalize_path(in));
    }
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  rep.candidates = static_cast<int64_t>(files.size());

  const PreprocessConfig pc = model.preprocess_config();
  const int64_t px = 3LL * pc.resolution * pc.resolution;
  AddProgress prog;
  prog.total = rep.candidates;

  struct Work {
    std::string path;
    int64_t size = 0, mtime_ns = 0;
    bool known = false;          // path already indexed
    int64_t known_item = -1;
    bool skip = false;
    std::string data, sha, error;
    bool needs_embed = false;
    int width = 0, height = 0;
    std::vector<float> pixels;
  };

  for (size_t b0 = 0; b0 < files.size(); b0 += static_cast<size_t>(options.batch)) {
    const size_t b1 = std::min(files.size(), b0 + static_cast<size_t>(options.batch));
    std::vector<Work> w(b1 - b0);
    {
      Stmt known(m.db, "SELECT item_id, size, mtime_ns FROM files WHERE path = ?1");
      for (size_t i = 0; i < w.size(); ++i) {
        Work& x = w[i];
        x.path = files[b0 + i];
        struct stat st {};
        if (::stat(x.path.c_str(), &st) != 0) {
          x.error = std::string("cannot stat: ") + std::strerror(errno);
          continue;
        }
        if (!S_ISREG(st.st_mode)) {
          x.error = "not a regular file";
          continue;
        }
        x.size = st.st_size;
        x.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
        known.reset();
        known.bind(1, x.path);
        if (known.step()) {
          x.known = true;
          x.known_item = known.i64(0);
          if (known.i64(1) == x.size && known.i64(2) == x.mtime_ns) x.skip = true;
        }
      }
    }
    // Read + hash (parallel).
    parallel_for(static_cast<int64_t>(w.size()), options.threads, [&](int64_t i) {
      Work& x = w[static_cast<size_t>(i)];
      if (!x.error.empty() || x.skip) return;
      try {
        x.data = read_file(x.path);
        x.size = static_cast<int64_t>(x.data.size());
        x.sha = content_sha256(x.data.data(), x.data.size());
      } catch (const std::exception& e) {
        x.error = first_line(e.what());
      }
    });
    // Which contents are new?
    std::set<std::string> embedding;  // sha's to embed in this batch
    {
      Stmt find(m.db, "SELECT id FROM items WHERE sha256 = ?1");
      for (auto& x : w) {
        if (!x.error.empty() || x.skip) continue;
        find.reset();
        find.bind(1, x.sha);
        if (find.step()) continue;
        if (embedding.insert(x.sha).second) x.needs_embed = true;
      }
    }
    // Decode + preprocess the new contents (parallel).
    parallel_for(static_cast<int64_t>(w.size()), options.threads, [&](int64_t i) {
      Work& x = w[static_cast<size_t>(i)];
      if (!x.needs_embed) return;
      try {
        Image img = decode_image_memory(reinterpret_cast<const uint8_t*>(x.data.data()), x.data.size(), x.path);
        x.width = img.width;
        x.height = img.height;
        x.pixels.resize(static_cast<size_t>(px));
        preprocess(img, pc, x.pixels.data());
      } catch (const std::exception& e) {
        x.error = first_line(e.what());
        if (x.error.rfind(x.path + ": ", 0) == 0) x.error.erase(0, x.path.size() + 2);  // the report names the path
        x.needs_embed = false;
      }
      std::string().swap(x.data);
    });
    // Embed.
    std::vector<size_t> order;
    for (size_t i = 0; i < w.size(); ++i)
      if (w[i].needs_embed) order.push_back(i);
    Impl::Change c;
    c.tags = options.tags;
    if (!order.empty()) {
      std::vector<float> pixels(order.size() * static_cast<size_t>(px));
      for (size_t k = 0; k < order.size(); ++k)
        std::memcpy(pixels.data() + k * px, w[order[k]].pixels.data(), static_cast<size_t>(px) * sizeof(float));
      Embeddings e;
      std::string err;
      try {
        e = model.encode_images(pixels.data(), static_cast<int64_t>(order.size()), true);
        if (e.rows != static_cast<int64_t>(order.size()) || e.dim != m.dim)
          err = "model returned " + std::to_string(e.rows) + "x" + std::to_string(e.dim) + " embeddings";
      } catch (const std::exception& ex) {
        err = first_line(ex.what());
      }
      for (size_t k = 0; k < order.size(); ++k) {
        Work& x = w[order[k]];
        if (!err.empty()) {
          x.error = "embedding failed: " + err;
          continue;
        }
        c.items.push_back({x.sha, x.size, x.width, x.height, std::vector<float>(e.row(static_cast<int64_t>(k)), e.row(static_cast<int64_t>(k)) + m.dim)});
      }
    }
    // Why each content that failed failed: a path sharing that content gets the same reason.
    std::map<std::string, std::string> failed_content;
    for (const auto& x : w)
      if (!x.sha.empty() && !x.error.empty()) failed_content.emplace(x.sha, x.error);
    // Files to (re)link, and the report.
    std::set<std::string> embedded_ok;
    for (const auto& it : c.items) embedded_ok.insert(it.sha256);
    {
      Stmt find(m.db, "SELECT id FROM items WHERE sha256 = ?1");
      Stmt tagq(m.db, "SELECT 1 FROM tags WHERE path = ?1 AND tag = ?2");
      for (auto& x : w) {
        if (!x.error.empty()) {
          // a content shared with a failed embedding in the same batch fails too
          rep.failures.push_back({x.path, x.error});
          continue;
        }
        if (x.skip) {
          // unchanged; still attach new tags
          bool tag_missing = false;
          for (const auto& t : options.tags) {
            tagq.reset();
            tagq.bind(1, x.path).bind(2, t);
            if (!tagq.step()) tag_missing = true;
          }
          if (tag_missing) {
            Stmt sha(m.db, "SELECT i.sha256, f.size, f.mtime_ns FROM files f JOIN items i ON i.id = f.item_id WHERE f.path = ?1");
            sha.bind(1, x.path);
            if (sha.step()) c.files.push_back({x.path, sha.text(0), sha.i64(1), sha.i64(2)});
          }
          ++rep.skipped;
          continue;
        }
        find.reset();
        find.bind(1, x.sha);
        const bool in_catalog = find.step();
        const int64_t existing = in_catalog ? find.i64(0) : -1;
        if (!in_catalog && !embedded_ok.count(x.sha)) {
          const auto why = failed_content.find(x.sha);
          rep.failures.push_back({x.path, why != failed_content.end() ? why->second : "content could not be embedded"});
          continue;
        }
        c.files.push_back({x.path, x.sha, x.size, x.mtime_ns});
        if (x.known) {
          if (existing == x.known_item) ++rep.skipped;  // touched but same bytes
          else ++rep.updated;
        } else if (in_catalog || (x.needs_embed == false && embedded_ok.count(x.sha))) {
          ++rep.duplicates;
        } else {
          ++rep.added;
        }
      }
    }
    if (!c.items.empty() || !c.files.empty()) m.commit(c);
    prog.done = static_cast<int64_t>(b1);
    prog.batches++;
    if (options.on_batch) options.on_batch(prog);
  }
  rep.failed = static_cast<int64_t>(rep.failures.size());
  m.maybe_train();
  m.flush();
  return rep;
}

int64_t Index::remove_paths(const std::vector<std::string>& paths) {
  Impl& m = *impl_;
  if (m.mode != Mode::ReadWrite) throw Error(ErrorCode::InvalidArgument, "index " + m.dir + " is open read-only");
  const int64_t gen = m.generation() + 1;
  int64_t removed = 0;
  std::vector<int64_t> orphans;
  {
    Transaction tx(m.db);
    std::set<int64_t> touched;
    Stmt sel(m.db, "SELECT path, item_id FROM files WHERE path = ?1 OR substr(path, 1, length(?2)) = ?2");
    Stmt del(m.db, "DELETE FROM files WHERE path = ?1");
    Stmt deltags(m.db, "DELETE FROM tags WHERE path = ?1");
    for (const auto& p : paths) {
      const std::string np = normalize_path(p);
      sel.reset();
      sel.bind(1, np).bind(2, np == "/" ? np : np + "/");
      std::vector<std::pair<std::string, int64_t>> rows;
      while (sel.step()) rows.emplace_back(sel.text(0), sel.i64(1));
      for (const auto& [path, item] : rows) {
        del.reset();
        del.bind(1, path).run();
        deltags.reset();
        deltags.bind(1, path).run();
        touched.insert(item);
        ++removed;
      }
    }
    orphans = m.delete_orphans(touched, gen);
    if (removed == 0) return 0;  // rolls back (nothing changed)
    m.set_meta("generation", std::to_string(gen));
    tx.commit();
  }
  m.apply_faiss({}, {}, orphans, gen);
  m.flush();
  return removed;
}

void Index::rebuild(const std::string& kind_in, int64_t train_min) {
  Impl& m = *impl_;
  if (m.mode != Mode::ReadWrite) throw Error(ErrorCode::InvalidArgument, "index " + m.dir + " is open read-only");
  const std::string kind = search::check_kind(kind_in, m.dim);
  if (train_min < 0) throw Error(ErrorCode::InvalidArgument, "train_min must be >= 0");
  const int64_t gen = m.generation() + 1;
  {
    Transaction tx(m.db);
    m.set_meta("kind", kind);
    m.set_meta("train_min", std::to_string(train_min));
    m.set_meta("generation", std::to_string(gen));
    m.set_meta("remove_gen", std::to_string(gen));  // forces a full rebuild if the cache is stale
    tx.commit();
  }
  m.kind = kind;
  m.train_min = train_min;
  m.rebuild_structure();
  m.flush();
}

bool Index::find_path(const std::string& path, CatalogItem* out) const {
  Stmt s(impl_->db, "SELECT item_id FROM files WHERE path = ?1");
  s.bind(1, normalize_path(path));
  if (!s.step()) return false;
  return impl_->get_item(s.i64(0), out);
}

bool Index::find_id(int64_t id, CatalogItem* out) const { return impl_->get_item(id, out); }

std::vector<std::string> Index::folders() const {
  std::set<std::string> out;
  Stmt s(impl_->db, "SELECT path FROM files");
  while (s.step()) {
    const std::string p = s.text(0);
    const size_t slash = p.rfind('/');
    if (slash != std::string::npos) out.insert(slash == 0 ? "/" : p.substr(0, slash));
  }
  return {out.begin(), out.end()};
}

std::vector<float> Index::vector(int64_t id) const { return impl_->load_vector(id); }

std::vector<SearchHit> Index::search_vector(const std::vector<float>& query, const SearchOptions& options) {
  Impl& m = *impl_;
  if (static_cast<int>(query.size()) != m.dim)
    throw Error(ErrorCode::Shape, "query vector has " + std::to_string(query.size()) + " values, index dim is " + std::to_string(m.dim));
  if (options.k <= 0) throw Error(ErrorCode::InvalidArgument, "k must be positive, got " + std::to_string(options.k));
  std::vector<float> q = query;
  normalize_vec(q.data(), m.dim);
  SearchFilter filter = options.filter;
  if (!filter.path_prefix.empty()) {
    const bool dir_prefix = filter.path_prefix.back() == '/';
    filter.path_prefix = normalize_path(filter.path_prefix);
    if (dir_prefix && filter.path_prefix != "/") filter.path_prefix += '/';
  }
  const bool filtering = !filter.path_prefix.empty() || !filter.tags.empty();
  const std::unordered_set<int64_t> excluded(options.exclude_ids.begin(), options.exclude_ids.end());
  const int64_t ntotal = m.fidx->ntotal;
  std::vector<SearchHit> hits;
  if (ntotal == 0) return hits;
  const bool exact = m.factory == "Flat";
  int64_t fetch = options.k + static_cast<int64_t>(excluded.size());
  if (filtering) fetch = std::max<int64_t>(fetch * 4, 64);
  if (!exact) fetch = std::max<int64_t>(fetch, 4 * options.k);  // re-ranked exactly below
  std::unordered_set<int64_t> seen;
  for (;;) {
    const int64_t kk = std::min(fetch, ntotal);
    std::vector<float> dist(static_cast<size_t>(kk));
    std::vector<faiss::Index::idx_t> lab(static_cast<size_t>(kk));
    const auto* flat = exact ? dynamic_cast<const faiss::IndexFlat*>(m.fidx->index) : nullptr;
    if (flat && flat->metric_type == faiss::METRIC_INNER_PRODUCT && flat->ntotal == ntotal &&
        static_cast<int64_t>(m.fidx->id_map.size()) == ntotal) {
      // Exact: clipkit's own scan (search/flat_scan.h), several times faster than faiss's
      // one-query path on a portable faiss build.
      std::vector<int64_t> pos(static_cast<size_t>(kk));
      const int64_t got = search::flat_top_k(flat->get_xb(), ntotal, m.dim, q.data(), kk, dist.data(), pos.data());
      for (int64_t i = 0; i < kk; ++i)
        lab[static_cast<size_t>(i)] = i < got ? m.fidx->id_map[static_cast<size_t>(pos[static_cast<size_t>(i)])] : -1;
    } else {
      search::set_search_params(*m.fidx, kk, options.ef_search, options.nprobe);
      try {
        m.fidx->search(1, q.data(), kk, dist.data(), lab.data());
      } catch (const faiss::FaissException& e) {
        throw Error(ErrorCode::Internal, "faiss search failed: " + first_line(e.what()));
      }
    }
    // Candidates with exact scores.
    std::vector<std::pair<float, int64_t>> cand;
    int64_t returned = 0;
    for (int64_t i = 0; i < kk; ++i) {
      if (lab[static_cast<size_t>(i)] < 0) continue;
      ++returned;
      const int64_t id = lab[static_cast<size_t>(i)];
      if (excluded.count(id)) continue;
      float s = dist[static_cast<size_t>(i)];
      if (!exact) {
        Stmt v(m.db, "SELECT vector FROM items WHERE id = ?1");
        v.bind(1, id);
        if (!v.step() || v.bytes(0) != static_cast<size_t>(m.dim) * sizeof(float)) continue;
        s = dot(q.data(), static_cast<const float*>(v.blob(0)), m.dim);
      }
      cand.emplace_back(s, id);
    }
    std::stable_sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    hits.clear();
    bool below = false;
    for (const auto& [s, id] : cand) {
      if (s < options.min_score) {
        below = true;
        break;
      }
      CatalogItem it;
      if (!m.get_item(id, &it)) continue;
      std::string path = it.paths.empty() ? std::string() : it.paths.front();
      if (filtering && !m.filter_path(it, filter, &path)) continue;
      SearchHit h;
      h.score = s;
      h.path = path;
      h.item = std::move(it);
      hits.push_back(std::move(h));
      if (static_cast<int>(hits.size()) >= options.k) break;
    }
    const bool exhausted = kk >= ntotal || returned < kk;
    if (static_cast<int>(hits.size()) >= options.k || below || exhausted) break;
    fetch *= 4;
  }
  for (size_t i = 0; i < hits.size(); ++i) hits[i].rank = static_cast<int>(i + 1);
  return hits;
}

std::vector<SearchHit> Index::search(const Query& query, const Model* model, const SearchOptions& options) {
  SearchOptions o = options;
  if (query.exclude_items) {
    for (const auto& t : query.terms) {
      if (t.kind != QueryTerm::Kind::Item) continue;
      CatalogItem it;
      // resolved again in embed_query; cheap
      std::string v = t.value;
      if (!v.empty() && v[0] == '#') v = v.substr(1);
      bool found = find_path(t.value, &it);
      if (!found && !v.empty() && v.size() < 19 &&
          std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); }))
        found = find_id(std::stoll(v), &it);
      if (found) o.exclude_ids.push_back(it.id);
    }
  }
  return search_vector(embed_query(query, model), o);
}

std::vector<DedupGroup> Index::dedup(float threshold) {
  Impl& m = *impl_;
  if (!(threshold > -1.0f && threshold <= 1.0f))
    throw Error(ErrorCode::InvalidArgument, "dedup threshold must be in (-1, 1], got " + std::to_string(threshold));
  faiss::IndexFlatIP flat(m.dim);
  std::vector<int64_t> ids;
  m.for_vectors("", 0, [&](int64_t n, const float* v, const faiss::Index::idx_t* id) {
    flat.add(n, v);
    ids.insert(ids.end(), id, id + n);
  });
  const int64_t n = static_cast<int64_t>(ids.size());
  std::vector<int64_t> parent(static_cast<size_t>(n));
  std::iota(parent.begin(), parent.end(), 0);
  std::function<int64_t(int64_t)> find = [&](int64_t x) {
    while (parent[static_cast<size_t>(x)] != x) x = parent[static_cast<size_t>(x)] = parent[static_cast<size_t>(parent[static_cast<size_t>(x)])];
    return x;
  };
  if (n > 0) {
    // Range search in blocks: IP > radius; nudge the radius so that score == threshold counts.
    const float radius = std::nextafter(threshold, -2.0f);
    const int64_t block = 1024;
    std::vector<float> q;
    for (int64_t b = 0; b < n; b += block) {
      const int64_t e = std::min(n, b + block);
      faiss::RangeSearchResult res(e - b);
      flat.range_search(e - b, flat.get_xb() + b * m.dim, radius, &res);
      for (int64_t i = 0; i < e - b; ++i)
        for (size_t j = res.lims[i]; j < res.lims[i + 1]; ++j) {
          const int64_t a = b + i, c = res.labels[j];
          if (c == a || res.distances[j] < threshold) continue;
          const int64_t ra = find(a), rc = find(c);
          if (ra != rc) parent[static_cast<size_t>(std::max(ra, rc))] = std::min(ra, rc);
        }
    }
  }
  std::map<int64_t, std::vector<int64_t>> comps;
  for (int64_t i = 0; i < n; ++i) comps[find(i)].push_back(i);
  std::vector<DedupGroup> out;
  for (auto& [root, members] : comps) {
    CatalogItem first;
    m.get_item(ids[static_cast<size_t>(members.front())], &first);
    if (members.size() < 2 && first.paths.size() < 2) continue;
    DedupGroup g;
    const float* rv = flat.get_xb() + members.front() * m.dim;
    for (int64_t idx : members) {
      CatalogItem it;
      m.get_item(ids[static_cast<size_t>(idx)], &it);
      g.ids.push_back(it.id);
      g.scores.push_back(idx == members.front() ? 1.0f : dot(rv, flat.get_xb() + idx * m.dim, m.dim));
      g.paths.push_back(it.paths);
    }
    out.push_back(std::move(g));
  }
  return out;
}

VerifyReport Index::verify(bool deep) {
  Impl& m = *impl_;
  VerifyReport r;
  r.notes = m.notes;
  auto problem = [&](const std::string& s) {
    r.ok = false;
    r.problems.push_back(s);
  };
  {
    Stmt s(m.db, "PRAGMA integrity_check");
    while (s.step()) {
      const std::string line = s.text(0);
      if (line != "ok") problem("catalog: " + line);
    }
  }
  r.items = m.item_count();
  r.files = m.db.scalar_i64("SELECT count(*) FROM files");
  r.vectors = m.fidx ? m.fidx->ntotal : 0;
  // Catalog self-consistency.
  {
    Stmt s(m.db, "SELECT id, sha256, length(vector) FROM items WHERE length(vector) != ?1 OR length(sha256) != 64");
    s.bind(1, static_cast<int64_t>(m.dim) * 4);
    while (s.step()) problem("item " + std::to_string(s.i64(0)) + ": malformed vector (" + std::to_string(s.i64(2)) + " bytes) or hash");
  }
  {
    Stmt s(m.db, "SELECT i.id FROM items i LEFT JOIN files f ON f.item_id = i.id WHERE f.path IS NULL");
    while (s.step()) problem("item " + std::to_string(s.i64(0)) + " has no path");
  }
  {
    Stmt s(m.db, "SELECT f.path, f.item_id FROM files f LEFT JOIN items i ON i.id = f.item_id WHERE i.id IS NULL");
    while (s.step()) problem("path " + s.text(0) + " points to missing item " + std::to_string(s.i64(1)));
  }
  {
    Stmt s(m.db, "SELECT count(*) FROM tags t LEFT JOIN files f ON f.path = t.path WHERE f.path IS NULL");
    if (s.step() && s.i64(0) > 0) problem(std::to_string(s.i64(0)) + " tags belong to paths that are not indexed");
  }
  // Vector norms.
  int64_t bad_norm = 0;
  m.for_vectors("", 0, [&](int64_t n, const float* v, const faiss::Index::idx_t* ids) {
    for (int64_t i = 0; i < n; ++i) {
      const float nn = dot(v + i * m.dim, v + i * m.dim, m.dim);
      if (!(std::fabs(nn - 1.0f) < 1e-3f)) {
        if (bad_norm++ < 5) problem("item " + std::to_string(ids[i]) + ": stored vector is not unit length (|v|^2 = " + std::to_string(nn) + ")");
      }
    }
  });
  // Catalog vs faiss.
  if (r.vectors != r.items)
    problem("faiss holds " + std::to_string(r.vectors) + " vectors, the catalog " + std::to_string(r.items) + " items");
  {
    std::vector<int64_t> cat;
    Stmt s(m.db, "SELECT id FROM items ORDER BY id");
    while (s.step()) cat.push_back(s.i64(0));
    std::vector<int64_t> fx(m.fidx->id_map.begin(), m.fidx->id_map.end());
    std::sort(fx.begin(), fx.end());
    std::vector<int64_t> only_cat, only_fx;
    std::set_difference(cat.begin(), cat.end(), fx.begin(), fx.end(), std::back_inserter(only_cat));
    std::set_difference(fx.begin(), fx.end(), cat.begin(), cat.end(), std::back_inserter(only_fx));
    if (!only_cat.empty()) problem(std::to_string(only_cat.size()) + " catalog ids missing from faiss (first " + std::to_string(only_cat[0]) + ")");
    if (!only_fx.empty()) problem(std::to_string(only_fx.size()) + " faiss ids not in the catalog (first " + std::to_string(only_fx[0]) + ")");
    if (std::adjacent_find(fx.begin(), fx.end()) != fx.end()) problem("faiss holds duplicate ids");
  }
  if (m.fidx->d != m.dim) problem("faiss dim " + std::to_string(m.fidx->d) + " != catalog dim " + std::to_string(m.dim));
  // Flat: the stored vectors must equal the blobs.
  if (m.factory == "Flat") {
    int64_t mismatched = 0;
    std::vector<float> rec(static_cast<size_t>(m.dim));
    m.for_vectors("", 0, [&](int64_t n, const float* v, const faiss::Index::idx_t* ids) {
      for (int64_t i = 0; i < n; ++i) {
        try {
          m.fidx->reconstruct(ids[i], rec.data());
        } catch (const faiss::FaissException&) {
          ++mismatched;
          continue;
        }
        if (std::memcmp(rec.data(), v + i * m.dim, rec.size() * sizeof(float)) != 0) ++mismatched;
      }
    });
    if (mismatched) problem(std::to_string(mismatched) + " faiss vectors differ from the catalog");
  }
  // The cache file on disk.
  {
    std::error_code ec;
    if (fs::exists(m.cache_path(), ec)) {
      try {
        const search::CacheHeader h = search::read_cache_header(m.cache_path());
        const std::optional<uint64_t> recorded = m.recorded_cache_checksum();
        if (recorded && *recorded != h.checksum)
          r.notes.push_back("vector cache on disk is not the one the catalog recorded (it is not read; rebuilt on the next write)");
        else if (h.generation != m.generation())
          r.notes.push_back("vector cache on disk is at generation " + std::to_string(h.generation) + ", catalog at " +
                            std::to_string(m.generation()) + " (refreshed on the next write)");
      } catch (const Error& e) {
        r.notes.push_back(e.what());
      }
    } else if (r.items > 0) {
      r.notes.push_back("vector cache file is missing (rebuilt on the next write)");
    }
  }
  if (deep) {
    Stmt s(m.db, "SELECT f.path, f.size, i.sha256 FROM files f JOIN items i ON i.id = f.item_id ORDER BY f.path");
    while (s.step()) {
      const std::string path = s.text(0);
      std::string data;
      try {
        data = read_file(path);
      } catch (const std::exception& e) {
        problem("file " + path + " cannot be read: " + first_line(e.what()));
        continue;
      }
      ++r.hashed;
      if (static_cast<int64_t>(data.size()) != s.i64(1) || content_sha256(data.data(), data.size()) != s.text(2))
        problem("file " + path + " changed since it was indexed (run 'clipkit index add' again)");
    }
  }
  return r;
}

}  // namespace clipkit
