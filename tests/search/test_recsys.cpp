// Metadata, filters, recommendations and live updates of an Index, each checked against a brute
// force computed here from the vectors and metadata the test itself stored, on every index kind.
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

namespace {

using namespace recsys_test;

class PerKind : public ::testing::TestWithParam<std::string> {};

std::string kind_of(const std::string& p) { return p; }

}  // namespace

TEST_P(PerKind, FiltersMatchBruteForce) {
  const std::string kind = kind_of(GetParam());
  const Catalog c = make_catalog(kind, 600, kind == "IVF8,Flat" ? 300 : 0);
  Index idx = Index::open(c.dir, Index::Mode::ReadOnly);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (const auto& fc : filter_cases()) {
    for (int t = 0; t < 3; ++t) {
      std::vector<float> q(kDim);
      for (auto& x : q) x = nd(rng);
      q = unit(q);
      SearchOptions o;
      o.k = 10;
      o.where = fc.where;
      const auto hits = idx.search_vector(q, o);
      expect_same(hits, brute_top(c, q, fc.pred, 10), kind + ": " + fc.where);
      for (const auto& h : hits) EXPECT_EQ(json::parse(h.meta), c.meta[static_cast<size_t>(h.item.id - 1)]) << fc.where;
      if (kind == "IVF8,Flat") {
        // searched in the structure, restricted by faiss's ID selector (every list probed)
        o.exact_scan_max = 0;
        expect_same(idx.search_vector(q, o), brute_top(c, q, fc.pred, 10), kind + " with an ID selector: " + fc.where);
      }
    }
  }
  // combined with the path filter, and with the JSON form of the filter
  std::vector<float> q = c.vecs[3];
  SearchOptions o;
  o.k = 5;
  o.where = where_from_json(R"({"and": [{"field": "category", "op": "=", "value": "dress"}, {"field": "price", "op": "<", "value": 60}]})");
  o.filter.path_prefix = "/shop/p1";
  const auto hits = idx.search_vector(q, o);
  const auto want = brute_top(c, q, [&](const json& m) { return m.value("category", "") == "dress" && m["price"].get<double>() < 60; }, 600);
  std::vector<std::pair<double, int64_t>> pref;
  for (const auto& w : want)
    if (c.paths[static_cast<size_t>(w.second - 1)].rfind("/shop/p1", 0) == 0 && pref.size() < 5) pref.push_back(w);
  expect_same(hits, pref, kind + ": JSON form with path prefix");
}

