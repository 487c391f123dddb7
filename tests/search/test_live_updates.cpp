// Live updates of an Index: readers and writers at once (threads, other Index objects), removals,
// and reads held in flight while changes go on, checked against what the test itself stored.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cctype>
#include <condition_variable>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "kernels/cpu.h"
#include "search/search_helpers.h"
#include "search/sqlite.h"
#include "support/test_support.h"
#include "recsys_catalog.h"

using namespace clipkit;
using nlohmann::json;

using namespace recsys_test;

TEST(LiveUpdates, ReadersCatchUpWithAnotherWriter) {
  for (const std::string& kind : {std::string("flat"), std::string("hnsw")}) {
    const Catalog c = make_catalog(kind, 50);
    Index reader = Index::open(c.dir, Index::Mode::ReadOnly);
    Index writer = Index::open(c.dir, Index::Mode::Shared);
    EXPECT_FALSE(reader.refresh());
    std::vector<float> v(kDim, 0.0f);
    v[2] = 1;
    Index::VectorRecord r;
    r.path = "/shop/new.jpg";
    r.sha256 = content_sha256("new-content", 11);
    r.vector = v;
    const int64_t id = writer.add_vectors({r}).at(0);
    writer.set_metadata({{r.path, R"({"category": "new"})"}});
    EXPECT_TRUE(reader.refresh());
    SearchOptions o;
    o.k = 1;
    auto hits = reader.search_vector(v, o);
    ASSERT_EQ(hits.size(), 1u) << kind;
    EXPECT_EQ(hits[0].item.id, id) << kind;
    o.where = R"(category = "new")";
    hits = reader.search_vector(c.vecs[0], o);
    ASSERT_EQ(hits.size(), 1u) << kind;
    EXPECT_EQ(hits[0].item.id, id);
    // removals: incremental where faiss can remove, a rebuild otherwise; never returned again
    EXPECT_EQ(writer.remove_paths({r.path, c.paths[0]}), 2);
    EXPECT_TRUE(reader.refresh());
    o.where.clear();
    o.k = 60;
    for (const auto& h : reader.search_vector(v, o)) EXPECT_TRUE(h.item.id != id && h.item.id != 1) << kind;
    EXPECT_EQ(reader.search_vector(v, o).size(), 49u) << kind;
    EXPECT_TRUE(reader.verify().ok) << kind;
  }
}

// A vector record's metadata is committed with the item, in one transaction: the generation
// moves once, a reader sees the item and its metadata together, and bad metadata commits nothing.
TEST(LiveUpdates, VectorRecordsCommitTheirMetadataWithTheItem) {
  const Catalog c = make_catalog("flat", 20);
  Index reader = Index::open(c.dir, Index::Mode::ReadOnly);
  Index writer = Index::open(c.dir, Index::Mode::Shared);
  std::vector<float> v(kDim, 0.0f);
  v[3] = 1;
  Index::VectorRecord r;
  r.path = "/shop/with-meta.jpg";
  r.sha256 = content_sha256("with-meta", 9);
  r.vector = v;
  r.meta = R"({"category": "fresh", "price": 7, "gone": null})";
  Index::VectorRecord bad = r;
  bad.path = "/shop/bad.jpg";
  bad.sha256 = content_sha256("bad", 3);
  bad.meta = R"({"category": )";
  const int64_t gen = writer.generation();
  EXPECT_THROW(writer.add_vectors({r, bad}), Error);
  EXPECT_EQ(writer.generation(), gen);
  EXPECT_FALSE(writer.find_path(r.path, nullptr));
  const int64_t id = writer.add_vectors({r}).at(0);
  EXPECT_EQ(writer.generation(), gen + 1);
  EXPECT_TRUE(reader.refresh());
  EXPECT_EQ(json::parse(reader.metadata(r.path)), json::parse(R"({"category": "fresh", "price": 7})"));
  SearchOptions o;
  o.k = 5;
  o.where = R"(category = "fresh" and price < 10)";
  const auto hits = reader.search_vector(c.vecs[0], o);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].item.id, id);
}

