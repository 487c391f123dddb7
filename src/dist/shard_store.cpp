// Shard files and the files the phases hand each other (see shard_store.h), and the public helpers
// of build.h that describe a build's layout.
#include "dist/shard_store.h"

#include <faiss/index_io.h>

#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <regex>

#include "search/source_files.h"

namespace clipkit::dist {

namespace {

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
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

}  // namespace

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

QuietStdout::QuietStdout() {
  std::fflush(stdout);
  saved_ = dup(STDOUT_FILENO);
  const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (saved_ >= 0 && null >= 0) dup2(null, STDOUT_FILENO);
  if (null >= 0) close(null);
}

QuietStdout::~QuietStdout() {
  std::fflush(stdout);
  if (saved_ >= 0) {
    dup2(saved_, STDOUT_FILENO);
    close(saved_);
  }
}

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

std::unique_ptr<faiss::Index> read_faiss(const std::string& path, int flags) {
  try {
    return std::unique_ptr<faiss::Index>(faiss::read_index(path.c_str(), flags));
  } catch (const std::exception& e) {
    throw Error(ErrorCode::Format, "cannot read " + path + ": " + faiss_message(e));
  }
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
    m.rows_dropped = get_meta(db, "rows_dropped").value_or("0") == "1";
  } catch (const std::logic_error&) {
    throw Error(ErrorCode::Format, "shard file " + db.path() + " has a malformed meta entry");
  }
  return m;
}

// "PATH" or "PATH with text tower TEXT": what a mismatch names.
static std::string describe_model(const ShardIdentity& id) {
  return id.text_model_path.empty() ? id.model_path : id.model_path + " with text tower " + id.text_model_path;
}

ShardMeta open_shard(Db& db, const std::string& path, const ShardIdentity& id, int shard, int n_shards) {
  std::error_code ec;
  const bool existed = fs::exists(path, ec);
  db.open(path, true, false);
  // A vector row (2 KB at dim 512) fits one to a default 4 KB page, leaving half of it empty;
  // 16 KB pages hold seven. Only a new file takes the setting.
  if (!existed) db.exec("PRAGMA page_size=16384");
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

std::string finished_build(const std::string& dir) {
  const std::string catalog = (fs::path(dir) / kCatalogName).string();
  std::error_code ec;
  if (!fs::exists(catalog, ec)) return "";
  Db db;
  db.open(catalog, false, true);
  return get_meta(db, "build_list_hash").value_or("");
}

std::string rows_dropped_message(const std::string& dir, int i, int n) {
  return "shard " + std::to_string(i) + " of " + std::to_string(n) + " (" + shard_path(dir, i, n) +
         ") kept only its description after it was added; remove " + shards_dir(dir) + " and build again to use other settings";
}

void drop_shard_rows(const std::string& dir, int i, int n) {
  const std::string path = shard_path(dir, i, n), tmp = path + ".drop";
  std::vector<std::pair<std::string, std::string>> kv;
  {
    Db src;
    src.open(path, false, true);
    Stmt m(src, "SELECT key, value FROM meta ORDER BY key");
    while (m.step()) kv.emplace_back(m.text(0), m.text(1));
  }
  std::error_code ec;
  fs::remove(tmp, ec);
  {
    Db out;
    out.open(tmp, true, false);
    out.exec("PRAGMA journal_mode=DELETE");
    create_schema(out);
    Transaction tx(out);
    for (const auto& [k, v] : kv) set_meta(out, k, v);
    set_meta(out, "rows_dropped", "1");
    tx.commit();
  }
  const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  const bool ok = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) throw Error(ErrorCode::Io, "cannot sync " + tmp);
  // The old file's WAL goes first: left beside the new file, SQLite would replay it into it.
  for (const char* ext : {"-wal", "-shm"}) fs::remove(path + ext, ec);
  fs::rename(tmp, path, ec);
  if (ec) throw Error(ErrorCode::Io, "cannot move " + tmp + " to " + path + ": " + ec.message());
}

std::string ids_path(const std::string& dir, int i, int n) {
  std::string p = shard_path(dir, i, n);
  return p.substr(0, p.size() - 7) + ".ids";  // replaces ".sqlite"
}
std::string lists_path(const std::string& dir, int i, int n) {
  std::string p = shard_path(dir, i, n);
  return p.substr(0, p.size() - 7) + ".ivf";
}
std::string part_catalog_path(const std::string& dir, int i, int n) {
  std::string p = shard_path(dir, i, n);
  return p.substr(0, p.size() - 7) + ".part.sqlite";
}
std::string build_vectors_path(const std::string& dir) { return (fs::path(shards_dir(dir)) / kBuildVectorsName).string(); }

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

}  // namespace clipkit::dist
