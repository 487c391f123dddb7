// clipkit::Index: creating and opening an index, direct additions and removals, lookups.
#include "search/index_impl.h"
#include "io/download.h"

#include <fstream>
#include <iterator>

namespace clipkit {

std::string content_sha256(const void* data, size_t size) { return sha256_digest_hex(data, size); }

Index::Index(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Index::Index(Index&&) noexcept = default;
Index& Index::operator=(Index&&) noexcept = default;
Index::~Index() {
  if (!impl_) return;
  impl_->stop_merger();
  impl_->in_exclusive = true;  // nothing else uses the Index any more
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
    if (!model.text_model_path.empty()) impl->set_meta("text_model_path", normalize_path(model.text_model_path));
    if (!model.text_model_path.empty() && !model.tokenizer_path.empty())
      impl->set_meta("tokenizer_path", normalize_path(model.tokenizer_path));
    impl->set_meta("model_arch", model.arch_name);
    impl->set_meta("dim", std::to_string(dim));
    impl->set_meta("kind", kind);
    impl->set_meta("train_min", std::to_string(options.train_min));
    impl->set_meta("created", std::to_string(unix_now()));
    impl->set_meta("generation", "0");
    impl->set_meta("remove_gen", "0");
    impl->ensure_schema();
    tx.commit();
  }
  impl->read_meta();
  impl->rebuild_structure();
  impl->flush();
  impl->publish_state();
  impl->in_exclusive = false;
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
  impl->read_meta();  // first: a file that is not an index catalog is refused before any change
  if (mode == Mode::ReadWrite) impl->ensure_schema();
  impl->reconcile();
  if (mode == Mode::ReadWrite) {
    impl->maybe_train();
    impl->flush();
    impl->prune_change_log();
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
        impl->mode = mode;
      }
      close(fd);
    }
  }
  impl->publish_state();
  impl->in_exclusive = false;  // from here on, the structure changes only with `rw` exclusive
  return Index(std::move(impl));
}

IndexInfo Index::info() const {
  Impl& m = *impl_;
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Read);
  IndexInfo i;
  i.dir = m.dir;
  i.model_fingerprint = m.fingerprint;
  i.model_path = m.model_path;
  i.text_model_path = m.text_model_path;
  i.tokenizer_path = m.tokenizer_path;
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

namespace {

// "PATH with text tower TEXT" when the index or the model has a paired text tower.
std::string with_text_tower(const std::string& path, const std::string& text) {
  return text.empty() ? path + " (its own text tower)" : path + " with text tower " + text;
}

// True when both files can be read and their bytes differ (a copy elsewhere is the same file).
bool files_differ(const std::string& a, const std::string& b) {
  auto read = [](const std::string& p, std::string* out) {
    std::ifstream f(p, std::ios::binary);
    if (!f) return false;
    out->assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return !f.bad();
  };
  std::string x, y;
  return read(a, &x) && read(b, &y) && x != y;
}

}  // namespace

void Index::check_model(const Model& model) const {
  const ModelInfo& mi = model.info();
  if (mi.fingerprint != impl_->fingerprint || mi.arch.embed_dim != impl_->dim) {
    std::string built = impl_->model_path.empty() ? std::string("(unknown path)") : impl_->model_path;
    std::string given = mi.path.empty() ? std::string("this model") : mi.path;
    if (!impl_->text_model_path.empty() || !mi.text_model_path.empty()) {
      built = with_text_tower(built, impl_->text_model_path);
      given = with_text_tower(given, mi.text_model_path);
    }
    throw Error(ErrorCode::Mismatch, "index " + impl_->dir + " was built with model " + built + " (fingerprint " +
                                         impl_->fingerprint + ", dim " + std::to_string(impl_->dim) + "), not with " + given +
                                         " (fingerprint " + mi.fingerprint + ", dim " + std::to_string(mi.arch.embed_dim) + ")");
  }
  // The fingerprint covers the weights, not the tokenizer: a different SentencePiece model would
  // give other ids for the same texts.
  if (!impl_->tokenizer_path.empty() && !mi.tokenizer_path.empty() &&
      normalize_path(mi.tokenizer_path) != impl_->tokenizer_path && files_differ(mi.tokenizer_path, impl_->tokenizer_path))
    throw Error(ErrorCode::Mismatch, "tokenizer " + mi.tokenizer_path + " is not the tokenizer index " + impl_->dir +
                                         " was built with (" + impl_->tokenizer_path + ")");
}