// Removals from an HNSW index keep its graph, by a writer of this process or of another one and
// after reopening (the removed ids are skipped), until they pass a tenth of it; results stay exact.
TEST(LiveUpdates, HnswRemovalsKeepTheGraph) {
  Catalog c = make_catalog("hnsw", 60);
  std::vector<bool> gone(c.vecs.size(), false);
  auto check = [&](Index& idx, const std::string& what) {
    SearchOptions o;
    o.k = 60;
    std::vector<std::pair<double, int64_t>> want;
    for (const auto& w : brute_top(c, c.vecs[0], [](const json&) { return true; }, 60))
      if (!gone[static_cast<size_t>(w.second - 1)]) want.push_back(w);
    expect_same(idx.search_vector(c.vecs[0], o), want, what);
  };
  auto held_note = [](Index& idx) {
    std::string found;
    for (const auto& n : idx.verify().notes)
      if (n.find("removed vector(s) were still in the structure") != std::string::npos) found = n;
    return found;
  };
  {
    Index w = Index::open(c.dir, Index::Mode::ReadWrite);
    EXPECT_EQ(w.remove_paths({c.paths[1], c.paths[2]}), 2);
    gone[1] = gone[2] = true;
    check(w, "writer after removing 2");
  }
  {
    Index r = Index::open(c.dir, Index::Mode::ReadOnly);
    EXPECT_TRUE(r.open_notes().empty()) << r.open_notes().front();
    check(r, "reopened after removing 2");
    EXPECT_EQ(held_note(r).substr(0, 2), "2 ");  // the graph was kept: the two are skipped
  }
  {
    Index w = Index::open(c.dir, Index::Mode::ReadWrite);
    EXPECT_EQ(w.remove_paths({c.paths[3], c.paths[4], c.paths[5], c.paths[6], c.paths[7]}), 5);
    for (int i = 3; i < 8; ++i) gone[static_cast<size_t>(i)] = true;
    check(w, "writer after removing 7");
  }
  Index r = Index::open(c.dir, Index::Mode::ReadOnly);
  check(r, "reopened after removing 7");
  EXPECT_EQ(held_note(r), "");  // 7 of 60 passed a tenth: rebuilt
  EXPECT_TRUE(r.verify().ok);
}

