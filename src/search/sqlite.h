// A minimal RAII layer over the SQLite C API for the index catalog. Every failure becomes a
// clipkit::Error naming the database file (Format for corruption, Io otherwise).
#pragma once
#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace clipkit::search {

class Db;

class Stmt {
 public:
  Stmt(Db& db, const char* sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int i, int64_t v);
  Stmt& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  Stmt& bind(int i, double v);
  Stmt& bind(int i, std::string_view v);
  Stmt& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  Stmt& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
  Stmt& bind_blob(int i, const void* data, size_t size);

  bool step();  // true while a row is available
  void run() {  // step to completion
    while (step()) {
    }
  }
  void reset();

  int64_t i64(int col) const;
  double f64(int col) const;
  std::string text(int col) const;
  const void* blob(int col) const;
  size_t bytes(int col) const;
  bool is_null(int col) const;

 private:
  Db& db_;
  sqlite3_stmt* st_ = nullptr;
};

class Db {
 public:
  Db() = default;
  // Opens (creating when `create`) the database; read_only opens it read-only.
  void open(const std::string& path, bool create, bool read_only);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(const char* sql);
  int64_t scalar_i64(const char* sql);
  int64_t changes() const { return sqlite3_changes64(db_); }
  [[noreturn]] void fail(int rc, const std::string& what) const;
  sqlite3* handle() const { return db_; }
  const std::string& path() const { return path_; }

  // Prepared statements are kept for the next Stmt of the same SQL (a query's few lookups would
  // otherwise spend most of their time compiling SQL): take one (null when none is kept), and
  // hand one back when done (reset, bindings cleared; finalized when one is kept already).
  sqlite3_stmt* take_prepared(const char* sql);
  void keep_prepared(sqlite3_stmt* st) noexcept;

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
  std::unordered_map<std::string, sqlite3_stmt*> prepared_;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back when destroyed uncommitted.
class Transaction {
 public:
  explicit Transaction(Db& db);
  ~Transaction();
  void commit();

 private:
  Db& db_;
  bool done_ = false;
};

}  // namespace clipkit::search
