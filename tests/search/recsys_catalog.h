// The catalog the recommendation-service tests build (random vectors, metadata on most items)
// and the brute force they check the index against.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "clipkit/index.h"
#include "search/search_helpers.h"
#include "support/test_support.h"

namespace recsys_test {

using namespace clipkit;
using nlohmann::json;

inline constexpr int kDim = 16;
inline const char* kCategories[] = {"dress", "shoe", "bag", "hat"};
inline const char* kColors[] = {"red", "blue", "green", "black", "white"};

inline std::vector<float> unit(std::vector<float> v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  for (auto& x : v) x = static_cast<float>(x / std::sqrt(s));
  return v;
}

inline double dotv(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

struct Catalog {
  std::string dir;
  std::vector<std::vector<float>> vecs;  // unit, by item id - 1
  std::vector<json> meta;                // by item id - 1 ({} when none)
  std::vector<std::string> paths;
};

// n items with random vectors; item i (id i+1) has category, price and colors, except every 7th.
inline Catalog make_catalog(const std::string& kind, int n, int64_t train_min = 0) {
  Catalog c;
  c.dir = test::temp_dir() + "/idx";
  test::FakeModel m(kDim);
  IndexCreateOptions co;
  co.kind = kind;
  co.train_min = train_min;
  Index idx = Index::create(c.dir, m.info(), co);
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  std::vector<Index::VectorRecord> recs;
  std::vector<std::pair<std::string, std::string>> metas;
  for (int i = 0; i < n; ++i) {
    Index::VectorRecord r;
    r.path = "/shop/p" + std::to_string(i) + ".jpg";
    r.sha256 = content_sha256(&i, sizeof i);
    r.vector.resize(kDim);
    for (auto& x : r.vector) x = nd(rng);
    c.vecs.push_back(unit(r.vector));
    c.paths.push_back(r.path);
    json j = json::object();
    if (i % 7 != 0) {
      j["category"] = kCategories[i % 4];
      j["price"] = (i * 37) % 100 + 0.5;
      j["colors"] = json::array({kColors[i % 5], kColors[(i / 5) % 5]});
      j["in_stock"] = i % 3 == 0;
      metas.emplace_back(r.path, j.dump());
    }
    c.meta.push_back(j);
    recs.push_back(std::move(r));
  }
  const auto ids = idx.add_vectors(recs);
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], static_cast<int64_t>(i + 1));
  idx.set_metadata(metas);
  return c;
}

using Pred = std::function<bool(const json&)>;

inline bool has_color(const json& m, const std::string& c) {
  if (!m.contains("colors")) return false;
  for (const auto& x : m["colors"])
    if (x == c) return true;
  return false;
}

struct FilterCase {
  std::string where;
  Pred pred;
};

inline std::vector<FilterCase> filter_cases() {
  return {
      {R"(category = "dress")", [](const json& m) { return m.value("category", "") == "dress"; }},
      {R"(price < 50 and category != "shoe")",
       [](const json& m) { return m.contains("price") && m["price"].get<double>() < 50 && m["category"] != "shoe"; }},
      {R"(colors in ["red", "blue"])", [](const json& m) { return has_color(m, "red") || has_color(m, "blue"); }},
      {"not exists category", [](const json& m) { return !m.contains("category"); }},
      {R"((price >= 90 or colors = "green") and not category = "bag")",
       [](const json& m) {
         return (m.contains("price") && m["price"].get<double>() >= 90) || has_color(m, "green") ? m.value("category", "") != "bag" : false;
       }},
      {"in_stock = true and price <= 30.5", [](const json& m) { return m.value("in_stock", false) && m["price"].get<double>() <= 30.5; }},
      {"weight > 3", [](const json&) { return false; }},  // unknown field: no match
  };
}

// Exact top-k ids of q among the passing items (ties: lower id).
inline std::vector<std::pair<double, int64_t>> brute_top(const Catalog& c, const std::vector<float>& q, const Pred& pass, int k) {
  std::vector<std::pair<double, int64_t>> all;
  for (size_t i = 0; i < c.vecs.size(); ++i)
    if (pass(c.meta[i])) all.emplace_back(dotv(q, c.vecs[i]), static_cast<int64_t>(i + 1));
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  if (static_cast<int>(all.size()) > k) all.resize(static_cast<size_t>(k));
  return all;
}

inline void expect_same(const std::vector<SearchHit>& hits, const std::vector<std::pair<double, int64_t>>& want, const std::string& what) {
  ASSERT_EQ(hits.size(), want.size()) << what;
  for (size_t i = 0; i < hits.size(); ++i) {
    EXPECT_EQ(hits[i].item.id, want[i].second) << what << " rank " << i + 1;
    EXPECT_NEAR(hits[i].score, want[i].first, 2e-5) << what << " rank " << i + 1;
  }
}

}  // namespace recsys_test
