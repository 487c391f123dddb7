// Allocation failures along an ingest: Index::add_files runs with the N-th memory allocation
// failing (malloc, calloc, realloc and the aligned allocators return null, so operator new throws
// std::bad_alloc), for N = 1, 2, ... until an ingest completes without reaching N. Allocations
// are counted only while the ingest runs (from the open index to its close), in every thread:
// reading, hashing and decoding the files, the catalog (SQLite allocates through malloc) and the
// vector cache writer. After every run the ingest has thrown (or succeeded), the index passes
// verify(deep), every batch reported committed is still there, and a clean rerun completes it.
//
// The allocator is replaced in this executable (symbol interposition), which is why this suite
// lives beside the LD_PRELOAD one and, like it, is not run under the sanitizers.
#include <errno.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <stdlib.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "search/search_helpers.h"
#include "support/test_support.h"

// The sanitizers bring their own allocator: there the allocator is left alone and the test skips
// (the sanitizer build leaves this executable out anyway, label no-sanitizer).
#if defined(__SANITIZE_ADDRESS__)
#define CLIPKIT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CLIPKIT_SANITIZED 1
#endif
#endif

#ifndef CLIPKIT_SANITIZED
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
}
#endif

namespace {

std::atomic<bool> g_armed{false};
std::atomic<long> g_count{0};
std::atomic<long> g_fail_at{0};  // 0: count only
std::atomic<long> g_failed{0};   // allocations refused so far

// True when this allocation must fail.
[[maybe_unused]] bool refuse() {
  if (!g_armed.load(std::memory_order_relaxed)) return false;
  const long n = ++g_count;
  if (n != g_fail_at.load(std::memory_order_relaxed)) return false;
  ++g_failed;
  errno = ENOMEM;
  return true;
}

}  // namespace

#ifndef CLIPKIT_SANITIZED
extern "C" {

void* malloc(size_t n) { return refuse() ? nullptr : __libc_malloc(n); }
void* calloc(size_t k, size_t n) { return refuse() ? nullptr : __libc_calloc(k, n); }
void* realloc(void* p, size_t n) {
  if (p && n == 0) return __libc_realloc(p, n);  // a free
  return refuse() ? nullptr : __libc_realloc(p, n);
}
void* memalign(size_t a, size_t n) { return refuse() ? nullptr : __libc_memalign(a, n); }
void* aligned_alloc(size_t a, size_t n) { return refuse() ? nullptr : __libc_memalign(a, n); }
int posix_memalign(void** out, size_t a, size_t n) {
  if (refuse()) return ENOMEM;
  void* p = __libc_memalign(a, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}

}  // extern "C"
#endif  // CLIPKIT_SANITIZED

namespace fs = std::filesystem;
using namespace clipkit;

namespace {

// Arms the counter for its lifetime: allocation `at` (1-based) fails; 0 counts only.
class Armed {
 public:
  explicit Armed(long at) {
    g_count = 0;
    g_failed = 0;
    g_fail_at = at;
    g_armed = true;
  }
  ~Armed() { g_armed = false; }
};

struct Outcome {
  bool completed = false;
  bool bad_alloc = false;
  std::string error;
  int64_t done = 0;       // candidate files in batches reported committed
  int64_t committed = 0;  // of those, the files that were not reported failed
};

AddOptions ingest_options(int64_t* done) {
  AddOptions o;
  o.batch = 2;
  o.threads = 1;
  o.on_batch = [done](const AddProgress& p) { *done = p.done; };
  return o;
}

// One ingest of `folder` into the index at `dir`, with allocation `at` failing.
Outcome ingest(const std::string& dir, const std::string& folder, const Model& model, long at) {
  Outcome out;
  std::optional<Index> idx(Index::open(dir));
  {
    Armed armed(at);
    try {
      const AddReport r = idx->add_files({folder}, model, ingest_options(&out.done));
      out.completed = true;
      // A file whose read or decode ran out of memory is reported failed, not lost silently.
      if (r.failed > 0) out.error = r.failures.front().path + ": " + r.failures.front().reason;
      out.committed = out.done - r.failed;
    } catch (const std::bad_alloc&) {
      out.bad_alloc = true;
    } catch (const Error& e) {
      out.error = e.what();
    }
    // One allocation failed: when it stopped the ingest, no file had been reported failed before.
    if (!out.completed) out.committed = out.done;
    idx.reset();  // the close belongs to the ingest: it may write too
  }
  return out;
}

}  // namespace

TEST(FaultInjection, EveryAllocationFailingAlongAnIngest) {
#ifdef CLIPKIT_SANITIZED
  GTEST_SKIP() << "the allocator cannot be replaced under the sanitizers";
#endif
  test::FakeModel model;
  const std::string root = test::temp_dir();
  const std::string folder = root + "/pics";
  fs::create_directories(folder);
  const int n_files = 3;  // two batches: a fault after the first commit must keep it
  for (int k = 0; k < n_files; ++k)
    test::write_synthetic_png(folder + "/img_" + std::to_string(k) + ".png", k, 12 + k, 10);
  const std::string empty = root + "/empty";
  { Index::create(empty, model.info()); }

  int fault_points = 0, after_commit = 0;
  for (long at = 1; at <= 20000; ++at) {
    SCOPED_TRACE("allocation " + std::to_string(at) + " failing");
    const std::string dir = root + "/idx";
    fs::remove_all(dir);
    fs::copy(empty, dir);
    const Outcome o = ingest(dir, folder, model, at);
    const bool hit = g_failed > 0;
    SCOPED_TRACE("error: " + o.error);
    if (!hit) {
      // The ingest ended before allocation N: a complete, clean ingest.
      EXPECT_TRUE(o.completed);
      EXPECT_TRUE(o.error.empty());
      Index idx = Index::open(dir);
      const VerifyReport v = idx.verify(true);
      EXPECT_TRUE(v.ok);
      EXPECT_EQ(v.files, n_files);
      std::cout << "allocation fault points: " << fault_points << " (failed runs after a committed batch: " << after_commit
                << ")\n";
      RecordProperty("fault_points", fault_points);
      EXPECT_GT(fault_points, 100);
      EXPECT_GT(after_commit, 0);
      return;
    }
    ++fault_points;
    if (!o.completed && o.done > 0) ++after_commit;
    // An error that says what ran out, never a partial success claimed as a full one.
    if (!o.completed && !o.bad_alloc) {
      EXPECT_FALSE(o.error.empty());
    }
    for (const auto& e : fs::directory_iterator(dir))
      EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "temporary file left: " << e.path();
    {
      Index idx = Index::open(dir);
      const VerifyReport v = idx.verify(true);
      EXPECT_TRUE(v.ok) << (v.problems.empty() ? "" : v.problems.front());
      EXPECT_GE(v.files, o.committed) << "files in committed batches were lost";
      if (o.completed && o.error.empty()) {
        EXPECT_EQ(v.files, n_files);
      }
      // A clean rerun completes the index.
      int64_t ignored = 0;
      const AddReport r = idx.add_files({folder}, model, ingest_options(&ignored));
      EXPECT_EQ(r.failed, 0);
      const VerifyReport after = idx.verify(true);
      EXPECT_TRUE(after.ok);
      EXPECT_EQ(after.files, n_files);
      EXPECT_EQ(after.items, n_files);
    }
    if (::testing::Test::HasFailure()) return;
  }
  ADD_FAILURE() << "the ingest never completed below the sweep's limit";
}
