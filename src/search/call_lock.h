// How the calls of one clipkit::Index share it between threads (see clipkit/index.h): the reads
// run in parallel, each through a catalog connection of its own; every other call runs alone.
//
// The read calls hold `rw` shared and read the catalog inside one transaction (one snapshot for
// the whole call). Every other call holds `rw` exclusively; a waiting writer first takes `gate`,
// which new readers pass on their way in, so that it waits only for the reads already in flight.
// Before it lets go, an exclusive call brings the metadata view up to the catalog's generation
// (when a read has loaded it), so that the reads after it find the view and the faiss structure
// as of that generation and never need to stop the others themselves. A change committed by
// another process or Index is caught up by one thread at a time (`catching_up`); meanwhile the
// other reads go on with the last complete state (view and structure of one generation).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <shared_mutex>

#include "clipkit/error.h"
#include "search/catalog_db.h"

namespace clipkit::index_internal {

// The concurrency state of an Index (its Impl derives from it).
struct CallState {
  std::shared_mutex rw;
  std::mutex gate;  // taken by a waiting writer: new readers queue behind it (no writer starves)
  std::mutex view_mu;  // the first load of the metadata view, by one reader at a time
  std::atomic<bool> view_ready{false};
  std::atomic<bool> catching_up{false};  // a thread is bringing the state up to a newer generation
};

// Claims `catching_up` for the lifetime of this object (when no other thread holds it).
class CatchUp {
 public:
  explicit CatchUp(CallState& s) : s_(s) {
    bool expected = false;
    owner_ = s_.catching_up.compare_exchange_strong(expected, true);
  }
  ~CatchUp() {
    if (owner_) s_.catching_up.store(false);
  }
  CatchUp(const CatchUp&) = delete;
  CatchUp& operator=(const CatchUp&) = delete;
  bool owner() const { return owner_; }

 private:
  CallState& s_;
  bool owner_ = false;
};

// Takes an Index for one public call: Read for the calls that may run in parallel, Write for every
// other. A call made inside another on the same thread takes nothing again. `Impl` is
// Index::Impl: it derives from CallState and has dir, db (CatalogDb), generation(), view(),
// meta_view and fidx_gen.
template <typename Impl>
class CallLock {
 public:
  enum class Kind { Read, Write };
  CallLock(Impl& m, Kind kind) : m_(m) {
    if (tl_held == &m) {
      if (kind == Kind::Write && !tl_exclusive) throw Error(ErrorCode::Internal, "a change was attempted inside a read of index " + m.dir);
      return;
    }
    if (kind == Kind::Write) {
      const std::lock_guard<std::mutex> first(m.gate);
      exclusive_ = std::unique_lock<std::shared_mutex>(m.rw);
      hold(true);
      return;
    }
    for (int attempt = 0;; ++attempt) {
      { const std::lock_guard<std::mutex> wait_for_writers(m.gate); }
      shared_ = std::shared_lock<std::shared_mutex>(m.rw);
      conn_ = m.db.take_reader();
      m.db.route(conn_.get());
      hold(false);
      int64_t gen = -1;
      try {
        conn_->exec("BEGIN");  // one snapshot of the catalog for the whole call
        gen = m.generation();
      } catch (...) {
        release();
        throw;
      }
      if (attempt == 2 || !m.view_ready.load(std::memory_order_acquire) || m.meta_view.generation == gen) return;
      // The metadata view is behind the catalog (a change made by another process or Index). When
      // the view and the structure are of one generation and another thread is catching up, this
      // read goes on with them; else it brings the view up to date alone, then reads.
      CatchUp catching(m);
      if (!catching.owner() && m.fidx_gen == m.meta_view.generation) return;
      release();
      std::unique_lock<std::mutex> first(m.gate);
      std::unique_lock<std::shared_mutex> x(m.rw);
      first.unlock();
      hold(true);
      try {
        m.view();
      } catch (...) {
        tl_held = nullptr;
        throw;
      }
      tl_held = nullptr;
    }
  }
  ~CallLock() { release(); }
  CallLock(const CallLock&) = delete;
  CallLock& operator=(const CallLock&) = delete;

 private:
  Impl& m_;
  std::unique_lock<std::shared_mutex> exclusive_;
  std::shared_lock<std::shared_mutex> shared_;
  std::unique_ptr<search::Db> conn_;
  bool owner_ = false;
  static inline thread_local const Impl* tl_held = nullptr;
  static inline thread_local bool tl_exclusive = false;

  void hold(bool exclusive) {
    tl_held = &m_;
    tl_exclusive = exclusive;
    owner_ = true;
  }
  void release() noexcept {
    if (!owner_) return;
    owner_ = false;
    if (exclusive_.owns_lock() && m_.view_ready.load(std::memory_order_acquire)) {
      try {
        m_.view();  // the reads after this call find the view as of the catalog's generation
      } catch (...) {
        // left behind: the next read brings it up to date (and reports what fails)
      }
    }
    tl_held = nullptr;
    if (conn_) {
      sqlite3_exec(conn_->handle(), "COMMIT", nullptr, nullptr, nullptr);
      m_.db.route(nullptr);
      try {
        m_.db.give_back(std::move(conn_));
      } catch (...) {
        // out of memory: the connection is closed
      }
      conn_.reset();
    }
    if (shared_.owns_lock()) shared_.unlock();
    if (exclusive_.owns_lock()) exclusive_.unlock();
  }
};

}  // namespace clipkit::index_internal
