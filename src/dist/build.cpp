// The phases of a sharded index build (see build.h).
#include "dist/build.h"

#include <faiss/IVFlib.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_io.h>
#include <faiss/invlists/OnDiskInvertedLists.h>

#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <regex>

#include "search/index_impl.h"
#include "search/source_files.h"

namespace clipkit::dist {

namespace {

constexpr const char* kShardsDir = "shards";
constexpr const char* kTrainedName = "trained.faiss";
constexpr const char* kTrainedMeta = "trained.meta";
constexpr const char* kStagingDir = ".build-staging";

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

// Identifies a file list: FNV-1a over the paths and their count.
std::string hash_list(const std::vector<std::string>& files) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  };
  const uint64_t n = files.size();
  mix(&n, sizeof n);
  for (const auto& f : files) {
    mix(f.data(), f.size());
    mix("\n", 1);
  }
  return hex64(h);
}

// Sends stdout to /dev/null while alive (faiss prints progress there unasked).
class QuietStdout {
 public:
  QuietStdout() {
    std::fflush(stdout);
    saved_ = dup(STDOUT_FILENO);
    const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (saved_ >= 0 && null >= 0) dup2(null, STDOUT_FILENO);
    if (null >= 0) close(null);
  }
  ~QuietStdout() {
    std::fflush(stdout);
    if (saved_ >= 0) {
      dup2(saved_, STDOUT_FILENO);
      close(saved_);
    }
  }
  QuietStdout(const QuietStdout&) = delete;
  QuietStdout& operator=(const QuietStdout&) = delete;

 private:
  int saved_ = -1;
};

std::string faiss_message(const std::exception& e) { return first_line(e.what()); }

