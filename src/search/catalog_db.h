// The catalog connections of one clipkit::Index: its own, and read connections leased to the
// threads that read in parallel (see index_impl.h).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "search/sqlite.h"

namespace clipkit::index_internal {

using search::Db;

// The catalog connection a statement of Index::Impl goes through: the connection leased by the
// calling thread while it runs a parallel read on this catalog (ReadLock below), else the Index's
// own. Stmt, Transaction and the Db calls take it as they take a Db.
class CatalogDb {
 public:
  void open(const std::string& path, bool create, bool read_only) {
    main_.open(path, create, read_only);
    read_only_ = read_only;
  }
  Db& get() { return tl_owner == this && tl_conn ? *tl_conn : main_; }
  Db& own() { return main_; }  // the Index's own connection, whatever the calling thread routes
  operator Db&() { return get(); }
  void exec(const char* sql) { get().exec(sql); }
  int64_t scalar_i64(const char* sql) { return get().scalar_i64(sql); }
  int64_t changes() { return get().changes(); }
  sqlite3* handle() { return get().handle(); }
  const std::string& path() const { return main_.path(); }

  // A read connection of the catalog for one thread at a time: taken from those kept, else opened.
  std::unique_ptr<Db> take_reader() {
    {
      std::lock_guard<std::mutex> lock(pool_mu_);
      if (!pool_.empty()) {
        auto c = std::move(pool_.back());
        pool_.pop_back();
        return c;
      }
    }
    auto c = std::make_unique<Db>();
    c->open(main_.path(), false, read_only_);
    c->exec("PRAGMA query_only=1");
    return c;
  }
  void give_back(std::unique_ptr<Db> c) {
    constexpr size_t kMaxKept = 256;
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (pool_.size() < kMaxKept) pool_.push_back(std::move(c));
  }
  // Routes this thread's statements through `c` (null: back to the Index's own connection).
  void route(Db* c) {
    tl_owner = c ? this : nullptr;
    tl_conn = c;
  }
  bool routed() const { return tl_owner == this; }

 private:
  Db main_;
  bool read_only_ = false;
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<Db>> pool_;
  static inline thread_local const CatalogDb* tl_owner = nullptr;
  static inline thread_local Db* tl_conn = nullptr;
};

}  // namespace clipkit::index_internal