TEST(LiveUpdates, WriterAndReaderThreads) {
  const Catalog c = make_catalog("flat", 40);
  std::atomic<bool> done{false};
  std::atomic<int> errors{0}, searches{0};
  std::thread writer([&] {
    try {
      Index w = Index::open(c.dir, Index::Mode::Shared);
      for (int i = 0; i < 60; ++i) {
        Index::VectorRecord r;
        r.path = "/live/" + std::to_string(i) + ".png";
        const std::string content = "live-" + std::to_string(i);
        r.sha256 = content_sha256(content.data(), content.size());
        r.vector = c.vecs[static_cast<size_t>(i % 40)];
        r.vector[0] += 0.5f;
        w.add_vectors({r});
        w.set_metadata({{r.path, json({{"n", i}}).dump()}});
        if (i % 10 == 9) w.remove_paths({"/live/" + std::to_string(i - 5) + ".png"});
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
      ++errors;
    }
    done = true;
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&, t] {
      try {
        Index r = Index::open(c.dir, Index::Mode::ReadOnly);
        while (!done) {
          r.refresh();
          SearchOptions o;
          o.k = 5;
          o.where = "n >= 0";
          for (const auto& h : r.search_vector(c.vecs[static_cast<size_t>(t)], o)) {
            // a hit carries its own path's metadata
            const json m = json::parse(h.meta);
            if (h.path != "/live/" + std::to_string(m.value("n", -1)) + ".png") ++errors;
          }
          ++searches;
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
        ++errors;
      }
    });
  writer.join();
  for (auto& r : readers) r.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(searches.load(), 0);
  Index check = Index::open(c.dir, Index::Mode::ReadOnly);
  EXPECT_EQ(check.info().items, 40 + 60 - 6);
  const VerifyReport v = check.verify();
  EXPECT_TRUE(v.ok) << (v.problems.empty() ? std::string() : v.problems[0]);
}

// A writer gets its turn while many threads read in a loop (it waits only for the reads in flight),
// and readers sharing one Index see a change another Index committed once one of them refreshed
// it, the others reading the last complete state meanwhile. The deadline only ends the test if
// the writer starves; it is not a timing.
TEST(LiveUpdates, WriterFinishesWhileManyReadersLoop) {
  const Catalog c = make_catalog("flat", 40);
  Index idx = Index::open(c.dir, Index::Mode::Shared);
  Index other = Index::open(c.dir, Index::Mode::Shared);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::atomic<bool> done{false};
  std::atomic<int> errors{0}, reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 16; ++t)
    readers.emplace_back([&, t] {
      try {
        while (!done && std::chrono::steady_clock::now() < deadline) {
          idx.refresh();
          SearchOptions o;
          o.k = 3;
          o.where = "n >= 0 or category = \"shoe\"";
          for (const auto& h : idx.search_vector(c.vecs[static_cast<size_t>(t % 40)], o)) {
            const json m = json::parse(h.meta);  // a hit carries its own path's metadata
            if (m.contains("n") && h.path != "/many/" + std::to_string(m.value("n", -1)) + ".png") ++errors;
          }
          ++reads;
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
        ++errors;
      }
    });
  while (reads.load() < 16 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  int during = 0;
  for (int i = 0; i < 8; ++i) {
    Index& w = i % 2 == 0 ? idx : other;  // every other change comes from another Index
    Index::VectorRecord r;
    r.path = "/many/" + std::to_string(i) + ".png";
    const std::string content = "many-" + std::to_string(i);
    r.sha256 = content_sha256(content.data(), content.size());
    r.vector = c.vecs[static_cast<size_t>(i)];
    r.vector[2] += 0.3f;
    const int before = reads.load();
    w.add_vectors({r});
    w.set_metadata({{r.path, json({{"n", i}}).dump()}});
    if (reads.load() > before) ++during;
    // Seen by the readers' Index: at once when written through it, after a refresh otherwise.
    idx.refresh();
    SearchOptions o;
    o.k = 2;
    o.where = "n = " + std::to_string(i);
    const auto hits = idx.search_vector(r.vector, o);
    ASSERT_EQ(hits.size(), 1u) << "change " << i;
    EXPECT_EQ(hits[0].path, r.path);
  }
  const bool in_time = std::chrono::steady_clock::now() < deadline;
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_TRUE(in_time);
  EXPECT_GT(during, 0);  // the readers went on between the writes
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(idx.info().items, 40 + 8);
}

// One Index shared by reader threads (searches and recommendations in parallel, each through its
// own catalog connection) while another thread writes through it.
TEST(LiveUpdates, ReaderThreadsShareOneIndexWithItsWriter) {
  const Catalog c = make_catalog("flat", 40);
  Index idx = Index::open(c.dir, Index::Mode::Shared);
  std::atomic<bool> done{false};
  std::atomic<int> errors{0}, reads{0}, published{-1};
  std::thread writer([&] {
    try {
      for (int i = 0; i < 12; ++i) {
        Index::VectorRecord r;
        r.path = "/live/" + std::to_string(i) + ".png";
        const std::string content = "shared-" + std::to_string(i);
        r.sha256 = content_sha256(content.data(), content.size());
        r.vector = c.vecs[static_cast<size_t>(i % 40)];
        r.vector[1] -= 0.7f;
        idx.add_vectors({r});
        idx.set_metadata({{r.path, json({{"n", i}}).dump()}});
        published = i;
        if (i % 6 == 5) idx.remove_paths({"/live/" + std::to_string(i - 3) + ".png"});
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
      ++errors;
    }
    done = true;
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&, t] {
      try {
        while (!done) {
          idx.refresh();
          const int n = published.load();
          SearchOptions o;
          o.k = 5;
          o.where = "n >= 0";
          for (const auto& h : idx.search_vector(c.vecs[static_cast<size_t>(t)], o)) {
            const json m = json::parse(h.meta);  // a hit carries its own path's metadata
            if (h.path != "/live/" + std::to_string(m.value("n", -1)) + ".png") {
              ADD_FAILURE() << h.path << " carries " << h.meta;
              ++errors;
            }
          }
          if (n >= 0) {
            // the last change the writer finished is seen at once
            o.where = "n = " + std::to_string(n);
            const auto hits = idx.search_vector(c.vecs[static_cast<size_t>(t)], o);
            if (hits.size() != 1 || hits[0].path != "/live/" + std::to_string(n) + ".png") {
              ADD_FAILURE() << "n = " << n << ": " << hits.size() << " hits" << (hits.empty() ? "" : ", first " + hits[0].path);
              ++errors;
            }
          }
          RecommendOptions ro;
          QueryTerm p;
          p.kind = QueryTerm::Kind::Item;
          p.value = std::to_string(t + 1);
          ro.positive.push_back(p);
          ro.search.k = 3;
          if (const auto r = idx.recommend(ro, nullptr); r.size() != 3) {
            ADD_FAILURE() << "recommend gave " << r.size() << " hits";
            ++errors;
          }
          ++reads;
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
        ++errors;
      }
    });
  writer.join();
  for (auto& r : readers) r.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(idx.info().items, 40 + 12 - 2);
  const VerifyReport v = idx.verify();
  EXPECT_TRUE(v.ok) << (v.problems.empty() ? std::string() : v.problems[0]);
}

namespace {

// A model whose text encoding waits until the test releases it: Index::search holds its read for
// the whole call, the query's encoding included, so a reader can be held inside a read.
class LatchModel : public test::FakeModel {
 public:
  LatchModel() : test::FakeModel(kDim) {}
  Embeddings encode_tokens(const std::vector<std::vector<int32_t>>& ids, bool normalize, DebugTrace* trace) const override {
    {
      std::unique_lock<std::mutex> l(mu_);
      entered_ = true;
      cv_.notify_all();
      cv_.wait(l, [&] { return released_; });
    }
    return test::FakeModel::encode_tokens(ids, normalize, trace);
  }
  void wait_entered() const {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return entered_; });
  }
  void release() {
    std::lock_guard<std::mutex> l(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable bool entered_ = false;
  bool released_ = false;
};

}  // namespace

// A read in flight (held inside the call) blocks no change: the changes complete, the reads that
// start after each see it whole, and the held read answers from the state it started with.
TEST(LiveUpdates, ChangesDoNotWaitForAReadInFlight) {
  for (const std::string kind : {"flat", "hnsw"}) {
    const Catalog c = make_catalog(kind, 40);
    Index idx = Index::open(c.dir, Index::Mode::Shared);
    LatchModel lm;
    std::vector<SearchHit> held_hits;
    std::thread held([&] {
      try {
        Query q;
        q.terms.push_back({QueryTerm::Kind::Text, "red dress", 1.0f, {}});
        SearchOptions o;
        o.k = 100;
        held_hits = idx.search(q, &lm, o);
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
      }
    });
    lm.wait_entered();
    std::atomic<bool> writing{true};
    std::atomic<int> odd{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 2; ++t)
      readers.emplace_back([&, t] {
        try {
          while (writing) {
            // each change adds a pair in one call: never one of the two alone
            SearchOptions o;
            o.k = 1000;
            o.filter.path_prefix = "/pair/";
            if (idx.search_vector(c.vecs[static_cast<size_t>(t)], o).size() % 2 != 0) ++odd;
          }
        } catch (const std::exception& e) {
          ADD_FAILURE() << e.what();
        }
      });
    // The changes run on a thread of their own: one that waited for the held read would fail the
    // test at the deadline below instead of hanging it.
    std::promise<void> finished;
    std::future<void> done = finished.get_future();
    std::thread writer([&] {
      try {
        for (int i = 0; i < 8; ++i) {
          std::vector<Index::VectorRecord> pair;
          for (const char* side : {"a", "b"}) {
            Index::VectorRecord r;
            r.path = "/pair/" + std::to_string(i) + "-" + side + ".png";
            const std::string content = r.path;
            r.sha256 = content_sha256(content.data(), content.size());
            r.vector = c.vecs[static_cast<size_t>(i)];
            r.vector[static_cast<size_t>(side[0] - 'a')] += 0.3f;
            pair.push_back(std::move(r));
          }
          idx.add_vectors(pair);
          idx.set_metadata({{"/pair/" + std::to_string(i) + "-a.png", json({{"n", i}}).dump()}});
          if (i % 4 == 3) idx.remove_paths({c.paths[static_cast<size_t>(i)]});
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
      }
      finished.set_value();
    });
    const bool completed = done.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
    EXPECT_TRUE(completed) << kind << ": a change waited for the read in flight";
    if (completed) {
      // while the held read is still in flight, new reads see every change
      SearchOptions o;
      o.k = 1000;
      o.filter.path_prefix = "/pair/";
      EXPECT_EQ(idx.search_vector(c.vecs[0], o).size(), 16u) << kind;
      o = SearchOptions{};
      o.k = 5;
      o.where = "n = 7";
      const auto h = idx.search_vector(c.vecs[0], o);
      ASSERT_EQ(h.size(), 1u) << kind;
      EXPECT_EQ(h[0].path, "/pair/7-a.png");
      o = SearchOptions{};
      o.k = 1000;
      for (const auto& hit : idx.search_vector(c.vecs[0], o))
        for (int gone : {4, 8}) EXPECT_NE(hit.item.id, gone) << kind << ": a removed item is still found";
    }
    writing = false;
    lm.release();
    held.join();
    writer.join();
    for (auto& r : readers) r.join();
    EXPECT_EQ(odd.load(), 0) << kind << ": a read saw half of a change";
    // the held read saw none of the changes (the removed items included)
    EXPECT_EQ(held_hits.size(), 40u) << kind;
    for (const auto& hit : held_hits) EXPECT_EQ(hit.path.rfind("/pair/", 0), std::string::npos) << hit.path;
  }
}
