// The recommendation, metadata and write routes of the HTTP server, in-process on 127.0.0.1:
// answers equal Index::search / Index::recommend, filters and their errors, the field summary,
// token checks on writes (nothing changed without the right token), and changes becoming visible
// to the server's readers without a restart, including changes made through another Index.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "clipkit/error.h"
#include "clipkit/search_request.h"
#include "clipkit/server.h"
#include "server/server_fixture.h"

namespace fs = std::filesystem;
using namespace clipkit;
using nlohmann::json;

namespace {

const std::string kToken = "0123456789abcdef-test-token";

struct Shop {
  std::string root, images, index_dir, outside;
  std::vector<std::string> files;
};

// A fresh index of 8 generated pictures with metadata, and one picture outside the allowed root.
Shop make_shop(const Model& model) {
  Shop s;
  s.root = test::temp_dir();
  s.images = s.root + "/images";
  s.index_dir = s.root + "/idx";
  fs::create_directories(s.images);
  std::vector<std::pair<std::string, std::string>> metas;
  for (int k = 0; k < 8; ++k) {
    const std::string p = s.images + "/p" + std::to_string(k) + ".png";
    test::write_synthetic_png(p, 5 * k, 40 + 2 * k, 32);
    s.files.push_back(p);
  }
  s.outside = s.root + "/outside.png";
  test::write_synthetic_png(s.outside, 99, 30, 30);
  Index idx = Index::create(s.index_dir, model.info());
  AddOptions o;
  for (int k = 0; k < 8; ++k)
    o.meta[s.files[static_cast<size_t>(k)]] =
        json({{"category", k % 2 ? "dress" : "shoe"}, {"price", 10 * k + 5}, {"colors", {k % 3 ? "red" : "blue"}}}).dump();
  const auto r = idx.add_files({s.images}, model, o);
  if (r.added != 8) throw std::runtime_error("fixture: indexing failed");
  return s;
}

struct Running {
  std::unique_ptr<SearchServer> server;
  std::thread thread;
  int port = 0;
  Running(Index idx, std::shared_ptr<const Model> model, ServerOptions o) {
    o.port = 0;
    server = std::make_unique<SearchServer>(std::move(idx), std::move(model), o);
    port = server->bind();
    thread = std::thread([this] { server->run(); });
    server->wait_until_running();
  }
  ~Running() {
    server->stop();
    thread.join();
  }
};

test::HttpResult request(int port, const std::string& method, const std::string& target, const std::string& body = "",
                         const std::string& token = "") {
  auto c = test::make_client(port);
  httplib::Headers h;
  if (!token.empty()) h.emplace("Authorization", "Bearer " + token);
  if (method == "GET") return test::to_result(c->Get(target.c_str(), h));
  if (method == "POST") return test::to_result(c->Post(target.c_str(), h, body, "application/json"));
  if (method == "PATCH") return test::to_result(c->Patch(target.c_str(), h, body, "application/json"));
  return test::to_result(c->Delete(target.c_str(), h));
}

std::vector<int64_t> ids_of(const json& answer) {
  std::vector<int64_t> out;
  for (const auto& r : answer["results"]) out.push_back(r["id"].get<int64_t>());
  return out;
}

std::string base64(const std::string& bytes) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) | static_cast<uint8_t>(bytes[i + 2]);
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], t[v & 63]};
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    out += {t[v >> 18], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8);
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return out;
}

}  // namespace

