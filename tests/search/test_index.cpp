// Index: ingest, dedup by content, change detection, queries checked against brute force,
// kinds, persistence and corruption handling. Uses a deterministic fake model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "clipkit/index.h"
#include "search/search_helpers.h"
#include "search/sqlite.h"
#include "search/vector_store.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using namespace clipkit;

namespace {

std::vector<float> fake_image_embedding(const Model& m, const std::string& path) {
  Image img = decode_image_file(path);
  std::vector<float> px = preprocess(img, m.preprocess_config());
  Embeddings e = m.encode_images(px.data(), 1, true);
  return std::vector<float>(e.row(0), e.row(0) + e.dim);
}

float dotv(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(s);
}

struct Folder {
  std::string dir;
  std::vector<std::string> files;  // distinct contents, in k order
};

// n synthetic images img_00.png.. plus (optionally) exact copies under copies/.
Folder make_folder(int n, bool with_copies = true) {
  Folder f;
  f.dir = test::temp_dir() + "/pics";
  fs::create_directories(f.dir + "/sub");
  for (int k = 0; k < n; ++k) {
    char name[64];
    std::snprintf(name, sizeof name, "/img_%02d.png", k);
    const std::string p = f.dir + name;
    test::write_synthetic_png(p, k, 20 + k, 16 + (k % 5));
    f.files.push_back(p);
  }
  if (with_copies) {
    test::copy_file_bytes(f.files[1], f.dir + "/sub/copy_of_01.png");
    test::copy_file_bytes(f.files[2], f.dir + "/sub/copy_of_02.png");
  }
  return f;
}

// Brute-force ranking of stored contents by cosine with q.
std::vector<std::string> brute_force(const Model& m, const std::vector<std::string>& files, const std::vector<float>& q,
                                     std::vector<float>* scores = nullptr) {
  std::vector<std::pair<float, std::string>> s;
  for (const auto& f : files) s.emplace_back(dotv(fake_image_embedding(m, f), q), f);
  std::stable_sort(s.begin(), s.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (const auto& [sc, f] : s) {
    out.push_back(f);
    if (scores) scores->push_back(sc);
  }
  return out;
}

// Puts an older vectors.faiss back as a crash before the cache write would have left it: the file
// and the catalog's record of it.
void restore_cache(const std::string& dir, const std::string& old_cache) {
  fs::copy_file(old_cache, dir + "/vectors.faiss", fs::copy_options::overwrite_existing);
  search::Db db;
  db.open(dir + "/catalog.sqlite", false, false);
  search::Stmt(db, "UPDATE meta SET value = ?1 WHERE key = 'cache_checksum'")
      .bind(1, std::to_string(search::read_cache_header(old_cache).checksum))
      .run();
}

}  // namespace

TEST(SearchSha, KnownVectors) {
  EXPECT_EQ(content_sha256("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(content_sha256("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(SearchIndex, CreateOpenInfo) {
  test::FakeModel m;
  const std::string dir = test::temp_dir() + "/idx";
  { Index::create(dir, m.info()); }
  Index idx = Index::open(dir);
  const IndexInfo i = idx.info();
  EXPECT_EQ(i.dim, 16);
  EXPECT_EQ(i.model_fingerprint, "fake-model-v1");
  EXPECT_EQ(i.model_path, m.info().path);
  EXPECT_EQ(i.kind, "flat");
  EXPECT_EQ(i.structure, "Flat");
  EXPECT_EQ(i.items, 0);
  EXPECT_TRUE(fs::exists(dir + "/catalog.sqlite"));
  EXPECT_TRUE(fs::exists(dir + "/vectors.faiss"));
  EXPECT_NO_THROW(idx.check_model(m));
}

TEST(SearchIndex, CreateRefusesEmptyKindsAndIdMaps) {
  test::FakeModel m;
  IndexCreateOptions o;
  for (const auto& [kind, says] : std::vector<std::pair<std::string, std::string>>{
           {" \t", "index kind is empty"}, {"IDMap,Flat", "leave out IDMap"}}) {
    o.kind = kind;
    try {
      Index::create(test::temp_dir() + "/k", m.info(), o);
      ADD_FAILURE() << "kind '" << kind << "' was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  }
  o.kind = " hnsw\n";  // surrounding blanks are not part of the kind
  EXPECT_EQ(Index::create(test::temp_dir() + "/trimmed", m.info(), o).info().kind, "hnsw");
}

TEST(SearchIndex, CreateRefusesExistingAndBadKind) {
  test::FakeModel m;
  const std::string dir = test::temp_dir() + "/idx";
  { Index::create(dir, m.info()); }
  EXPECT_THROW(Index::create(dir, m.info()), Error);
  IndexCreateOptions o;
  o.kind = "NoSuchKind42";
  try {
    Index::create(test::temp_dir() + "/x", m.info(), o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("NoSuchKind42"), std::string::npos);
  }
  try {
    Index::open(test::temp_dir());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
  }
}

TEST(SearchIndex, ModelMismatchRefused) {
  test::FakeModel m;
  test::FakeModel other(16, 8, "another-model", 9);
  const std::string dir = test::temp_dir() + "/idx";
  Folder f = make_folder(3, false);
  Index idx = Index::create(dir, m.info());
  try {
    idx.check_model(other);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Mismatch);
    EXPECT_NE(std::string(e.what()).find(m.info().path), std::string::npos) << e.what();
  }
  EXPECT_THROW(idx.add_files({f.dir}, other), Error);
  EXPECT_EQ(idx.info().items, 0);
  Query q = parse_query("text:a cat");
  EXPECT_THROW(idx.search(q, &other), Error);
  test::FakeModel wrong_dim(32, 8, "fake-model-v1");
  EXPECT_THROW(idx.check_model(wrong_dim), Error);
}

TEST(SearchIndex, IngestDedupChangeAndResume) {
  test::FakeModel m;
  Folder f = make_folder(10);
  {  // a broken "image" and a non-image file (ignored inside folders)
    std::ofstream(f.dir + "/broken.png") << "this is not a png";
    std::ofstream(f.dir + "/notes.txt") << "hello";
  }
  const std::string dir = test::temp_dir() + "/idx";
  Index idx = Index::create(dir, m.info());
  AddOptions o;
  o.recursive = true;
  o.batch = 4;
  o.tags = {"holiday"};
  int64_t batches = 0;
  o.on_batch = [&](const AddProgress& p) {
    ++batches;
    EXPECT_EQ(p.total, 13);
  };
  AddReport r = idx.add_files({f.dir}, m, o);
  EXPECT_EQ(r.candidates, 13);  // 10 + 2 copies + broken.png
  EXPECT_EQ(r.added, 10);
  EXPECT_EQ(r.duplicates, 2);
  EXPECT_EQ(r.failed, 1);
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_NE(r.failures[0].path.find("broken.png"), std::string::npos);
  EXPECT_FALSE(r.failures[0].reason.empty());
  EXPECT_EQ(batches, 4);
  IndexInfo info = idx.info();
  EXPECT_EQ(info.items, 10);
  EXPECT_EQ(info.files, 12);

  // Duplicates: one item listing both paths, hash and size of the file.
  CatalogItem it;
  ASSERT_TRUE(idx.find_path(f.files[1], &it));
  ASSERT_EQ(it.paths.size(), 2u);
  EXPECT_EQ(it.paths[0], f.files[1]);
  EXPECT_EQ(it.paths[1], f.dir + "/sub/copy_of_01.png");
  const std::string bytes = [&] {
    std::ifstream in(f.files[1], std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }();
  EXPECT_EQ(it.sha256, content_sha256(bytes.data(), bytes.size()));
  EXPECT_EQ(it.size, static_cast<int64_t>(bytes.size()));
  EXPECT_EQ(it.width, 21);
  EXPECT_EQ(it.height, 17);
  EXPECT_EQ(it.tags, std::vector<std::string>{"holiday"});
  // The stored vector is the model's embedding of the file.
  const std::vector<float> want = fake_image_embedding(m, f.files[1]);
  const std::vector<float> got = idx.vector(it.id);
  EXPECT_GT(dotv(want, got), 0.99999f);

  // Re-run: everything unchanged is skipped, nothing re-embedded.
  AddReport r2 = idx.add_files({f.dir}, m, o);
  EXPECT_EQ(r2.skipped, 12);
  EXPECT_EQ(r2.added, 0);
  EXPECT_EQ(r2.failed, 1);
  EXPECT_EQ(idx.info().items, 10);

  // Change one file: it is re-embedded, its old content (no other path) dropped.
  const int64_t old_id = [&] {
    CatalogItem c;
    EXPECT_TRUE(idx.find_path(f.files[5], &c));
    return c.id;
  }();
  test::write_synthetic_png(f.files[5], 40, 30, 30);
  AddReport r3 = idx.add_files({f.files[5]}, m);
  EXPECT_EQ(r3.updated, 1);
  CatalogItem c5;
  ASSERT_TRUE(idx.find_path(f.files[5], &c5));
  EXPECT_NE(c5.id, old_id);
  EXPECT_EQ(c5.width, 30);
  EXPECT_FALSE(idx.find_id(old_id, nullptr));
  EXPECT_EQ(idx.info().items, 10);
  VerifyReport v = idx.verify(true);
  EXPECT_TRUE(v.ok) << (v.problems.empty() ? "" : v.problems[0]);
  EXPECT_EQ(v.hashed, 12);
}

TEST(SearchIndex, QueriesMatchBruteForce) {
  test::FakeModel m;
  Folder f = make_folder(12);
  const std::string dir = test::temp_dir() + "/idx";
  Index idx = Index::create(dir, m.info());
  AddOptions o;
  o.recursive = true;
  idx.add_files({f.dir}, m, o);

  // By image file: the file itself first (score 1), then brute-force order.
  {
    const std::string probe = f.files[6];
    SearchOptions so;
    so.k = 5;
    auto hits = idx.search(parse_query("image:" + probe), &m, so);
    std::vector<float> scores;
    auto want = brute_force(m, f.files, fake_image_embedding(m, probe), &scores);
    ASSERT_EQ(hits.size(), 5u);
    for (size_t i = 0; i < hits.size(); ++i) {
      EXPECT_EQ(hits[i].rank, static_cast<int>(i + 1));
      EXPECT_EQ(hits[i].item.paths.front(), want[i]) << i;
      EXPECT_NEAR(hits[i].score, scores[i], 1e-5);
    }
    EXPECT_NEAR(hits[0].score, 1.0f, 1e-5);
  }
  // By text, with and without templates.
  for (const bool templ : {false, true}) {
    Query q = parse_query("text:a red sunset");
    if (templ) q.templates = {"a photo of {}.", "a drawing of {}.", "{}"};
    std::vector<float> qv;
    if (!templ) {
      Embeddings e = m.encode_texts({"a red sunset"}, true);
      qv.assign(e.row(0), e.row(0) + e.dim);
    } else {
      Embeddings e = m.encode_texts({"a photo of a red sunset.", "a drawing of a red sunset.", "a red sunset"}, true);
      qv.assign(16, 0.0f);
      for (int r = 0; r < 3; ++r)
        for (int j = 0; j < 16; ++j) qv[static_cast<size_t>(j)] += e.row(r)[j];
      double n = std::sqrt(dotv(qv, qv));
      for (auto& x : qv) x = static_cast<float>(x / n);
    }
    EXPECT_GT(dotv(idx.embed_query(q, &m), qv), 0.99999f);
    SearchOptions so;
    so.k = 12;
    auto hits = idx.search(q, &m, so);
    std::vector<float> scores;
    auto want = brute_force(m, f.files, qv, &scores);
    ASSERT_EQ(hits.size(), 12u);
    for (size_t i = 0; i < hits.size(); ++i) {
      EXPECT_EQ(hits[i].item.paths.front(), want[i]) << i;
      EXPECT_NEAR(hits[i].score, scores[i], 1e-5);
    }
  }
  // More like this: excludes the item itself and its duplicate path.
  {
    SearchOptions so;
    so.k = 3;
    auto hits = idx.search(parse_query("like:" + f.dir + "/sub/copy_of_02.png"), &m, so);
    std::vector<std::string> others;
    for (const auto& p : f.files)
      if (p != f.files[2]) others.push_back(p);
    auto want = brute_force(m, others, fake_image_embedding(m, f.files[2]));
    ASSERT_EQ(hits.size(), 3u);
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(hits[i].item.paths.front(), want[i]);
    for (const auto& h : hits)
      for (const auto& p : h.item.paths) EXPECT_EQ(p.find("02"), std::string::npos) << p;
    // by id, and without a model
    CatalogItem it;
    ASSERT_TRUE(idx.find_path(f.files[2], &it));
    auto by_id = idx.search(parse_query("like:" + std::to_string(it.id)), nullptr, so);
    ASSERT_EQ(by_id.size(), 3u);
    EXPECT_EQ(by_id[0].item.id, hits[0].item.id);
  }
  // Weighted combination == manual combination.
  {
    Query q = parse_query("image:" + f.files[3] + " + 0.5*text:in red - text:indoors");
    ASSERT_EQ(q.terms.size(), 3u);
    std::vector<float> a = fake_image_embedding(m, f.files[3]);
    Embeddings t = m.encode_texts({"in red", "indoors"}, true);
    std::vector<float> c(16);
    for (int j = 0; j < 16; ++j) c[static_cast<size_t>(j)] = a[static_cast<size_t>(j)] + 0.5f * t.row(0)[j] - t.row(1)[j];
    const double n = std::sqrt(dotv(c, c));
    for (auto& x : c) x = static_cast<float>(x / n);
    EXPECT_GT(dotv(idx.embed_query(q, &m), c), 0.99999f);
    SearchOptions so;
    so.k = 4;
    auto hits = idx.search(q, &m, so);
    auto want = brute_force(m, f.files, c);
    ASSERT_EQ(hits.size(), 4u);
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(hits[i].item.paths.front(), want[i]);
  }
  // Filters and thresholds.
  {
    SearchOptions so;
    so.k = 20;
    so.filter.path_prefix = f.dir + "/sub/";
    auto hits = idx.search(parse_query("image:" + f.files[9]), &m, so);
    ASSERT_EQ(hits.size(), 2u);
    for (const auto& h : hits) EXPECT_EQ(h.path.rfind(f.dir + "/sub/", 0), 0u) << h.path;
    so.filter = {};
    so.min_score = 0.5f;
    auto thr = idx.search(parse_query("image:" + f.files[9]), &m, so);
    std::vector<float> scores;
    brute_force(m, f.files, fake_image_embedding(m, f.files[9]), &scores);
    const auto expected = std::count_if(scores.begin(), scores.end(), [](float s) { return s >= 0.5f; });
    EXPECT_EQ(static_cast<long>(thr.size()), static_cast<long>(expected));
    for (const auto& h : thr) EXPECT_GE(h.score, 0.5f);
  }
  // Missing like target / unreadable image: clear errors.
  EXPECT_THROW(idx.search(parse_query("like:/nonexistent.png"), &m), Error);
  EXPECT_THROW(idx.search(parse_query("image:/nonexistent.png"), &m), Error);
  EXPECT_THROW(idx.search(parse_query("text:cat"), nullptr), Error);
}

TEST(SearchIndex, TagFilterRemoveReadd) {
  test::FakeModel m;
  Folder f = make_folder(6, false);
  const std::string dir = test::temp_dir() + "/idx";
  Index idx = Index::create(dir, m.info());
  AddOptions o;
  idx.add_files({f.files[0], f.files[1], f.files[2]}, m, o);
  o.tags = {"red"};
  idx.add_files({f.files[3], f.files[4], f.files[5]}, m, o);
  SearchOptions so;
  so.filter.tags = {"red"};
  auto hits = idx.search(parse_query("image:" + f.files[0]), &m, so);
  ASSERT_EQ(hits.size(), 3u);
  for (const auto& h : hits) EXPECT_EQ(h.item.tags, std::vector<std::string>{"red"});

  CatalogItem before;
  ASSERT_TRUE(idx.find_path(f.files[4], &before));
  EXPECT_EQ(idx.remove_paths({f.files[4]}), 1);
  EXPECT_FALSE(idx.find_path(f.files[4], nullptr));
  EXPECT_FALSE(idx.find_id(before.id, nullptr));
  EXPECT_EQ(idx.info().items, 5);
  EXPECT_EQ(idx.remove_paths({"/definitely/not/indexed.png"}), 0);
  auto after = idx.search(parse_query("image:" + f.files[4]), &m, so);
  ASSERT_EQ(after.size(), 2u);
  AddReport r = idx.add_files({f.files[4]}, m);
  EXPECT_EQ(r.added, 1);
  CatalogItem again;
  ASSERT_TRUE(idx.find_path(f.files[4], &again));
  EXPECT_NE(again.id, before.id);  // ids are never reused
  EXPECT_TRUE(again.tags.empty());
  // Removing a folder removes everything under it.
  EXPECT_EQ(idx.remove_paths({f.dir}), 6);
  EXPECT_EQ(idx.info().items, 0);
  EXPECT_TRUE(idx.verify().ok);
}

TEST(SearchIndex, DedupGroups) {
  test::FakeModel m;
  Folder f = make_folder(5);
  // a near duplicate of image 4: one pixel changed
  auto px = test::synthetic_rgb(4, 24, 20);
  px[0] ^= 0x10;
  const std::string near = f.dir + "/near_04.png";
  test::write_png(near, 24, 20, px);
  test::write_synthetic_png(f.files[4], 4, 24, 20);
  Index idx = Index::create(test::temp_dir() + "/idx", m.info());
  AddOptions o;
  o.recursive = true;
  idx.add_files({f.dir}, m, o);
  auto groups = idx.dedup(0.999f);
  // image 1 and 2 (exact copies: one item, two paths) and image 4 + near copy.
  ASSERT_EQ(groups.size(), 3u);
  int exact = 0, near_groups = 0;
  for (const auto& g : groups) {
    if (g.ids.size() == 1) {
      ++exact;
      EXPECT_EQ(g.paths[0].size(), 2u);
    } else {
      ++near_groups;
      ASSERT_EQ(g.ids.size(), 2u);
      EXPECT_GE(g.scores[1], 0.999f);
      const float direct = dotv(idx.vector(g.ids[0]), idx.vector(g.ids[1]));
      EXPECT_NEAR(g.scores[1], direct, 1e-6);
    }
  }
  EXPECT_EQ(exact, 2);
  EXPECT_EQ(near_groups, 1);
  EXPECT_THROW(idx.dedup(1.5f), Error);
}

TEST(SearchIndex, KindsTrainingAndRebuild) {
  test::FakeModel m;
  const std::string dir = test::temp_dir() + "/idx";
  IndexCreateOptions co;
  co.kind = "IVF16,Flat";
  co.train_min = 700;
  Index idx = Index::create(dir, m.info(), co);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<Index::VectorRecord> recs;
  for (int i = 0; i < 1000; ++i) {
    Index::VectorRecord r;
    r.path = "/data/v" + std::to_string(i) + ".png";
    r.sha256 = content_sha256(&i, sizeof i);
    r.vector.resize(16);
    for (auto& x : r.vector) x = nd(rng);
    recs.push_back(r);
  }
  idx.add_vectors(std::vector<Index::VectorRecord>(recs.begin(), recs.begin() + 500));
  EXPECT_FALSE(idx.info().trained);
  EXPECT_EQ(idx.info().structure, "Flat");
  idx.add_vectors(std::vector<Index::VectorRecord>(recs.begin() + 500, recs.end()));
  EXPECT_TRUE(idx.info().trained);
  EXPECT_EQ(idx.info().structure, "IVF16,Flat");
  EXPECT_TRUE(idx.verify().ok);

  auto self_hits = [&](int n) {
    int ok = 0;
    for (int i = 0; i < n; ++i) {
      SearchOptions so;
      so.k = 1;
      auto h = idx.search_vector(recs[static_cast<size_t>(i * 7)].vector, so);
      if (!h.empty() && h[0].path == recs[static_cast<size_t>(i * 7)].path) ++ok;
    }
    return ok;
  };
  EXPECT_GE(self_hits(100), 95);
  for (const char* kind : {"hnsw", "flat", "ivfpq"}) {
    idx.rebuild(kind, 0);
    EXPECT_EQ(idx.info().kind, kind);
    EXPECT_TRUE(idx.verify().ok) << kind;
    EXPECT_GE(self_hits(100), 95) << kind;  // ivfpq below its training size stays exact
  }
  EXPECT_FALSE(idx.info().trained);  // ivfpq waits for 10000 vectors
  // reopening keeps the kind and the staged structure, from the cache as written
  { Index closing = std::move(idx); }
  Index reopened = Index::open(dir);
  EXPECT_EQ(reopened.info().kind, "ivfpq");
  EXPECT_FALSE(reopened.info().trained);
  EXPECT_EQ(reopened.info().structure, "Flat");
  EXPECT_TRUE(reopened.open_notes().empty());
}

TEST(SearchIndex, IvfpqTrainsAtAutomaticSize) {
  test::FakeModel m;
  const std::string dir = test::temp_dir() + "/idx";
  IndexCreateOptions co;
  co.kind = "ivfpq";
  {
    Index idx = Index::create(dir, m.info(), co);
    std::mt19937 rng(5);
    std::normal_distribution<float> nd;
    std::vector<Index::VectorRecord> recs(10000);
    for (int i = 0; i < 10000; ++i) {
      recs[static_cast<size_t>(i)].path = "/d/" + std::to_string(i);
      recs[static_cast<size_t>(i)].sha256 = content_sha256(&i, sizeof i);
      recs[static_cast<size_t>(i)].vector.resize(16);
      for (auto& x : recs[static_cast<size_t>(i)].vector) x = nd(rng);
    }
    idx.add_vectors(recs);
    EXPECT_TRUE(idx.info().trained);
    EXPECT_EQ(idx.info().structure, "IVF256,PQ2");
  }
  Index idx = Index::open(dir);
  EXPECT_EQ(idx.info().structure, "IVF256,PQ2");
  EXPECT_TRUE(idx.open_notes().empty()) << idx.open_notes()[0];
  VerifyReport v = idx.verify();
  EXPECT_TRUE(v.ok) << (v.problems.empty() ? "" : v.problems[0]);
  // scores are exact cosines even though faiss holds PQ codes
  const std::vector<float> q = idx.vector(123);
  auto hits = idx.search_vector(q, SearchOptions{});
  ASSERT_FALSE(hits.empty());
  for (const auto& h : hits) EXPECT_NEAR(h.score, dotv(q, idx.vector(h.item.id)), 1e-5);
}

TEST(SearchIndex, StaleMissingAndCorruptCacheRecovered) {
  test::FakeModel m;
  Folder f = make_folder(8, false);
  const std::string dir = test::temp_dir() + "/idx";
  {
    Index idx = Index::create(dir, m.info());
    idx.add_files({f.files[0], f.files[1], f.files[2]}, m);
  }
  const std::string cache = dir + "/vectors.faiss";
  const std::string old_cache = test::temp_dir() + "/old.faiss";
  fs::copy_file(cache, old_cache);
  {
    Index idx = Index::open(dir);
    idx.add_files({f.files[3], f.files[4]}, m);
  }
  // Stale cache (as after a crash before the cache was written): caught up from the catalog.
  restore_cache(dir, old_cache);
  {
    Index idx = Index::open(dir);
    ASSERT_EQ(idx.open_notes().size(), 1u);
    EXPECT_NE(idx.open_notes()[0].find("added 2 vectors"), std::string::npos) << idx.open_notes()[0];
    EXPECT_TRUE(idx.verify().ok);
    EXPECT_EQ(idx.info().items, 5);
  }
  // After a removal the stale cache is patched too: the catalog lists the removed ids.
  {
    Index idx = Index::open(dir);
    EXPECT_TRUE(idx.open_notes().empty());
    idx.remove_paths({f.files[0]});
  }
  restore_cache(dir, old_cache);
  {
    Index idx = Index::open(dir, Index::Mode::ReadOnly);
    ASSERT_EQ(idx.open_notes().size(), 1u);
    EXPECT_NE(idx.open_notes()[0].find("added 2 vectors from the catalog and removed 1"), std::string::npos) << idx.open_notes()[0];
    EXPECT_TRUE(idx.verify().ok);
    EXPECT_EQ(idx.info().items, 4);
  }
  // Corrupt cache bytes: detected, rebuilt, nothing lost.
  {
    std::fstream io(cache, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(static_cast<std::streamoff>(fs::file_size(cache) - 10));
    io.write("XXXXXXXX", 8);
  }
  {
    Index idx = Index::open(dir);
    ASSERT_EQ(idx.open_notes().size(), 1u);
    EXPECT_NE(idx.open_notes()[0].find("corrupt"), std::string::npos) << idx.open_notes()[0];
    EXPECT_EQ(idx.info().items, 4);
    EXPECT_TRUE(idx.verify().ok);
  }
  // Missing cache.
  fs::remove(cache);
  {
    Index idx = Index::open(dir);
    ASSERT_EQ(idx.open_notes().size(), 1u);
    EXPECT_NE(idx.open_notes()[0].find("missing"), std::string::npos);
    EXPECT_EQ(idx.info().items, 4);
  }
  // Truncated cache.
  fs::resize_file(cache, 20);
  {
    Index idx = Index::open(dir);
    ASSERT_EQ(idx.open_notes().size(), 1u);
    EXPECT_EQ(idx.info().items, 4);
    EXPECT_TRUE(idx.verify().ok);
  }
}

TEST(SearchIndex, CorruptCatalogIsAClearError) {
  test::FakeModel m;
  Folder f = make_folder(3, false);
  const std::string dir = test::temp_dir() + "/idx";
  {
    Index idx = Index::create(dir, m.info());
    idx.add_files({f.dir}, m);
  }
  // closing the last connection checkpoints the WAL into the catalog file
  ASSERT_FALSE(fs::exists(dir + "/catalog.sqlite-wal"));
  const std::string cat = dir + "/catalog.sqlite";
  const std::string backup = test::temp_dir() + "/cat.bak";
  fs::copy_file(cat, backup);
  {  // garbage header
    std::fstream io(cat, std::ios::in | std::ios::out | std::ios::binary);
    io.write("garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage", 80);
  }
  try {
    Index::open(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format);
    EXPECT_NE(std::string(e.what()).find("catalog.sqlite"), std::string::npos) << e.what();
  }
  // truncated
  fs::copy_file(backup, cat, fs::copy_options::overwrite_existing);
  fs::resize_file(cat, 3000);
  try {
    Index idx = Index::open(dir);
    VerifyReport v = idx.verify();
    EXPECT_FALSE(v.ok);
  } catch (const Error& e) {
    EXPECT_TRUE(e.code() == ErrorCode::Format) << e.what();
    EXPECT_NE(std::string(e.what()).find("catalog.sqlite"), std::string::npos) << e.what();
  }
  // a SQLite file that is not an index
  fs::remove(cat);
  std::ofstream(cat) << "";
  try {
    Index::open(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format) << e.what();
  }
}

TEST(SearchIndex, SecondWriterIsRefused) {
  test::FakeModel m;
  const std::string dir = test::temp_dir() + "/idx";
  Index idx = Index::create(dir, m.info());
  try {
    Index other = Index::open(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
    EXPECT_NE(std::string(e.what()).find("another process"), std::string::npos);
  }
  EXPECT_NO_THROW(Index::open(dir, Index::Mode::ReadOnly));
}

TEST(SearchIndex, FoldersListsTheFoldersOfIndexedFiles) {
  test::FakeModel m;
  Folder f = make_folder(3);
  const std::string dir = test::temp_dir() + "/idx";
  Index idx = Index::create(dir, m.info());
  EXPECT_TRUE(idx.folders().empty());
  idx.add_files({f.files[0]}, m);
  EXPECT_EQ(idx.folders(), std::vector<std::string>{f.dir});
  AddOptions o;
  o.recursive = true;
  idx.add_files({f.dir}, m, o);
  EXPECT_EQ(idx.folders(), (std::vector<std::string>{f.dir, f.dir + "/sub"}));
  idx.remove_paths({f.dir + "/sub/copy_of_01.png", f.dir + "/sub/copy_of_02.png"});
  EXPECT_EQ(idx.folders(), std::vector<std::string>{f.dir});
}
