#include "search/sqlite.h"

#include "clipkit/error.h"

namespace clipkit::search {

void Db::open(const std::string& path, bool create, bool read_only) {
  path_ = path;
  int flags = read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
  if (create && !read_only) flags |= SQLITE_OPEN_CREATE;
  flags |= SQLITE_OPEN_NOMUTEX;
  const int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    db_ = nullptr;
    throw Error(rc == SQLITE_CANTOPEN ? ErrorCode::NotFound : ErrorCode::Io,
                "cannot open index catalog " + path + ": " + msg);
  }
  sqlite3_extended_result_codes(db_, 0);
  sqlite3_busy_timeout(db_, 10000);
}

Db::~Db() {
  for (auto& [sql, st] : prepared_) sqlite3_finalize(st);
  if (db_) sqlite3_close_v2(db_);
}

sqlite3_stmt* Db::take_prepared(const char* sql) {
  const auto it = prepared_.find(sql);
  if (it == prepared_.end()) return nullptr;
  sqlite3_stmt* st = it->second;
  prepared_.erase(it);
  return st;
}

void Db::keep_prepared(sqlite3_stmt* st) noexcept {
  if (!st) return;
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  constexpr size_t kMaxKept = 128;
  try {
    if (prepared_.size() < kMaxKept && prepared_.emplace(sqlite3_sql(st), st).second) return;
  } catch (...) {
    // out of memory: finalized below
  }
  sqlite3_finalize(st);
}

void Db::fail(int rc, const std::string& what) const {
  std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
  const int primary = rc & 0xff;
  if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB)
    throw Error(ErrorCode::Format, "index catalog " + path_ + " is corrupt (" + msg + ") during " + what);
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED)
    throw Error(ErrorCode::Io, "index catalog " + path_ + " is busy (locked by another process) during " + what);
  if (primary == SQLITE_FULL) throw Error(ErrorCode::Io, "disk full writing index catalog " + path_);
  throw Error(ErrorCode::Io, "index catalog " + path_ + ": " + msg + " during " + what);
}

void Db::exec(const char* sql) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    if (err) sqlite3_free(err);
    fail(rc, std::string("'") + sql + "'");
  }
}

int64_t Db::scalar_i64(const char* sql) {
  Stmt s(*this, sql);
  return s.step() ? s.i64(0) : 0;
}

Stmt::Stmt(Db& db, const char* sql) : db_(db) {
  st_ = db.take_prepared(sql);
  if (st_) return;
  const int rc = sqlite3_prepare_v2(db.handle(), sql, -1, &st_, nullptr);
  if (rc != SQLITE_OK) db.fail(rc, std::string("prepare '") + sql + "'");
}

Stmt::~Stmt() { db_.keep_prepared(st_); }

Stmt& Stmt::bind(int i, int64_t v) {
  const int rc = sqlite3_bind_int64(st_, i, v);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}
Stmt& Stmt::bind(int i, double v) {
  const int rc = sqlite3_bind_double(st_, i, v);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}
Stmt& Stmt::bind(int i, std::string_view v) {
  const int rc = sqlite3_bind_text64(st_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}
Stmt& Stmt::bind_blob(int i, const void* data, size_t size) {
  const int rc = sqlite3_bind_blob64(st_, i, data, size, SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

bool Stmt::step() {
  const int rc = sqlite3_step(st_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  const std::string sql = sqlite3_sql(st_) ? sqlite3_sql(st_) : "";
  db_.fail(rc, "'" + sql + "'");
}

void Stmt::reset() {
  sqlite3_reset(st_);
  sqlite3_clear_bindings(st_);
}

int64_t Stmt::i64(int col) const { return sqlite3_column_int64(st_, col); }
double Stmt::f64(int col) const { return sqlite3_column_double(st_, col); }
std::string Stmt::text(int col) const {
  const unsigned char* t = sqlite3_column_text(st_, col);
  return t ? std::string(reinterpret_cast<const char*>(t), static_cast<size_t>(sqlite3_column_bytes(st_, col)))
           : std::string();
}
const void* Stmt::blob(int col) const { return sqlite3_column_blob(st_, col); }
size_t Stmt::bytes(int col) const { return static_cast<size_t>(sqlite3_column_bytes(st_, col)); }
bool Stmt::is_null(int col) const { return sqlite3_column_type(st_, col) == SQLITE_NULL; }

Transaction::Transaction(Db& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }
Transaction::~Transaction() {
  if (!done_) sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}
void Transaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace clipkit::search