TEST(ServerRecsys, FiltersRecommendationsAndFields) {
  std::shared_ptr<Model> model = Model::load(test::data_path("models/tiny-vit.safetensors"));
  const Shop s = make_shop(*model);
  Index ref = Index::open(s.index_dir, Index::Mode::ReadOnly);
  Running srv(Index::open(s.index_dir, Index::Mode::ReadOnly), model, {});

  // where + meta on hits, equal to Index::search
  auto r = request(srv.port, "GET", "/api/search?text=stripes&where=" + httplib::detail::encode_query_param("category = \"dress\" and price < 60"));
  ASSERT_EQ(r.status, 200) << r.body;
  SearchRequest sr;
  sr.texts = {"stripes"};
  sr.options.where = "category = \"dress\" and price < 60";
  const auto want = ref.search(build_query(sr), model.get(), sr.options);
  ASSERT_EQ(r.json["results"].size(), want.size());
  ASSERT_FALSE(want.empty());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(r.json["results"][i]["id"], want[i].item.id);
    EXPECT_EQ(r.json["results"][i]["meta"], json::parse(want[i].meta));
    EXPECT_EQ(r.json["results"][i]["meta"]["category"], "dress");
  }
  r = request(srv.port, "POST", "/api/search", R"({"text": "stripes", "where": {"field": "price", "op": ">=", "value": 50}})");
  ASSERT_EQ(r.status, 200) << r.body;
  for (const auto& h : r.json["results"]) EXPECT_GE(h["meta"]["price"].get<double>(), 50);
  r = request(srv.port, "GET", "/api/search?text=a&where=" + httplib::detail::encode_query_param("price <"));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.json["error"].get<std::string>().find("column 8"), std::string::npos) << r.body;
  r = request(srv.port, "GET", "/api/search?text=a&where=" + httplib::detail::encode_query_param("price = \"x\""));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.json["error"].get<std::string>().find("type mismatch"), std::string::npos) << r.body;

  // recommend: ids, paths, text, vector; equal to Index::recommend; examples never returned
  CatalogItem a, b;
  ASSERT_TRUE(ref.find_path(s.files[1], &a));
  ASSERT_TRUE(ref.find_path(s.files[4], &b));
  const std::vector<float> v = ref.vector(a.id);
  json body = {{"positive", {a.id, s.files[3], json({{"vector", v}})}}, {"negative", {"#" + std::to_string(b.id)}},
               {"strategy", "best-score"}, {"k", 4}, {"where", "price < 70"}};
  r = request(srv.port, "POST", "/api/recommend", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  RecommendOptions o;
  o.strategy = RecommendOptions::Strategy::BestScore;
  o.positive = {{QueryTerm::Kind::Item, std::to_string(a.id), 1, {}}, {QueryTerm::Kind::Item, s.files[3], 1, {}},
                {QueryTerm::Kind::Vector, "v", 1, v}};
  o.negative = {{QueryTerm::Kind::Item, "#" + std::to_string(b.id), 1, {}}};
  o.search.k = 4;
  o.search.where = "price < 70";
  const auto rec = ref.recommend(o, nullptr);
  ASSERT_EQ(ids_of(r.json).size(), rec.size());
  for (size_t i = 0; i < rec.size(); ++i) {
    EXPECT_EQ(r.json["results"][i]["id"], rec[i].item.id);
    EXPECT_NEAR(r.json["results"][i]["score"].get<double>(), rec[i].score, 1e-5);
    EXPECT_TRUE(r.json["results"][i].contains("meta"));
    EXPECT_NE(rec[i].item.id, a.id);
    EXPECT_NE(rec[i].item.id, b.id);
  }
  // offset pages through the same ranking
  body["offset"] = 2;
  body["k"] = 2;
  r = request(srv.port, "POST", "/api/recommend", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.json["results"].size(), 2u);
  EXPECT_EQ(r.json["results"][0]["id"], rec[2].item.id);
  EXPECT_EQ(r.json["results"][0]["rank"], 3);
  // text and uploaded image examples are accepted
  r = request(srv.port, "POST", "/api/recommend",
              json({{"positive", {"text:a red dress", json({{"image", base64(test::read_bytes(s.outside))}})}}}).dump());
  EXPECT_EQ(r.status, 200) << r.body;
  // bad input
  for (const char* bad : {R"({})", R"({"positive": [{"vector": [1, 2]}]})", R"({"positive": [1], "strategy": "median"})",
                          R"({"positive": [1], "diversity": 2})", R"({"positive": [{"image": "***"}]})", R"({"positive": [1], "colour": 1})"}) {
    r = request(srv.port, "POST", "/api/recommend", bad);
    EXPECT_EQ(r.status, 400) << bad << " " << r.body;
    EXPECT_TRUE(r.json.contains("error")) << bad;
  }
  EXPECT_EQ(request(srv.port, "POST", "/api/recommend", R"({"positive": [123456]})").status, 404);

  // fields
  r = request(srv.port, "GET", "/api/fields");
  ASSERT_EQ(r.status, 200) << r.body;
  std::map<std::string, json> by;
  for (const auto& f : r.json["fields"]) by[f["name"]] = f;
  EXPECT_EQ(by["price"]["type"], "number");
  EXPECT_EQ(by["price"]["min"], 5);
  EXPECT_EQ(by["price"]["max"], 75);
  EXPECT_EQ(by["category"]["type"], "string");
  EXPECT_EQ(by["colors"]["type"], "list of strings");
  EXPECT_EQ(by["category"]["values"].size(), 2u);

  // a read-only server refuses changes
  EXPECT_EQ(request(srv.port, "DELETE", "/api/items/" + std::to_string(a.id)).status, 403);
}