std::vector<int64_t> Index::add_vectors(const std::vector<VectorRecord>& records) {
  const Impl::CallLock lock(*impl_, Impl::CallLock::Kind::Write);
  Impl::WriteScope write(*impl_);
  Impl::Change c;
  // Metadata checked before anything is committed; as set_metadata replaces, null fields are absent.
  std::vector<std::string> metas(records.size());
  for (size_t j = 0; j < records.size(); ++j) {
    if (records[j].meta.empty()) continue;
    nlohmann::json value = search::parse_meta_object(records[j].meta, "metadata of " + records[j].path);
    for (auto it = value.begin(); it != value.end();) it = it.value().is_null() ? value.erase(it) : std::next(it);
    metas[j] = value.dump();
  }
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
      if (!r.meta.empty()) c.meta[c.files.back().path] = metas[j];
    }
    auto got = impl_->commit(c);
    ids.insert(ids.end(), got.begin(), got.end());
    i = j;
  }
  impl_->maybe_train();
  return ids;
}

int64_t Index::remove_paths(const std::vector<std::string>& paths) {
  Impl& m = *impl_;
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Write);
  Impl::WriteScope write(m);
  const int64_t gen = m.generation() + 1;
  int64_t removed = 0;
  std::vector<int64_t> orphans;
  {
    Transaction tx(m.db);
    std::set<int64_t> touched;
    Stmt sel(m.db, "SELECT path, item_id FROM files WHERE path = ?1 OR substr(path, 1, length(?2)) = ?2");
    Stmt del(m.db, "DELETE FROM files WHERE path = ?1");
    Stmt deltags(m.db, "DELETE FROM tags WHERE path = ?1");
    Stmt delmeta(m.db, "DELETE FROM path_meta WHERE path = ?1");
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
        delmeta.reset();
        delmeta.bind(1, path).run();
        m.log_change(path, gen);
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
  return removed;
}

void Index::rebuild(const std::string& kind_in, int64_t train_min) {
  Impl& m = *impl_;
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Exclusive);
  Impl::WriteScope write(m);
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
  const Impl::CallLock lock(*impl_, Impl::CallLock::Kind::Read);
  Stmt s(impl_->db, "SELECT item_id FROM files WHERE path = ?1");
  s.bind(1, normalize_path(path));
  if (!s.step()) return false;
  return impl_->get_item(s.i64(0), out);
}

bool Index::find_id(int64_t id, CatalogItem* out) const {
  const Impl::CallLock lock(*impl_, Impl::CallLock::Kind::Read);
  return impl_->get_item(id, out);
}

bool Index::find_sha256(const std::string& sha256, CatalogItem* out) const {
  const Impl::CallLock lock(*impl_, Impl::CallLock::Kind::Read);
  Stmt s(impl_->db, "SELECT id FROM items WHERE sha256 = ?1");
  s.bind(1, sha256);
  return s.step() && impl_->get_item(s.i64(0), out);
}

std::vector<std::string> Index::folders() const {
  const Impl::CallLock lock(*impl_, Impl::CallLock::Kind::Read);
  std::set<std::string> out;
  Stmt s(impl_->db, "SELECT path FROM files");
  while (s.step()) {
    const std::string p = s.text(0);
    const size_t slash = p.rfind('/');
    if (slash != std::string::npos) out.insert(slash == 0 ? "/" : p.substr(0, slash));
  }
  return {out.begin(), out.end()};
}

std::vector<float> Index::vector(int64_t id) const {
  const Impl::CallLock lock(*impl_, Impl::CallLock::Kind::Read);
  return impl_->load_vector(id);
}

bool Index::refresh() {
  // A read catches up with the catalog when it finds it ahead of the published state and no
  // change is under way (see search/call_lock.h); this one also waits for the change or
  // catch-up under way, so that what was committed before the call is seen after it.
  Impl& m = *impl_;
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Read);
  const int64_t gen = m.generation();
  if (gen > m.cur().generation) m.catch_up_read(gen, true);
  return Impl::CallLock::caught_up();
}

int64_t Index::generation() const {
  const Impl::CallLock lock(*impl_, Impl::CallLock::Kind::Read);
  return impl_->generation();
}

}  // namespace clipkit