TEST_P(PerKind, RecommendationsMatchBruteForce) {
  const std::string kind = kind_of(GetParam());
  const Catalog c = make_catalog(kind, 600, kind == "IVF8,Flat" ? 300 : 0);
  Index idx = Index::open(c.dir, Index::Mode::ReadOnly);
  const std::vector<int64_t> pos = {5, 17, 230}, neg = {44, 301};
  auto item = [](int64_t id) {
    QueryTerm t;
    t.kind = QueryTerm::Kind::Item;
    t.value = std::to_string(id);
    return t;
  };
  auto is_example = [&](int64_t id) {
    return std::count(pos.begin(), pos.end(), id) || std::count(neg.begin(), neg.end(), id);
  };
  auto sigma = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  for (const std::string& where : {std::string(), std::string(R"(category in ["dress", "bag"])")}) {
    const Pred pass = where.empty() ? Pred([](const json&) { return true; })
                                    : Pred([](const json& m) { return m.value("category", "") == "dress" || m.value("category", "") == "bag"; });
    for (int with_pos = 0; with_pos < 2; ++with_pos)
      for (int with_neg = 0; with_neg < 2; ++with_neg) {
        if (!with_pos && !with_neg) continue;
        for (auto strategy : {RecommendOptions::Strategy::Average, RecommendOptions::Strategy::BestScore}) {
          RecommendOptions o;
          o.strategy = strategy;
          if (with_pos)
            for (auto id : pos) o.positive.push_back(item(id));
          if (with_neg)
            for (auto id : neg) o.negative.push_back(item(id));
          o.search.k = 12;
          o.search.where = where;
          o.search.exclude_ids = {100, 101};
          // brute force of the documented formulas
          std::vector<double> qa(kDim, 0.0);
          for (int d = 0; d < kDim; ++d) {
            double mp = 0, mn = 0;
            for (auto id : pos) mp += c.vecs[static_cast<size_t>(id - 1)][static_cast<size_t>(d)] / pos.size();
            for (auto id : neg) mn += c.vecs[static_cast<size_t>(id - 1)][static_cast<size_t>(d)] / neg.size();
            qa[static_cast<size_t>(d)] = with_pos && with_neg ? 2 * mp - mn : with_pos ? mp : -mn;
          }
          std::vector<std::pair<double, int64_t>> all;
          for (size_t i = 0; i < c.vecs.size(); ++i) {
            const int64_t id = static_cast<int64_t>(i + 1);
            if (is_example(id) || id == 100 || id == 101 || !pass(c.meta[i])) continue;
            double s;
            if (strategy == RecommendOptions::Strategy::Average) {
              s = 0;
              for (int d = 0; d < kDim; ++d) s += qa[static_cast<size_t>(d)] * c.vecs[i][static_cast<size_t>(d)];
            } else {
              double bp = -INFINITY, bn = -INFINITY;
              if (with_pos)
                for (auto p : pos) bp = std::max(bp, dotv(c.vecs[i], c.vecs[static_cast<size_t>(p - 1)]));
              if (with_neg)
                for (auto n : neg) bn = std::max(bn, dotv(c.vecs[i], c.vecs[static_cast<size_t>(n - 1)]));
              s = bp > bn ? sigma(bp) : -sigma(bn);
            }
            all.emplace_back(s, id);
          }
          std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
          all.resize(12);
          const std::string what = kind + " " + (strategy == RecommendOptions::Strategy::Average ? "average" : "best-score") +
                                   " pos=" + std::to_string(with_pos) + " neg=" + std::to_string(with_neg) + " where=" + where;
          expect_same(idx.recommend(o, nullptr), all, what);
        }
      }
  }
}