TEST(ServerRecsys, WritesNeedTheTokenAndAreSeenAtOnce) {
  std::shared_ptr<Model> model = Model::load(test::data_path("models/tiny-vit.safetensors"));
  const Shop s = make_shop(*model);
  ServerOptions so;
  so.writable = true;
  EXPECT_THROW(SearchServer(Index::open(s.index_dir, Index::Mode::Shared), model, so), Error);  // no token
  so.token = kToken;
  so.allowed_roots = {s.images};
  so.upload_dir = s.root + "/uploads";
  fs::create_directories(so.upload_dir);
  Running srv(Index::open(s.index_dir, Index::Mode::Shared), model, so);
  auto generation = [&] {
    Index i = Index::open(s.index_dir, Index::Mode::ReadOnly);
    return i.info().generation;
  };
  const int64_t g0 = generation();
  CatalogItem first;
  {
    Index i = Index::open(s.index_dir, Index::Mode::ReadOnly);
    ASSERT_TRUE(i.find_path(s.files[0], &first));
  }
  const std::string newfile = s.images + "/new.png";
  test::write_synthetic_png(newfile, 77, 36, 36);
  const std::string add = json({{"path", newfile}, {"meta", {{"category", "hat"}}}, {"tags", {"fresh"}}}).dump();
  // token checks: nothing changes
  auto r = request(srv.port, "POST", "/api/items", add);
  EXPECT_EQ(r.status, 401) << r.body;
  r = request(srv.port, "POST", "/api/items", add, "wrong-token-0123456789");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(request(srv.port, "DELETE", "/api/items/" + std::to_string(first.id), "", "nope-nope-nope-nope").status, 403);
  EXPECT_EQ(request(srv.port, "PATCH", "/api/items/" + std::to_string(first.id) + "/meta", R"({"price": 1})").status, 401);
  EXPECT_EQ(generation(), g0);
  // a path outside the allowed roots, bad metadata: 4xx, nothing changes
  EXPECT_EQ(request(srv.port, "POST", "/api/items", json({{"path", s.outside}}).dump(), kToken).status, 403);
  EXPECT_EQ(request(srv.port, "POST", "/api/items", json({{"path", newfile}, {"meta", {1, 2}}}).dump(), kToken).status, 400);
  EXPECT_EQ(request(srv.port, "POST", "/api/items", json({{"path", newfile}, {"meta", {{"x", std::string(70000, 'a')}}}}).dump(), kToken).status,
            413);
  EXPECT_EQ(request(srv.port, "PATCH", "/api/items/" + std::to_string(first.id) + "/meta", "[1]", kToken).status, 400);
  EXPECT_EQ(generation(), g0);

  // add by path: searchable at once, with its metadata and tag
  r = request(srv.port, "POST", "/api/items", add, kToken);
  ASSERT_EQ(r.status, 201) << r.body;
  const int64_t id = r.json["id"];
  r = request(srv.port, "GET", "/api/search?text=x&where=" + httplib::detail::encode_query_param("category = \"hat\"") + "&tag=fresh", "", kToken);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ids_of(r.json), std::vector<int64_t>{id});
  EXPECT_EQ(request(srv.port, "GET", "/api/items/" + std::to_string(id) + "/image", "", kToken).status, 200);
  // upload
  r = request(srv.port, "POST", "/api/items", json({{"image", base64(test::read_bytes(s.outside))}, {"meta", {{"category", "upload"}}}}).dump(),
              kToken);
  ASSERT_EQ(r.status, 201) << r.body;
  const int64_t up = r.json["id"];
  EXPECT_EQ(r.json["path"].get<std::string>().rfind(fs::canonical(so.upload_dir).string() + "/", 0), 0u) << r.body;
  // patch metadata
  r = request(srv.port, "PATCH", "/api/items/" + std::to_string(up) + "/meta", R"({"price": 12, "category": null})", kToken);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["meta"], json({{"price", 12}}));
  r = request(srv.port, "GET", "/api/search?text=x&where=" + httplib::detail::encode_query_param("price = 12"), "", kToken);
  EXPECT_EQ(ids_of(r.json), std::vector<int64_t>{up});
  // delete
  r = request(srv.port, "DELETE", "/api/items/" + std::to_string(id), "", kToken);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(request(srv.port, "GET", "/api/items/" + std::to_string(id), "", kToken).status, 404);
  r = request(srv.port, "GET", "/api/search?text=x&k=100", "", kToken);
  for (auto got : ids_of(r.json)) EXPECT_NE(got, id);
  EXPECT_EQ(request(srv.port, "DELETE", "/api/items/" + std::to_string(id), "", kToken).status, 404);

  // a change made by another writer (as a separate `clipkit index add` would) is seen by the server
  int64_t other = 0;
  {
    Index w = Index::open(s.index_dir, Index::Mode::Shared);
    const std::string f = s.images + "/other.png";
    test::write_synthetic_png(f, 123, 34, 34);
    AddOptions ao;
    ao.meta[f] = R"({"category": "other"})";
    w.add_files({f}, *model, ao);
    CatalogItem it;
    ASSERT_TRUE(w.find_path(f, &it));
    other = it.id;
  }
  r = request(srv.port, "GET", "/api/search?text=x&where=" + httplib::detail::encode_query_param("category = \"other\""), "", kToken);
  EXPECT_EQ(ids_of(r.json), std::vector<int64_t>{other});
  EXPECT_EQ(request(srv.port, "GET", "/api/items/" + std::to_string(other) + "/image", "", kToken).status, 200);
  Index check = Index::open(s.index_dir, Index::Mode::ReadOnly);
  EXPECT_TRUE(check.verify().ok);
}

