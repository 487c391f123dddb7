// How the calls of one clipkit::Index share it between threads (see clipkit/index.h): reads run in
// parallel on an immutable snapshot of the in-memory state, and changes never wait for them.
//
// What a read looks at is the faiss structure (`fidx`, which changes in place only under `rw`
// held exclusively) and a Snapshot: the vectors added since the structure was last merged (the
// delta, scanned exactly beside it), the ids removed from the catalog that the structure still
// holds (tombstones), and the metadata view (a base view plus the rows changed since it was
// built). A read holds `rw` shared and one Snapshot (a shared_ptr) for the whole call, and reads
// the catalog inside one transaction of its own connection, begun after it took the Snapshot (so
// the catalog is never older than the Snapshot).
//
// A change (Kind::Write) holds only `write_mu`: it commits to the catalog, then builds the next
// Snapshot by copying the parts it changed (a delta with its new vectors, the tombstones, the
// changed metadata rows) and publishes it; reads that start after it see it, reads in flight go
// on with theirs. Once the delta, the tombstones or the changed rows grow past a bound, a
// background thread merges them into the structure and the base view: it takes `rw` exclusively
// (waiting for the reads in flight; new reads queue behind it at `gate`) and then `write_mu`, for
// the few milliseconds of the merge. Calls that replace the structure (a rebuild, training,
// verify, the field summary) take both (Kind::Exclusive); a change that finds such work due (the
// training size reached, too many tombstones) does it after releasing `write_mu`. Lock order:
// `gate`, `rw`, `write_mu`; no thread waits for `rw` while it holds `write_mu`.
//
// A change committed by another process or Index (the catalog's generation moved past the
// Snapshot's) is caught up the same way, incrementally, by the first read that notices it and finds
// `write_mu` free; the reads meanwhile go on with the last Snapshot.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "clipkit/error.h"
#include "search/catalog_db.h"
#include "search/metadata.h"

namespace clipkit::index_internal {

// Vectors committed since the faiss structure was last merged, in blocks that never change once
// published (one block per change); a Snapshot shares the blocks with the one before it.
struct Delta {
  struct Block {
    std::vector<int64_t> ids;
    std::vector<float> vecs;  // ids.size() x dim
  };
  std::vector<std::shared_ptr<const Block>> blocks;
  std::unordered_map<int64_t, std::pair<uint32_t, uint32_t>> at;  // id -> (block, row)
  int dim = 0;

  size_t size() const { return at.size(); }
  const float* find(int64_t id) const {
    const auto it = at.find(id);
    if (it == at.end()) return nullptr;
    return blocks[it->second.first]->vecs.data() + static_cast<size_t>(it->second.second) * static_cast<size_t>(dim);
  }
  // Calls f(n, rows, ids) for each block (every row of a block is live).
  template <typename F>
  void for_blocks(F&& f) const {
    for (const auto& b : blocks)
      if (!b->ids.empty()) f(static_cast<int64_t>(b->ids.size()), b->vecs.data(), b->ids.data());
  }
};

// Metadata rows changed since the base view's generation, by path (null: the path is gone).
struct MetaOverlay {
  std::map<std::string, std::shared_ptr<const search::MetaRow>> rows;
  std::unordered_set<std::string> paths;  // the keys of `rows`
};

// What one read sees besides the faiss structure; never changed once published.
struct Snapshot {
  int64_t generation = -1;  // the catalog generation of structure + delta + tombstones
  std::shared_ptr<const Delta> delta;
  std::shared_ptr<const std::unordered_set<int64_t>> tombstones;
  std::shared_ptr<const search::MetaView> view;  // null until a read needs it
  std::shared_ptr<const MetaOverlay> overlay;
  int64_t view_generation = -1;  // the generation view + overlay reflect
};

// The concurrency state of an Index (its Impl derives from it).
struct CallState {
  std::shared_mutex rw;             // shared: a read; exclusive: the structure changes in place
  std::mutex gate;                  // taken by a thread waiting for `rw` exclusively: new reads queue behind it
  std::recursive_mutex write_mu;    // one change (or catch-up) at a time
  bool in_exclusive = true;         // `rw` is held exclusively (or the Index is being opened): the structure may change
  bool exclusive_due = false;       // work that needs Kind::Exclusive is waiting (under write_mu)
  std::atomic<bool> changing{false};  // a change of this Index holds write_mu (it publishes all that was committed before it)

  // The published Snapshot.
  std::shared_ptr<const Snapshot> snapshot() {
    std::lock_guard<std::mutex> lock(snap_mu_);
    return published_;
  }
  void publish(std::shared_ptr<const Snapshot> s) {
    {
      std::lock_guard<std::mutex> lock(snap_mu_);
      published_ = std::move(s);
    }
    published_cv_.notify_all();
  }
  // Waits until a Snapshot of generation `gen` or later is published, or `limit` passed; returns
  // the published one.
  template <typename Duration>
  std::shared_ptr<const Snapshot> wait_published(int64_t gen, Duration limit) {
    std::unique_lock<std::mutex> lock(snap_mu_);
    published_cv_.wait_for(lock, limit, [&] { return published_->generation >= gen; });
    return published_;
  }
  // The Snapshot this thread reads: the one its read holds, else the published one (a change's thread,
  // which holds write_mu, so the published one does not move under it).
  const Snapshot& cur() const {
    if (tl_owner == this && tl_snap) return *tl_snap;
    return *published_;
  }
  // For a read: continue with the published Snapshot (after a catch-up or a view load by this thread).
  void reread_snapshot() {
    if (tl_owner == this) tl_snap = snapshot();
  }
  void set_thread_snapshot(std::shared_ptr<const Snapshot> s) {
    tl_owner = s ? this : nullptr;
    tl_snap = std::move(s);
  }