void write_faiss_atomic(const faiss::Index& index, const std::string& path) {
  const std::string tmp = path + ".tmp";
  try {
    faiss::write_index(&index, tmp.c_str());
  } catch (const std::exception& e) {
    throw Error(ErrorCode::Io, "writing " + path + " failed: " + faiss_message(e));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error(ErrorCode::Io, "cannot move " + tmp + " to " + path + ": " + ec.message());
}

std::unique_ptr<faiss::Index> read_faiss(const std::string& path, int flags = 0) {
  try {
    return std::unique_ptr<faiss::Index>(faiss::read_index(path.c_str(), flags));
  } catch (const std::exception& e) {
    throw Error(ErrorCode::Format, "cannot read " + path + ": " + faiss_message(e));
  }
}

void create_schema(Db& db) {
  Transaction tx(db);
  db.exec(
      "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE IF NOT EXISTS rows(pos INTEGER PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
      " sha256 TEXT, width INTEGER NOT NULL, height INTEGER NOT NULL, vector BLOB, error TEXT);"
      "CREATE INDEX IF NOT EXISTS rows_sha ON rows(sha256);");
  tx.commit();
}

void set_meta(Db& db, const std::string& key, const std::string& value) {
  Stmt s(db, "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value");
  s.bind(1, key).bind(2, value).run();
}

std::optional<std::string> get_meta(Db& db, const std::string& key) {
  Stmt s(db, "SELECT value FROM meta WHERE key = ?1");
  s.bind(1, key);
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

// What a shard file says about itself.
struct ShardMeta {
  ShardIdentity id;
  int shard = 0, shards = 0;
  int64_t first = 0, count = 0;
  bool complete = false;
};

ShardMeta read_shard_meta(Db& db) {
  ShardMeta m;
  auto need = [&](const char* k) {
    auto v = get_meta(db, k);
    if (!v) throw Error(ErrorCode::Format, "shard file " + db.path() + " has no '" + k + "' entry");
    return *v;
  };
  try {
    m.id.list_hash = need("list_hash");
    m.id.total = std::stoll(need("total"));
    m.id.model_fingerprint = need("model_fingerprint");
    m.id.model_path = need("model_path");
    // Absent from shards written before they were recorded: the model's own text tower.
    m.id.text_model_path = get_meta(db, "text_model_path").value_or("");
    m.id.tokenizer_path = get_meta(db, "tokenizer_path").value_or("");
    m.id.model_arch = get_meta(db, "model_arch").value_or("");
    m.id.dim = std::stoi(need("dim"));
    m.shard = std::stoi(need("shard"));
    m.shards = std::stoi(need("shards"));
    m.first = std::stoll(need("first"));
    m.count = std::stoll(need("count"));
    m.complete = need("complete") == "1";
  } catch (const std::logic_error&) {
    throw Error(ErrorCode::Format, "shard file " + db.path() + " has a malformed meta entry");
  }
  return m;
}

// "PATH" or "PATH with text tower TEXT": what a mismatch names.
std::string describe_model(const ShardIdentity& id) {
  return id.text_model_path.empty() ? id.model_path : id.model_path + " with text tower " + id.text_model_path;
}

// Opens (creating when absent) a shard file for `id`; throws Error(Mismatch) when it was started for
// another file list, model or shard count.
ShardMeta open_shard(Db& db, const std::string& path, const ShardIdentity& id, int shard, int n_shards) {
  std::error_code ec;
  const bool existed = fs::exists(path, ec);
  db.open(path, true, false);
  db.exec("PRAGMA journal_mode=WAL");
  db.exec("PRAGMA synchronous=FULL");
  const Slice sl = shard_slice(id.total, shard, n_shards);
  if (existed && get_meta(db, "complete")) {
    ShardMeta m = read_shard_meta(db);
    if (m.id.list_hash != id.list_hash || m.id.total != id.total)
      throw Error(ErrorCode::Mismatch, "shard file " + path + " was started for another file list (" + std::to_string(m.id.total) +
                                           " files then, " + std::to_string(id.total) + " now); remove " +
                                           shards_dir(fs::path(path).parent_path().parent_path().string()) +
                                           " to build from the current files");
    if (m.id.model_fingerprint != id.model_fingerprint)
      throw Error(ErrorCode::Mismatch, "shard file " + path + " was embedded with model " + describe_model(m.id) +
                                           " (fingerprint " + m.id.model_fingerprint + "), not with " + describe_model(id) +
                                           " (fingerprint " + id.model_fingerprint + ")");
    if (m.shard != shard || m.shards != n_shards || m.first != sl.first || m.count != sl.count)
      throw Error(ErrorCode::Mismatch, "shard file " + path + " describes another slice");
    return m;
  }
  create_schema(db);
  Transaction tx(db);
  set_meta(db, "format", "clipkit-shard");
  set_meta(db, "list_hash", id.list_hash);
  set_meta(db, "total", std::to_string(id.total));
  set_meta(db, "model_fingerprint", id.model_fingerprint);
  set_meta(db, "model_path", id.model_path);
  if (!id.text_model_path.empty()) set_meta(db, "text_model_path", id.text_model_path);
  if (!id.text_model_path.empty() && !id.tokenizer_path.empty()) set_meta(db, "tokenizer_path", id.tokenizer_path);
  if (!id.model_arch.empty()) set_meta(db, "model_arch", id.model_arch);
  set_meta(db, "dim", std::to_string(id.dim));
  set_meta(db, "shard", std::to_string(shard));
  set_meta(db, "shards", std::to_string(n_shards));
  set_meta(db, "first", std::to_string(sl.first));
  set_meta(db, "count", std::to_string(sl.count));
  set_meta(db, "complete", "0");
  tx.commit();
  return read_shard_meta(db);
}

std::string ids_path(const std::string& dir, int i, int n) {
  std::string p = shard_path(dir, i, n);
  return p.substr(0, p.size() - 7) + ".ids";  // replaces ".sqlite"
}
std::string lists_path(const std::string& dir, int i, int n) {
  std::string p = shard_path(dir, i, n);
  return p.substr(0, p.size() - 7) + ".ivf";
}

// Every shard of a finished phase 1, checked against each other.
struct ShardSet {
  int n = 0;
  ShardIdentity id;
  std::vector<ShardMeta> metas;
};

ShardSet open_all_shards(const std::string& dir) {
  ShardSet s;
  s.n = count_shards(dir);
  if (s.n == 0) throw Error(ErrorCode::NotFound, "no shards in " + shards_dir(dir) + " (run 'clipkit index build ... --shard I/N' first)");
  int64_t next = 0;
  for (int i = 0; i < s.n; ++i) {
    const std::string p = shard_path(dir, i, s.n);
    if (!fs::exists(p)) throw Error(ErrorCode::NotFound, "shard " + std::to_string(i) + " of " + std::to_string(s.n) + " is missing (" + p + ")");
    Db db;
    db.open(p, false, true);
    ShardMeta m = read_shard_meta(db);
    if (!m.complete)
      throw Error(ErrorCode::InvalidArgument, "shard " + std::to_string(i) + " of " + std::to_string(s.n) + " (" + p +
                                                  ") is not finished; run 'clipkit index build ... --shard " + std::to_string(i) + "/" +
                                                  std::to_string(s.n) + "' again");
    if (i == 0) s.id = m.id;
    if (m.id.list_hash != s.id.list_hash || m.id.total != s.id.total || m.id.model_fingerprint != s.id.model_fingerprint ||
        m.id.dim != s.id.dim)
      throw Error(ErrorCode::Mismatch, "shard file " + p + " was built from another file list or model than shard 0");
    if (m.first != next) throw Error(ErrorCode::Format, "shard file " + p + " does not start where shard " + std::to_string(i - 1) + " ends");
    next = m.first + m.count;
    s.metas.push_back(m);
  }
  if (next != s.id.total) throw Error(ErrorCode::Format, "the shards in " + shards_dir(dir) + " do not cover the file list");
  return s;
}

// trained.meta: key=value lines written once the training phase is done.
std::map<std::string, std::string> read_kv(const std::string& path) {
  std::map<std::string, std::string> kv;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return kv;
}

std::vector<int64_t> read_ids(const std::string& path, int64_t count) {
  const std::string data = read_file(path);
  if (data.size() != static_cast<size_t>(count) * 8)
    throw Error(ErrorCode::Format, "id file " + path + " holds " + std::to_string(data.size() / 8) + " ids for " + std::to_string(count) + " files");
  std::vector<int64_t> ids(static_cast<size_t>(count));
  std::memcpy(ids.data(), data.data(), data.size());
  return ids;
}

struct Trained {
  std::string list_hash, kind, factory;
  bool ondisk = false;
  int64_t items = 0;
};

Trained read_trained(const std::string& dir, const ShardSet& s) {
  const std::string p = (fs::path(shards_dir(dir)) / kTrainedMeta).string();
  if (!fs::exists(p)) throw Error(ErrorCode::NotFound, "the build in " + dir + " is not trained yet (run 'clipkit index build ... --train')");
  auto kv = read_kv(p);
  Trained t;
  t.list_hash = kv["list_hash"];
  t.kind = kv["kind"];
  t.factory = kv["factory"];
  t.ondisk = kv["ondisk"] == "1";
  try {
    t.items = std::stoll(kv["items"]);
  } catch (const std::logic_error&) {
    throw Error(ErrorCode::Format, p + " is malformed");
  }
  if (t.list_hash != s.id.list_hash) throw Error(ErrorCode::Mismatch, p + " was written for other shards; run --train again");
  return t;
}

}  // namespace

Slice shard_slice(int64_t n, int i, int n_shards) {
  Slice s;
  s.first = n * i / n_shards;
  s.count = n * (i + 1) / n_shards - s.first;
  return s;
}

void parse_shard_spec(const std::string& spec, int* i, int* n) {
  static const std::regex re("^([0-9]{1,6})/([0-9]{1,6})$");
  std::smatch m;
  if (!std::regex_match(spec, m, re)) throw Error(ErrorCode::InvalidArgument, "--shard takes I/N (e.g. 0/4), got '" + spec + "'");
  *i = std::stoi(m[1].str());
  *n = std::stoi(m[2].str());
  if (*n < 1 || *i >= *n) throw Error(ErrorCode::InvalidArgument, "--shard " + spec + ": I must be in 0..N-1 and N at least 1");
}

std::string shards_dir(const std::string& index_dir) { return (fs::path(index_dir) / kShardsDir).string(); }

std::string shard_path(const std::string& index_dir, int i, int n_shards) {
  char name[64];
  std::snprintf(name, sizeof name, "shard-%05d-of-%05d.sqlite", i, n_shards);
  return (fs::path(shards_dir(index_dir)) / name).string();
}

int count_shards(const std::string& index_dir) {
  static const std::regex re("^shard-([0-9]{5})-of-([0-9]{5})\\.sqlite$");
  std::error_code ec;
  int n = 0;
  for (const auto& e : fs::directory_iterator(shards_dir(index_dir), ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (!std::regex_match(name, m, re)) continue;
    const int k = std::stoi(m[2].str());
    if (n != 0 && k != n)
      throw Error(ErrorCode::Mismatch, shards_dir(index_dir) + " holds shards of two builds (" + std::to_string(n) + " and " +
                                           std::to_string(k) + " shards); remove it to start over");
    n = k;
  }
  return n;
}

std::vector<std::string> list_sources(const std::vector<std::string>& sources, bool recursive, const std::string& index_dir,
                                      std::vector<std::string>* missing) {
  std::vector<search::SourceProblem> problems;
  std::vector<std::string> files = search::list_image_files(sources, recursive, index_dir, &problems);
  for (const auto& p : problems) {
    if (!p.missing) throw Error(ErrorCode::Io, p.input + ": " + p.reason);
    if (missing) missing->push_back(p.input);
  }
  return files;
}

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
  fs::create_directories(shards_dir(o.dir), ec);
  if (ec) throw Error(ErrorCode::Io, "cannot create " + shards_dir(o.dir) + ": " + ec.message());
  const std::string path = shard_path(o.dir, shard, n_shards);
  Db db;
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
    return rep;
  }
  const PreprocessConfig pc = model.preprocess_config();
  const int64_t px = 3LL * pc.resolution * pc.resolution;
  const int dim = id.dim;
  struct Work {
    std::string path, data, sha, error;
    int64_t size = 0, mtime_ns = 0;
    int width = 0, height = 0;
    bool embed = false;
    std::vector<float> pixels, vector;
  };
  for (int64_t b0 = next; b0 < end; b0 += o.batch) {
    const int64_t b1 = std::min(end, b0 + o.batch);
    std::vector<Work> w(static_cast<size_t>(b1 - b0));
    parallel_for(b1 - b0, o.threads, [&](int64_t i) {
      Work& x = w[static_cast<size_t>(i)];
      x.path = files[static_cast<size_t>(b0 + i)];
      struct stat st {};
      if (::stat(x.path.c_str(), &st) != 0) {
        x.error = std::string("cannot stat: ") + std::strerror(errno);
        return;
      }
      if (!S_ISREG(st.st_mode)) {
        x.error = "not a regular file";
        return;
      }
      x.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
      try {
        x.data = read_file(x.path);
        x.size = static_cast<int64_t>(x.data.size());
        x.sha = content_sha256(x.data.data(), x.data.size());
      } catch (const std::exception& e) {
        x.error = first_line(e.what());
      }
    });
    // A content embedded earlier in this shard (or in this batch) is stored once.
    {
      Stmt known(db, "SELECT 1 FROM rows WHERE sha256 = ?1 AND vector IS NOT NULL LIMIT 1");
      std::set<std::string> in_batch;
      for (auto& x : w) {
        if (!x.error.empty()) continue;
        known.reset();
        known.bind(1, x.sha);
        if (known.step()) continue;
        if (in_batch.insert(x.sha).second) x.embed = true;
      }
    }
    parallel_for(b1 - b0, o.threads, [&](int64_t i) {
      Work& x = w[static_cast<size_t>(i)];
      if (!x.embed) return;
      try {
        Image img = decode_image_memory(reinterpret_cast<const uint8_t*>(x.data.data()), x.data.size(), x.path);
        x.width = img.width;
        x.height = img.height;
        x.pixels.resize(static_cast<size_t>(px));
        preprocess(img, pc, x.pixels.data());
      } catch (const std::exception& e) {
        x.error = first_line(e.what());
        if (x.error.rfind(x.path + ": ", 0) == 0) x.error.erase(0, x.path.size() + 2);
        x.embed = false;
      }
      std::string().swap(x.data);
    });
    std::vector<size_t> order;
    for (size_t i = 0; i < w.size(); ++i)
      if (w[i].embed) order.push_back(i);
    if (!order.empty()) {
      std::vector<float> pixels(order.size() * static_cast<size_t>(px));
      for (size_t k = 0; k < order.size(); ++k)
        std::memcpy(pixels.data() + k * px, w[order[k]].pixels.data(), static_cast<size_t>(px) * sizeof(float));
      Embeddings e;
      std::string err;
      try {
        e = model.encode_images(pixels.data(), static_cast<int64_t>(order.size()), true);
        if (e.rows != static_cast<int64_t>(order.size()) || e.dim != dim)
          err = "model returned " + std::to_string(e.rows) + "x" + std::to_string(e.dim) + " embeddings";
      } catch (const std::exception& ex) {
        err = first_line(ex.what());
      }
      for (size_t k = 0; k < order.size(); ++k) {
        Work& x = w[order[k]];
        if (!err.empty()) {
          x.error = "embedding failed: " + err;
          x.embed = false;
          continue;
        }
        const float* r = e.row(static_cast<int64_t>(k));
        x.vector.assign(r, r + dim);
        for (float v : x.vector)
          if (!std::isfinite(v)) {
            x.error = "embedding is not finite";
            x.embed = false;
          }
        if (x.embed) normalize_vec(x.vector.data(), dim);  // as the catalog stores it
      }
    }
    // A path whose content failed in this batch fails with the same reason.
    std::map<std::string, std::string> failed_content;
    for (const auto& x : w)
      if (!x.sha.empty() && !x.error.empty()) failed_content.emplace(x.sha, x.error);
    {
      Transaction tx(db);
      Stmt ins(db, "INSERT INTO rows(pos, path, size, mtime_ns, sha256, width, height, vector, error) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
      for (size_t i = 0; i < w.size(); ++i) {
        Work& x = w[i];
        if (x.error.empty() && !x.embed) {
          const auto why = failed_content.find(x.sha);
          if (why != failed_content.end()) x.error = why->second;
        }
        ins.reset();
        ins.bind(1, b0 + static_cast<int64_t>(i)).bind(2, x.path).bind(3, x.size).bind(4, x.mtime_ns);
        if (!x.sha.empty()) ins.bind(5, x.sha);
        ins.bind(6, x.width).bind(7, x.height);
        if (x.embed) ins.bind_blob(8, x.vector.data(), x.vector.size() * sizeof(float));
        if (!x.error.empty()) ins.bind(9, x.error);
        ins.run();
        if (!x.error.empty()) rep.failures.push_back({x.path, x.error});
        else if (x.embed) ++rep.embedded;
        else ++rep.duplicates;
      }
      tx.commit();
    }
    if (o.on_batch) o.on_batch(b1 - meta.first);
  }
  {
    Transaction tx(db);
    set_meta(db, "complete", "1");
    tx.commit();
  }
  return rep;
}

void write_shard(const std::string& index_dir, int shard, int n_shards, const ShardIdentity& id, const std::vector<std::string>& paths,
                 const std::vector<std::string>& sha256, const float* vectors) {
  std::error_code ec;
  fs::create_directories(shards_dir(index_dir), ec);
  Db db;
  const ShardMeta meta = open_shard(db, shard_path(index_dir, shard, n_shards), id, shard, n_shards);
  if (static_cast<int64_t>(paths.size()) != meta.count || sha256.size() != paths.size())
    throw Error(ErrorCode::InvalidArgument, "write_shard: shard " + std::to_string(shard) + " takes " + std::to_string(meta.count) + " rows");
  Transaction tx(db);
  Stmt ins(db, "INSERT OR REPLACE INTO rows(pos, path, size, mtime_ns, sha256, width, height, vector, error) VALUES(?1, ?2, 0, 0, ?3, 0, 0, ?4, NULL)");
  for (size_t i = 0; i < paths.size(); ++i) {
    ins.reset();
    ins.bind(1, meta.first + static_cast<int64_t>(i)).bind(2, paths[i]).bind(3, sha256[i]);
    ins.bind_blob(4, vectors + i * id.dim, static_cast<size_t>(id.dim) * sizeof(float));
    ins.run();
  }
  set_meta(db, "complete", "1");
  tx.commit();
}

TrainReport train(const BuildOptions& o) {
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
  std::unordered_map<std::string, int64_t> first_id;
  int64_t next = 1;
  std::vector<std::vector<int64_t>> ids(static_cast<size_t>(s.n));
  for (int i = 0; i < s.n; ++i) {
    Db db;
    db.open(shard_path(o.dir, i, s.n), false, true);
    Stmt rows(db, "SELECT sha256, error IS NULL, vector IS NOT NULL FROM rows ORDER BY pos");
    auto& out = ids[static_cast<size_t>(i)];
    out.reserve(static_cast<size_t>(s.metas[static_cast<size_t>(i)].count));
    while (rows.step()) {
      if (rows.i64(1) == 0) {
        out.push_back(0);  // failed
        continue;
      }
      const std::string sha = rows.text(0);
      auto [it, fresh] = first_id.emplace(sha, next);
      if (fresh) {
        if (rows.i64(2) == 0)
          throw Error(ErrorCode::Format, "shard file " + db.path() + ": content " + sha + " first appears without its vector");
        out.push_back(next++);
      } else {
        out.push_back(-it->second);
      }
    }
    if (static_cast<int64_t>(out.size()) != s.metas[static_cast<size_t>(i)].count)
      throw Error(ErrorCode::Format, "shard file " + db.path() + " holds " + std::to_string(out.size()) + " rows, expected " +
                                         std::to_string(s.metas[static_cast<size_t>(i)].count));
  }
  first_id.clear();
  const int64_t items = next - 1;
  for (int i = 0; i < s.n; ++i) {
    const auto& v = ids[static_cast<size_t>(i)];
    write_file_atomic(ids_path(o.dir, i, s.n), v.data(), v.size() * sizeof(int64_t));
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
      const auto& v = ids[static_cast<size_t>(i)];
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