// Answers kept in the server's cache are those a server without a cache gives, and none outlives
// a committed change: a metadata patch and a deletion through the server, an addition by another
// writer. Each target is asked twice per state (the second answer comes from the cache).
TEST(ServerRecsys, CachedAnswersFollowEveryCommit) {
  std::shared_ptr<Model> model = Model::load(test::data_path("models/tiny-vit.safetensors"));
  const Shop s = make_shop(*model);
  ServerOptions so;
  so.writable = true;
  so.token = kToken;
  so.allowed_roots = {s.images};
  Running cached(Index::open(s.index_dir, Index::Mode::Shared), model, so);
  so.cache_bytes = 0;
  Running plain(Index::open(s.index_dir, Index::Mode::Shared), model, so);
  std::vector<CatalogItem> items(2);
  {
    Index i = Index::open(s.index_dir, Index::Mode::ReadOnly);
    ASSERT_TRUE(i.find_path(s.files[1], &items[0]));
    ASSERT_TRUE(i.find_path(s.files[2], &items[1]));
  }
  const std::string search = "/api/search?text=x&k=100";
  const std::string priced = "/api/search?text=x&where=" + httplib::detail::encode_query_param("price = 12");
  const std::string similar = "/api/similar/" + std::to_string(items[0].id) + "?k=100";
  const std::string record = "/api/items/" + std::to_string(items[1].id);
  // The answer of `target` (without took_ms), the same twice from the cached server and from the plain one.
  auto answer = [&](const std::string& target) {
    json got[3];
    int status[3];
    for (int n = 0; n < 3; ++n) {
      const auto r = request(n < 2 ? cached.port : plain.port, "GET", target, "", kToken);
      status[n] = r.status;
      got[n] = r.json;
      if (got[n].is_object()) got[n].erase("took_ms");
    }
    EXPECT_EQ(status[0], status[1]) << target;
    EXPECT_EQ(status[0], status[2]) << target;
    EXPECT_EQ(got[0], got[1]) << target;
    EXPECT_EQ(got[0], got[2]) << target;
    return status[0] == 200 ? got[0] : json(status[0]);
  };
  const json search0 = answer(search), similar0 = answer(similar), record0 = answer(record);
  EXPECT_EQ(ids_of(search0).size(), 8u);
  EXPECT_EQ(ids_of(similar0).size(), 7u);
  EXPECT_EQ(ids_of(answer(priced)), std::vector<int64_t>{});

  // a metadata patch through the server
  auto r = request(cached.port, "PATCH", "/api/items/" + std::to_string(items[1].id) + "/meta", R"({"price": 12})", kToken);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(answer(record)["meta"]["price"], 12);
  EXPECT_NE(answer(record), record0);
  EXPECT_EQ(ids_of(answer(priced)), std::vector<int64_t>{items[1].id});
  EXPECT_EQ(answer(search)["results"][0]["id"], search0["results"][0]["id"]);

  // an addition by another writer
  int64_t other = 0;
  {
    Index w = Index::open(s.index_dir, Index::Mode::Shared);
    const std::string f = s.images + "/other.png";
    test::write_synthetic_png(f, 123, 34, 34);
    AddOptions ao;
    ao.meta[f] = R"({"price": 12})";
    w.add_files({f}, *model, ao);
    CatalogItem it;
    ASSERT_TRUE(w.find_path(f, &it));
    other = it.id;
  }
  std::vector<int64_t> want = {items[1].id, other};
  std::vector<int64_t> got = ids_of(answer(priced));
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, want);
  EXPECT_EQ(ids_of(answer(search)).size(), 9u);
  EXPECT_EQ(ids_of(answer(similar)).size(), 8u);

  // a deletion through the server
  r = request(cached.port, "DELETE", "/api/items/" + std::to_string(items[0].id), "", kToken);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(answer(similar), json(404));
  got = ids_of(answer(search));
  EXPECT_EQ(got.size(), 8u);
  EXPECT_EQ(std::count(got.begin(), got.end(), items[0].id), 0);
}