  // The background merge (see above): request_merge wakes it; stop_merger ends it.
  template <typename F>
  void request_merge(F&& run_merge) {
    std::lock_guard<std::mutex> lock(merge_mu_);
    merge_wanted_ = true;
    if (!merger_.joinable() && !merge_stop_)
      merger_ = std::thread([this, run_merge] {
        std::unique_lock<std::mutex> l(merge_mu_);
        for (;;) {
          merge_cv_.wait(l, [this] { return merge_wanted_ || merge_stop_; });
          if (merge_stop_) return;
          merge_wanted_ = false;
          l.unlock();
          run_merge();
          l.lock();
        }
      });
    merge_cv_.notify_one();
  }
  void stop_merger() {
    {
      std::lock_guard<std::mutex> lock(merge_mu_);
      merge_stop_ = true;
    }
    merge_cv_.notify_one();
    if (merger_.joinable()) merger_.join();
  }

 private:
  std::mutex snap_mu_;
  std::condition_variable published_cv_;
  std::shared_ptr<const Snapshot> published_ = std::make_shared<Snapshot>();
  std::mutex merge_mu_;
  std::condition_variable merge_cv_;
  bool merge_wanted_ = false, merge_stop_ = false;
  std::thread merger_;
  static inline thread_local const CallState* tl_owner = nullptr;
  static inline thread_local std::shared_ptr<const Snapshot> tl_snap;
};

// Takes an Index for one public call: Read for the calls that may run in parallel, Write for a
// change, Exclusive for a call that replaces the structure. A call made inside another on the same
// thread takes nothing again. `Impl` is Index::Impl: it derives from CallState and has dir, db
// (CatalogDb), generation(), catch_up_read() and run_exclusive_work().
template <typename Impl>
class CallLock {
 public:
  enum class Kind { Read, Write, Exclusive };
  CallLock(Impl& m, Kind kind) : m_(m) {
    if (tl_held == &m) {
      if (kind != Kind::Read && !tl_writing) throw Error(ErrorCode::Internal, "a change was attempted inside a read of index " + m.dir);
      return;
    }
    if (kind == Kind::Exclusive) {
      std::unique_lock<std::mutex> first(m.gate);
      exclusive_ = std::unique_lock<std::shared_mutex>(m.rw);
      first.unlock();
      write_ = std::unique_lock<std::recursive_mutex>(m.write_mu);
      m.in_exclusive = true;
      m.changing = true;
      hold(true);
      return;
    }
    if (kind == Kind::Write) {
      write_ = std::unique_lock<std::recursive_mutex>(m.write_mu);
      m.changing = true;
      hold(true);
      return;
    }
    { const std::lock_guard<std::mutex> wait_for_writers(m.gate); }
    shared_ = std::shared_lock<std::shared_mutex>(m.rw);
    m.set_thread_snapshot(m.snapshot());  // first the Snapshot, then the catalog transaction (never older)
    conn_ = m.db.take_reader();
    m.db.route(conn_.get());
    hold(false);
    try {
      conn_->exec("BEGIN");  // one snapshot of the catalog for the whole call
      const int64_t gen = m.generation();
      if (gen > m.cur().generation) m.catch_up_read(gen);
    } catch (...) {
      release();
      throw;
    }
  }
  ~CallLock() { release(); }
  CallLock(const CallLock&) = delete;
  CallLock& operator=(const CallLock&) = delete;

  // Whether this call's read caught up with a change of another process or Index.
  static bool caught_up() { return tl_caught_up; }
  static void note_caught_up() { tl_caught_up = true; }

 private:
  Impl& m_;
  std::unique_lock<std::shared_mutex> exclusive_;
  std::shared_lock<std::shared_mutex> shared_;
  std::unique_lock<std::recursive_mutex> write_;
  std::unique_ptr<search::Db> conn_;
  bool owner_ = false;
  static inline thread_local const Impl* tl_held = nullptr;
  static inline thread_local bool tl_writing = false;
  static inline thread_local bool tl_caught_up = false;

  void hold(bool writing) {
    tl_held = &m_;
    tl_writing = writing;
    tl_caught_up = false;
    owner_ = true;
  }
  void release() noexcept {
    if (!owner_) return;
    owner_ = false;
    if (write_.owns_lock()) {
      const bool escalate = m_.exclusive_due && !exclusive_.owns_lock();
      if (exclusive_.owns_lock()) {
        try {
          m_.run_exclusive_work();
        } catch (...) {
          // left due: the next exclusive call or merge does it (and reports what fails)
        }
        m_.in_exclusive = false;
      }
      m_.changing = false;
      write_.unlock();
      if (escalate) {
        // Work that replaces the structure (training, a rebuild): after write_mu, as the lock order wants.
        std::unique_lock<std::mutex> first(m_.gate);
        std::unique_lock<std::shared_mutex> x(m_.rw);
        first.unlock();
        std::lock_guard<std::recursive_mutex> w(m_.write_mu);
        m_.in_exclusive = true;
        try {
          m_.run_exclusive_work();
        } catch (...) {
          // left due, as above
        }
        m_.in_exclusive = false;
      }
    }
    tl_held = nullptr;
    tl_writing = false;
    if (conn_) {
      m_.set_thread_snapshot(nullptr);
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