// Changes not yet merged into the structure (new vectors scanned beside it, removed ids skipped,
// changed metadata read beside the view) give the brute-force results, and the same ones once merged.
TEST_P(PerKind, UnmergedChangesMatchBruteForce) {
  const std::string kind = kind_of(GetParam());
  const int n0 = 320;
  Catalog c = make_catalog(kind, n0, kind == "IVF8,Flat" ? 200 : 0);
  Index idx = Index::open(c.dir);
  std::mt19937 rng(23);
  std::normal_distribution<float> nd;
  std::vector<Index::VectorRecord> recs;
  std::vector<std::pair<std::string, std::string>> metas;
  for (int i = n0; i < n0 + 40; ++i) {
    Index::VectorRecord r;
    r.path = "/shop/p" + std::to_string(i) + ".jpg";
    r.sha256 = content_sha256(&i, sizeof i);
    // near the examples and queries below, so that they rank among the first
    r.vector = c.vecs[(i - n0) % 2 == 0 ? 4 : 16];
    for (auto& x : r.vector) x += 0.15f * nd(rng);
    c.vecs.push_back(unit(r.vector));
    c.paths.push_back(r.path);
    json j = {{"category", kCategories[i % 4]}, {"price", (i * 37) % 100 + 0.5}, {"colors", json::array({kColors[i % 5]})}, {"in_stock", i % 2 == 0}};
    metas.emplace_back(r.path, j.dump());
    c.meta.push_back(j);
    recs.push_back(std::move(r));
  }
  const auto ids = idx.add_vectors(recs);
  ASSERT_EQ(ids.front(), n0 + 1);
  ASSERT_EQ(ids.back(), n0 + 40);
  idx.set_metadata(metas);
  for (int i = 20; i < 30; ++i) {
    c.meta[static_cast<size_t>(i)] = {{"category", "dress"}, {"price", 1.5}};
    idx.set_metadata({{c.paths[static_cast<size_t>(i)], c.meta[static_cast<size_t>(i)].dump()}}, false);
  }
  const std::set<int64_t> removed = {3, 50, n0 + 5, n0 + 33};
  for (int64_t id : removed) EXPECT_EQ(idx.remove_paths({c.paths[static_cast<size_t>(id - 1)]}), 1);
  auto item = [](int64_t id) {
    QueryTerm t;
    t.kind = QueryTerm::Kind::Item;
    t.value = std::to_string(id);
    return t;
  };
  auto recommendations = [&] {
    std::vector<std::vector<SearchHit>> out;
    for (auto strategy : {RecommendOptions::Strategy::Average, RecommendOptions::Strategy::BestScore})
      for (const std::string& where : {std::string(), std::string(R"(category in ["dress", "bag"])")}) {
        if (kind != "flat" && strategy == RecommendOptions::Strategy::Average && where.empty()) continue;  // approximate
        RecommendOptions o;
        o.strategy = strategy;
        for (int64_t id : {5, 17, n0 + 10}) o.positive.push_back(item(id));
        o.negative.push_back(item(44));
        o.search.k = 12;
        o.search.where = where;
        out.push_back(idx.recommend(o, nullptr));
      }
    return out;
  };
  auto check = [&](const std::string& when) {
    std::mt19937 qr(5);
    for (const auto& fc : filter_cases()) {
      for (int t = 0; t < 2; ++t) {
        std::vector<float> q(kDim);
        for (auto& x : q) x = nd(qr);
        q = t == 0 ? c.vecs[4] : unit(q);
        SearchOptions o;
        o.k = 10;
        o.where = fc.where;
        const auto want = brute_top(
            c, q, [&](const json& m) { return fc.pred(m); }, 400);
        std::vector<std::pair<double, int64_t>> kept;
        for (const auto& w : want)
          if (!removed.count(w.second) && kept.size() < 10) kept.push_back(w);
        expect_same(idx.search_vector(q, o), kept, when + " " + kind + " where " + fc.where);
        if (kind == "flat" && fc.where == filter_cases().front().where) {
          o.where.clear();
          std::vector<std::pair<double, int64_t>> all;
          for (const auto& w : brute_top(c, q, [](const json&) { return true; }, 400))
            if (!removed.count(w.second) && all.size() < 10) all.push_back(w);
          expect_same(idx.search_vector(q, o), all, when + " unfiltered");
        }
      }
    }
  };
  check("unmerged");
  const auto before = recommendations();
  EXPECT_TRUE(idx.verify().ok);  // an exclusive call: merges the changes into the structure and the view
  check("merged");
  const auto after = recommendations();
  ASSERT_EQ(before.size(), after.size());
  for (size_t r = 0; r < before.size(); ++r) {
    ASSERT_EQ(before[r].size(), after[r].size()) << r;
    for (size_t i = 0; i < before[r].size(); ++i) {
      EXPECT_EQ(before[r][i].item.id, after[r][i].item.id) << kind << " recommendation " << r << " rank " << i + 1;
      EXPECT_FLOAT_EQ(before[r][i].score, after[r][i].score) << kind << " recommendation " << r << " rank " << i + 1;
      EXPECT_EQ(removed.count(before[r][i].item.id), 0u);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, PerKind, ::testing::Values("flat", "hnsw", "IVF8,Flat"),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string n = i.param;
                           for (auto& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(Recommend, DiversityFollowsMaximalMarginalRelevance) {
  const Catalog c = make_catalog("flat", 200);
  Index idx = Index::open(c.dir, Index::Mode::ReadOnly);
  RecommendOptions o;
  QueryTerm t;
  t.kind = QueryTerm::Kind::Item;
  t.value = "#9";
  o.positive.push_back(t);
  o.search.k = 6;
  o.diversity = 0.6f;
  const auto hits = idx.recommend(o, nullptr);
  // reference: the pool is the best max(4k, 50) by score, then greedy MMR
  std::vector<std::pair<double, int64_t>> pool;
  for (size_t i = 0; i < c.vecs.size(); ++i)
    if (i != 8) pool.emplace_back(dotv(c.vecs[i], c.vecs[8]), static_cast<int64_t>(i + 1));
  std::sort(pool.begin(), pool.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  pool.resize(50);
  std::vector<int64_t> chosen;
  std::vector<bool> taken(pool.size());
  while (chosen.size() < 6) {
    double best = -INFINITY;
    size_t bi = 0;
    for (size_t i = 0; i < pool.size(); ++i) {
      if (taken[i]) continue;
      double red = chosen.empty() ? 0 : -INFINITY;
      for (auto id : chosen) red = std::max(red, dotv(c.vecs[static_cast<size_t>(pool[i].second - 1)], c.vecs[static_cast<size_t>(id - 1)]));
      const double v = 0.4 * pool[i].first - 0.6 * red;
      if (v > best) best = v, bi = i;
    }
    taken[bi] = true;
    chosen.push_back(pool[bi].second);
  }
  ASSERT_EQ(hits.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(hits[i].item.id, chosen[i]) << i;
}

TEST(Recommend, NearDuplicatesOfExamplesAreLeftOut) {
  test::FakeModel m(kDim);
  const std::string dir = test::temp_dir() + "/idx";
  Index idx = Index::create(dir, m.info());
  std::vector<Index::VectorRecord> recs;
  std::vector<float> base(kDim, 0.0f);
  base[0] = 1;
  for (int i = 0; i < 5; ++i) {
    Index::VectorRecord r;
    r.path = "/d/" + std::to_string(i) + ".png";
    r.sha256 = content_sha256(&i, sizeof i);
    r.vector = base;
    r.vector[1] = i == 1 ? 0.01f : static_cast<float>(i);  // item 2 is a near-copy of item 1
    recs.push_back(r);
  }
  idx.add_vectors(recs);
  RecommendOptions o;
  QueryTerm t;
  t.kind = QueryTerm::Kind::Item;
  t.value = "1";
  o.positive.push_back(t);
  const auto hits = idx.recommend(o, nullptr);
  ASSERT_EQ(hits.size(), 3u);
  for (const auto& h : hits) EXPECT_TRUE(h.item.id != 1 && h.item.id != 2) << h.item.id;
  // a raw vector example excludes its duplicates too
  RecommendOptions v;
  QueryTerm vt;
  vt.kind = QueryTerm::Kind::Vector;
  vt.vector = base;
  v.positive.push_back(vt);
  for (const auto& h : idx.recommend(v, nullptr)) EXPECT_TRUE(h.item.id != 1 && h.item.id != 2) << h.item.id;
  // bad input
  RecommendOptions none;
  EXPECT_THROW(idx.recommend(none, nullptr), Error);
  try {
    RecommendOptions same;
    same.positive = {vt};
    same.negative = {vt};
    same.search.k = 2;
    (void)idx.recommend(same, nullptr);  // 2·v − v = v: fine
  } catch (const Error& e) {
    ADD_FAILURE() << e.what();
  }
  QueryTerm bad = vt;
  bad.vector.push_back(1);
  RecommendOptions wrong;
  wrong.positive = {bad};
  EXPECT_THROW(idx.recommend(wrong, nullptr), Error);
  EXPECT_THROW(parse_strategy("median"), Error);
}

// Unfiltered recommendations on flat and hnsw scan an 8-bit copy of the vectors first (when the
// CPU has AVX-512 VNNI); the copy follows adds and removals. Clustered items (near-duplicates of
// the examples among them), a dimension that is not a multiple of 4, both strategies, and the
// float paths (AVX-512 capped off) each give the brute-force answer.
TEST(Recommend, EightBitScanMatchesBruteForceAcrossChanges) {
  constexpr int kD = 30;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<std::vector<float>> centres(40, std::vector<float>(kD));
  for (auto& c : centres)
    for (auto& x : c) x = nd(rng);
  auto draw = [&](int i) {
    std::vector<float> v = centres[static_cast<size_t>(i % 40)];
    for (auto& x : v) x += 0.05f * nd(rng);
    return unit(v);
  };
  for (const std::string kind : {"flat", "hnsw"}) {
    test::FakeModel m(kD);
    const std::string dir = test::temp_dir() + "/q8-" + kind;
    IndexCreateOptions co;
    co.kind = kind;
    Index idx = Index::create(dir, m.info(), co);
    std::map<int64_t, std::vector<float>> alive;  // id -> unit vector
    std::map<int64_t, std::string> path_of;
    int next = 0;
    auto add = [&](int n) {
      std::vector<Index::VectorRecord> recs;
      for (int i = 0; i < n; ++i, ++next) {
        Index::VectorRecord r;
        r.path = "/q/" + std::to_string(next) + ".jpg";
        r.sha256 = content_sha256(&next, sizeof next);
        r.vector = draw(next);
        recs.push_back(r);
      }
      const auto ids = idx.add_vectors(recs);
      for (size_t i = 0; i < ids.size(); ++i) {
        alive[ids[i]] = recs[i].vector;
        path_of[ids[i]] = recs[i].path;
      }
    };
    auto check = [&](const std::string& when, Index* reader = nullptr) {
      Index& r = reader ? *reader : idx;
      const std::vector<int64_t> pos = {1, 55, 123}, neg = {7, 300};
      for (auto strategy : {RecommendOptions::Strategy::Average, RecommendOptions::Strategy::BestScore}) {
        RecommendOptions o;
        o.strategy = strategy;
        for (auto id : pos) o.positive.push_back(QueryTerm{QueryTerm::Kind::Item, std::to_string(id), 1.0f, {}});
        for (auto id : neg) o.negative.push_back(QueryTerm{QueryTerm::Kind::Item, std::to_string(id), 1.0f, {}});
        o.search.k = 10;
        std::vector<double> qa(kD, 0.0);
        for (int d = 0; d < kD; ++d) {
          for (auto id : pos) qa[static_cast<size_t>(d)] += 2.0 * alive.at(id)[static_cast<size_t>(d)] / pos.size();
          for (auto id : neg) qa[static_cast<size_t>(d)] -= alive.at(id)[static_cast<size_t>(d)] / neg.size();
        }
        std::vector<std::pair<double, int64_t>> all;
        for (const auto& [id, v] : alive) {
          if (std::count(pos.begin(), pos.end(), id) || std::count(neg.begin(), neg.end(), id)) continue;
          double bp = -INFINITY, bn = -INFINITY, dup = -INFINITY;
          for (auto p : pos) bp = std::max(bp, dotv(v, alive.at(p)));
          for (auto n : neg) bn = std::max(bn, dotv(v, alive.at(n)));
          dup = std::max(bp, bn);
          if (dup >= 0.99) continue;  // a near-duplicate of an example
          double s = 0;
          if (strategy == RecommendOptions::Strategy::Average) {
            for (int d = 0; d < kD; ++d) s += qa[static_cast<size_t>(d)] * v[static_cast<size_t>(d)];
          } else {
            s = bp > bn ? 1.0 / (1.0 + std::exp(-bp)) : -1.0 / (1.0 + std::exp(-bn));
          }
          all.emplace_back(s, id);
        }
        std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
        all.resize(10);
        expect_same(r.recommend(o, nullptr), all, kind + " " + when + (strategy == RecommendOptions::Strategy::Average ? " average" : " best-score"));
      }
    };
    add(400);
    check("after the first adds");
    add(60);  // appended to the 8-bit copy
    check("after more adds");
    {
      // A reader opened now holds these items in its structure (and its 8-bit copy); the next
      // ones reach it as its delta, bounded before they are scored exactly.
      Index reader = Index::open(dir, Index::Mode::ReadOnly);
      add(40);
      EXPECT_TRUE(reader.refresh());
      check("with a delta", &reader);
    }
    std::vector<std::string> gone;
    for (int64_t id = 20; id < 50; ++id) {
      gone.push_back(path_of[id]);
      alive.erase(id);
    }
    idx.remove_paths(gone);  // flat: rows move (the copy is made again); hnsw: tombstones
    check("after removals");
    set_max_cpu_isa(CpuIsa::Avx2);  // the float paths
    check("without AVX-512");
    set_max_cpu_isa(CpuIsa::Avx512);
  }
}

// The field index a reader keeps follows another process's metadata changes (set, merge,
// unset, removed paths, new items), nested fields and string ranges included: every filter
// still returns exactly the brute-force set.
TEST(Filters, FieldIndexFollowsChanges) {
  Catalog c = make_catalog("flat", 120);
  Index reader = Index::open(c.dir, Index::Mode::ReadOnly);
  Index writer = Index::open(c.dir, Index::Mode::Shared);
  std::vector<bool> gone(c.vecs.size(), false);
  const std::vector<FilterCase> cases = {
      {"size.eu >= 38", [](const json& m) { return m.contains("size") && m["size"].contains("eu") && m["size"]["eu"].get<double>() >= 38; }},
      {R"(size.eu in [36, 37] or size.label = "M")",
       [](const json& m) {
         if (!m.contains("size")) return false;
         const json& z = m["size"];
         return (z.contains("eu") && (z["eu"] == 36 || z["eu"] == 37)) || z.value("label", "") == "M";
       }},
      {R"(name < "item-2")", [](const json& m) { return m.contains("name") && m["name"].get<std::string>() < "item-2"; }},
      {R"(name >= "item-5" and exists size.eu)",
       [](const json& m) { return m.contains("name") && m["name"].get<std::string>() >= "item-5" && m.contains("size") && m["size"].contains("eu"); }},
      {"price > 10 and price <= 40.5", [](const json& m) { return m.contains("price") && m["price"].get<double>() > 10 && m["price"].get<double>() <= 40.5; }},
      {R"(category = "dress" and not colors = "red")", [](const json& m) { return m.value("category", "") == "dress" && !has_color(m, "red"); }},
      {"in_stock = false", [](const json& m) { return m.contains("in_stock") && !m["in_stock"].get<bool>(); }},
      {R"(colors = "blue" or price < 5)", [](const json& m) { return has_color(m, "blue") || (m.contains("price") && m["price"].get<double>() < 5); }},
  };
  auto check = [&](const std::string& stage) {
    const std::vector<float>& q = c.vecs[7];
    for (const auto& fc : cases) {
      SearchOptions o;
      o.k = 200;
      o.where = fc.where;
      std::vector<std::pair<double, int64_t>> want;
      for (const auto& w : brute_top(c, q, fc.pred, 200))
        if (!gone[static_cast<size_t>(w.second - 1)]) want.push_back(w);
      expect_same(reader.search_vector(q, o), want, stage + ": " + fc.where);
    }
  };
  reader.search_vector(c.vecs[0], SearchOptions{});
  check("before");
  // nested fields and names on the first 60 items, a merge, an unset, removals, a new item
  std::vector<std::pair<std::string, std::string>> metas;
  for (int i = 0; i < 60; ++i) {
    json& m = c.meta[static_cast<size_t>(i)];
    m["size"] = {{"eu", 36 + i % 6}, {"label", i % 3 == 0 ? "M" : "S"}};
    m["name"] = "item-" + std::to_string(i);
    metas.emplace_back(c.paths[static_cast<size_t>(i)], m.dump());
  }
  reader.refresh();
  writer.set_metadata(metas);
  writer.set_metadata({{c.paths[3], R"({"price": 2.5, "colors": ["blue"]})"}}, true);
  c.meta[3]["price"] = 2.5;
  c.meta[3]["colors"] = json::array({"blue"});
  writer.unset_metadata({c.paths[4], c.paths[5]}, {"size"});
  c.meta[4].erase("size");
  c.meta[5].erase("size");
  writer.unset_metadata({c.paths[6]});
  c.meta[6] = json::object();
  writer.remove_paths({c.paths[8], c.paths[9]});
  gone[8] = gone[9] = true;
  Index::VectorRecord r;
  r.path = "/shop/new.jpg";
  r.sha256 = content_sha256("new-content", 11);
  r.vector = c.vecs[7];
  r.vector[0] += 0.5f;
  writer.add_vectors({r});
  const json nm = {{"name", "item-0a"}, {"size", {{"eu", 40}}}, {"price", 20}, {"category", "dress"}, {"colors", {"green"}}};
  writer.set_metadata({{r.path, nm.dump()}});
  c.vecs.push_back(unit(r.vector));
  c.meta.push_back(nm);
  c.paths.push_back(r.path);
  gone.push_back(false);
  EXPECT_TRUE(reader.refresh());
  check("after changes");
}

TEST(Filters, MalformedFiltersNameTheColumn) {
  const Catalog c = make_catalog("flat", 30);
  Index idx = Index::open(c.dir, Index::Mode::ReadOnly);
  auto error_of = [&](const std::string& where) -> std::string {
    SearchOptions o;
    o.where = where;
    try {
      idx.search_vector(c.vecs[0], o);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << where;
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error_of("price <").find("column 8"), std::string::npos) << error_of("price <");
  EXPECT_NE(error_of("category = dress").find("column 12"), std::string::npos) << error_of("category = dress");
  EXPECT_NE(error_of("(price < 3").find("column 11"), std::string::npos);
  EXPECT_NE(error_of("price < 3 and").find("column 14"), std::string::npos);
  EXPECT_NE(error_of("category = \"x").find("unterminated"), std::string::npos);
  EXPECT_NE(error_of("price in []").find("empty"), std::string::npos);
  EXPECT_NE(error_of("price < true").find("type mismatch"), std::string::npos);
  // a literal of another type than every stored value of the field
  EXPECT_NE(error_of("price < \"cheap\"").find("type mismatch"), std::string::npos);
  EXPECT_NE(error_of("category = 3").find("type mismatch"), std::string::npos);
  EXPECT_EQ(error_of("unknown_field = 3"), "");
  EXPECT_THROW(where_from_json(R"({"field": "a", "op": "~", "value": 1})"), Error);
  EXPECT_THROW(where_from_json("[1]"), Error);
  EXPECT_EQ(where_from_json(R"({"not": {"exists": "a"}})"), "not (exists a)");
}

TEST(Metadata, SetMergeUnsetAndLimits) {
  const Catalog c = make_catalog("flat", 20);
  Index idx = Index::open(c.dir);
  const std::string p = c.paths[3];
  EXPECT_EQ(json::parse(idx.metadata(p)), c.meta[3]);
  const int64_t gen = idx.info().generation;
  idx.set_metadata({{p, R"({"price": null, "brand": "acme"})"}}, true);
  json want = c.meta[3];
  want.erase("price");
  want["brand"] = "acme";
  EXPECT_EQ(json::parse(idx.metadata(p)), want);
  EXPECT_EQ(idx.info().generation, gen + 1);
  idx.unset_metadata({p}, {"brand"});
  want.erase("brand");
  EXPECT_EQ(json::parse(idx.metadata(p)), want);
  idx.unset_metadata({p});
  EXPECT_EQ(idx.metadata(p), "{}");
  // bad input changes nothing
  const std::string before = idx.metadata(c.paths[4]);
  EXPECT_THROW(idx.set_metadata({{c.paths[4], R"({"a": 1})"}, {"/not/indexed.png", "{}"}}), Error);
  EXPECT_THROW(idx.set_metadata({{c.paths[4], "[1, 2]"}}), Error);
  EXPECT_THROW(idx.set_metadata({{c.paths[4], "{\"a\": "}}), Error);
  EXPECT_THROW(idx.set_metadata({{c.paths[4], R"({"path": "x"})"}}), Error);
  try {
    idx.set_metadata({{c.paths[4], json({{"blob", std::string(70000, 'x')}}).dump()}});
    ADD_FAILURE() << "a too large object was stored";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Limit);
  }
  EXPECT_EQ(idx.metadata(c.paths[4]), before);
  // the field summary
  const json f = json::parse(idx.fields_summary());
  std::map<std::string, json> by;
  for (const auto& x : f["fields"]) by[x["name"]] = x;
  EXPECT_EQ(by["price"]["type"], "number");
  EXPECT_EQ(by["category"]["type"], "string");
  EXPECT_EQ(by["colors"]["type"], "list of strings");
  EXPECT_EQ(by["in_stock"]["type"], "bool");
  double lo = 1e9, hi = -1e9;
  int dresses = 0;
  for (size_t i = 0; i < c.meta.size(); ++i) {
    if (i == 3 || !c.meta[i].contains("price")) continue;
    lo = std::min(lo, c.meta[i]["price"].get<double>());
    hi = std::max(hi, c.meta[i]["price"].get<double>());
    dresses += c.meta[i]["category"] == "dress";
  }
  EXPECT_EQ(by["price"]["min"].get<double>(), lo);
  EXPECT_EQ(by["price"]["max"].get<double>(), hi);
  for (const auto& v : by["category"]["values"]) {
    if (v["value"] == "dress") {
      EXPECT_EQ(v["count"], dresses);
    }
  }
  EXPECT_EQ(f["tags"], json::array());
  // tags: the most frequent first, each with the number of paths carrying it
  std::vector<Index::VectorRecord> tagged(3);
  for (int i = 0; i < 3; ++i) {
    tagged[i].path = "/shop/tagged" + std::to_string(i) + ".jpg";
    const int seed = 1000 + i;
    tagged[i].sha256 = content_sha256(&seed, sizeof seed);
    tagged[i].vector = c.vecs[i];
    tagged[i].tags = i == 0 ? std::vector<std::string>{"sale"} : std::vector<std::string>{"new", "sale"};
  }
  idx.add_vectors(tagged);
  const json t = json::parse(idx.fields_summary());
  EXPECT_EQ(t["tags"], json::parse(R"([{"tag": "sale", "count": 3}, {"tag": "new", "count": 2}])"));
  EXPECT_EQ(t["distinct_tags"], 2);
}

TEST(Metadata, OlderCatalogsOpenAndAreMigrated) {
  const Catalog c = make_catalog("flat", 10);
  {
    // a catalog from before metadata: no path_meta / removed_items tables
    search::Db db;
    db.open(c.dir + "/catalog.sqlite", false, false);
    db.exec("DROP TABLE path_meta; DROP TABLE removed_items;");
  }
  {
    Index ro = Index::open(c.dir, Index::Mode::ReadOnly);
    SearchOptions o;
    o.k = 3;
    o.where = "exists category";
    EXPECT_TRUE(ro.search_vector(c.vecs[0], o).empty());
    o.where.clear();
    const auto hits = ro.search_vector(c.vecs[0], o);
    ASSERT_EQ(hits.size(), 3u);
    EXPECT_EQ(hits[0].meta, "{}");
  }
  Index rw = Index::open(c.dir);
  rw.set_metadata({{c.paths[1], R"({"category": "dress"})"}});
  SearchOptions o;
  o.where = R"(category = "dress")";
  const auto hits = rw.search_vector(c.vecs[0], o);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].item.id, 2);
  EXPECT_TRUE(rw.verify().ok);
}