// Thumbnails leave the cache with their content: DELETE /api/items/{id} deletes the item's,
// remove_stale_thumbnails (and so `clipkit index remove` and `index add`) every one whose content
// the catalog no longer holds; other thumbnails and names the cache never writes stay.
TEST(ServerRecsys, ThumbnailsLeaveWithTheirContent) {
  std::shared_ptr<Model> model = Model::load(test::data_path("models/tiny-vit.safetensors"));
  const Shop s = make_shop(*model);
  const std::string thumbs = s.index_dir + "/thumbs/";
  std::vector<CatalogItem> items(8);
  {
    Index i = Index::open(s.index_dir, Index::Mode::ReadOnly);
    for (size_t k = 0; k < items.size(); ++k) ASSERT_TRUE(i.find_path(s.files[k], &items[k]));
    CatalogItem by_hash;
    ASSERT_TRUE(i.find_sha256(items[2].sha256, &by_hash));
    EXPECT_EQ(by_hash.id, items[2].id);
    EXPECT_FALSE(i.find_sha256(std::string(64, '0'), nullptr));
  }
  auto thumb_of = [&](const CatalogItem& it) { return thumbs + it.sha256 + "-256.webp"; };
  ServerOptions so;
  so.writable = true;
  so.token = kToken;
  {
    Running srv(Index::open(s.index_dir, Index::Mode::Shared), model, so);
    for (size_t k : {0, 1, 2, 3})
      ASSERT_EQ(request(srv.port, "GET", "/api/items/" + std::to_string(items[k].id) + "/thumb", "", kToken).status, 200);
    for (size_t k : {0, 1, 2, 3}) ASSERT_TRUE(fs::exists(thumb_of(items[k]))) << k;
    ASSERT_EQ(request(srv.port, "DELETE", "/api/items/" + std::to_string(items[0].id), "", kToken).status, 200);
    EXPECT_FALSE(fs::exists(thumb_of(items[0])));
    EXPECT_TRUE(fs::exists(thumb_of(items[1])));
  }

  // Files the cache may hold besides thumbnails of indexed contents.
  const std::string unknown = thumbs + std::string(64, 'e') + "-256.webp";  // a content that is not indexed
  const std::string old_tmp = thumbs + ".tmp-1-0-" + items[1].sha256 + "-256.webp";
  const std::string new_tmp = thumbs + ".tmp-2-0-" + items[1].sha256 + "-256.webp";
  const std::string other = thumbs + "notes.txt";
  for (const auto& f : {unknown, old_tmp, new_tmp, other}) std::ofstream(f) << "x";
  fs::last_write_time(old_tmp, fs::file_time_type::clock::now() - std::chrono::hours(2));
  {
    Index w = Index::open(s.index_dir, Index::Mode::Shared);
    ASSERT_EQ(w.remove_paths({s.files[1]}), 1);
    EXPECT_EQ(remove_stale_thumbnails(w), 3);  // items[1]'s thumbnail, the unknown content, the old temporary file
    EXPECT_EQ(remove_stale_thumbnails(w), 0);
  }
  EXPECT_FALSE(fs::exists(thumb_of(items[1])));
  EXPECT_FALSE(fs::exists(unknown));
  EXPECT_FALSE(fs::exists(old_tmp));
  EXPECT_TRUE(fs::exists(new_tmp));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_TRUE(fs::exists(thumb_of(items[2])));

  // The CLI: `index remove` of a file, and `index add` of a file whose bytes changed.
  auto r = test::run_cli({"index", "remove", s.index_dir, s.files[2]});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(thumb_of(items[2])));
  EXPECT_TRUE(fs::exists(thumb_of(items[3])));
  test::write_synthetic_png(s.files[3], 201, 38, 30);
  r = test::run_cli({"index", "add", s.index_dir, s.files[3]});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("updated 1"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(thumb_of(items[3])));
  Index check = Index::open(s.index_dir, Index::Mode::ReadOnly);
  EXPECT_TRUE(check.verify().ok);
}
