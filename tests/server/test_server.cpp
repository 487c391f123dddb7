// The HTTP server in-process on 127.0.0.1 (a free port): answers equal Index::search, errors are
// JSON with the right status, the server survives bad requests, answers concurrently, and never
// writes to the index.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "clipkit/error.h"
#include "clipkit/search_request.h"
#include "clipkit/server.h"
#include "clipkit/zeroshot.h"
#include "server/lru_cache.h"
#include "server/server_fixture.h"

namespace fs = std::filesystem;
using namespace clipkit;
using nlohmann::json;

namespace {

constexpr size_t kUploadLimit = 256 * 1024;

std::mutex g_log_mu;
std::vector<std::string> g_log;

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto& d = test::server_data();
    ServerOptions o;
    o.port = 0;
    o.max_upload_bytes = kUploadLimit;
    o.log = [](const std::string& line) {
      std::lock_guard<std::mutex> lock(g_log_mu);
      g_log.push_back(line);
    };
    server_ = new SearchServer(Index::open(d.index_dir, Index::Mode::ReadOnly), d.model, o);
    port_ = server_->bind();
    thread_ = new std::thread([] { server_->run(); });
    ASSERT_TRUE(server_->wait_until_running());
    ref_ = new Index(Index::open(d.index_dir, Index::Mode::ReadOnly));
  }
  static void TearDownTestSuite() {
    server_->stop();
    thread_->join();
    delete thread_;
    delete server_;
    delete ref_;
  }

  // What Index::search returns for the query, as the JSON objects of the API.
  static json expected(const Query& q, const SearchOptions& o) {
    json a = json::array();
    for (const auto& h : ref_->search(q, test::server_data().model.get(), o)) a.push_back(search_hit_json(h));
    return a;
  }
  static Query text_query(const std::string& t) { return Query{{{QueryTerm::Kind::Text, t, 1.0f, {}}}, {}, true}; }
  static SearchOptions k_of(int k) {
    SearchOptions o;
    o.k = k;
    return o;
  }
  static int64_t id_of(const std::string& path) {
    CatalogItem it;
    EXPECT_TRUE(ref_->find_path(path, &it)) << path;
    return it.id;
  }

  static SearchServer* server_;
  static std::thread* thread_;
  static Index* ref_;
  static int port_;
};

SearchServer* ServerTest::server_ = nullptr;
std::thread* ServerTest::thread_ = nullptr;
Index* ServerTest::ref_ = nullptr;
int ServerTest::port_ = 0;

std::string url_encode(const std::string& s) { return httplib::detail::encode_query_param(s); }

void expect_error(const test::HttpResult& r, int status, const std::string& what) {
  EXPECT_EQ(r.status, status) << what << ": " << r.body;
  EXPECT_EQ(r.content_type.rfind("application/json", 0), 0u) << what << ": " << r.content_type;
  ASSERT_TRUE(r.json.is_object()) << what << ": " << r.body;
  ASSERT_TRUE(r.json.contains("error")) << what;
  EXPECT_FALSE(r.json["error"].get<std::string>().empty()) << what;
}

}  // namespace

TEST_F(ServerTest, InfoDescribesIndexModelAndLimits) {
  const auto r = test::http_get(port_, "/api/info");
  ASSERT_EQ(r.status, 200) << r.body;
  const IndexInfo i = ref_->info();
  EXPECT_EQ(r.json["index"]["items"], i.items);
  EXPECT_EQ(r.json["index"]["files"], i.files);
  EXPECT_EQ(r.json["index"]["dim"], i.dim);
  EXPECT_EQ(r.json["index"]["kind"], "flat");
  EXPECT_EQ(r.json["model"]["fingerprint"], test::server_data().model->info().fingerprint);
  EXPECT_EQ(r.json["limits"]["max_k"], 1000);
  EXPECT_EQ(r.json["limits"]["max_upload_bytes"], kUploadLimit);
  const auto t = r.json["templates"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(t.begin(), t.end(), "photo"), t.end());
}

TEST_F(ServerTest, TextSearchEqualsIndexSearch) {
  for (const std::string text : {"a striped pattern", "red and green waves", "a photo of a dog"}) {
    for (int k : {1, 4, 20}) {
      const auto r = test::http_get(port_, "/api/search?text=" + url_encode(text) + "&k=" + std::to_string(k));
      ASSERT_EQ(r.status, 200) << r.body;
      const json want = expected(text_query(text), k_of(k));
      EXPECT_EQ(r.json["results"], want) << text << " k=" << k;
      EXPECT_EQ(r.json["results"].size(), std::min<size_t>(k, 11));  // 11 contents are indexed
      EXPECT_EQ(r.json["k"], k);
    }
  }
  // Templates: the mean of the filled templates, as Index::search computes it.
  Query q = text_query("zigzag");
  q.templates = resolve_templates("photo");
  const auto r = test::http_get(port_, "/api/search?text=zigzag&templates=photo&k=6");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["results"], expected(q, k_of(6)));
  EXPECT_NE(r.json["results"], expected(text_query("zigzag"), k_of(6)));  // the templates mattered
}

TEST_F(ServerTest, FiltersEqualIndexSearch) {
  const auto& d = test::server_data();
  SearchOptions o = k_of(10);
  o.filter.tags = {"special"};
  auto r = test::http_get(port_, "/api/search?text=waves&k=10&tag=special");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["results"], expected(text_query("waves"), o));
  EXPECT_EQ(r.json["results"].size(), 3u);
  for (const auto& h : r.json["results"]) EXPECT_NE(h["path"].get<std::string>().find("/special/"), std::string::npos);

  o = k_of(10);
  o.filter.path_prefix = d.images + "/copies/";
  r = test::http_get(port_, "/api/search?text=waves&k=10&path_prefix=" + url_encode(o.filter.path_prefix));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["results"], expected(text_query("waves"), o));
  ASSERT_EQ(r.json["results"].size(), 1u);
  EXPECT_EQ(r.json["results"][0]["path"], d.duplicate);  // the path that passed the filter

  // min_score between the 3rd and the 4th score keeps exactly 3.
  const json all = expected(text_query("waves"), k_of(10));
  const float cut = (all[2]["score"].get<float>() + all[3]["score"].get<float>()) / 2;
  o = k_of(10);
  o.min_score = cut;
  char cut_text[64];
  std::snprintf(cut_text, sizeof cut_text, "%.9g", static_cast<double>(cut));
  r = test::http_get(port_, std::string("/api/search?text=waves&k=10&min_score=") + cut_text);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["results"], expected(text_query("waves"), o));
  EXPECT_EQ(r.json["results"].size(), 3u);
}

TEST_F(ServerTest, OffsetPagesAreSlicesOfTheWholeRanking) {
  // The whole ranking (11 contents), then pages of 4 from every offset: each page is exactly the
  // slice of the whole ranking, ranks included, and consecutive pages put it back together.
  const json all = expected(text_query("a striped pattern"), k_of(1000));
  ASSERT_EQ(all.size(), 11u);
  json joined = json::array();
  for (int offset : {0, 1, 4, 8, 10, 11, 12, 1000}) {
    const auto r = test::http_get(port_, "/api/search?text=" + url_encode("a striped pattern") + "&k=4&offset=" + std::to_string(offset));
    ASSERT_EQ(r.status, 200) << r.body;
    json want = json::array();
    for (int i = offset; i < offset + 4 && i < 11; ++i) want.push_back(all[i]);
    EXPECT_EQ(r.json["results"], want) << "offset " << offset;
    if (!r.json["results"].empty()) {
      EXPECT_EQ(r.json["results"][0]["rank"], offset + 1);
    }
    EXPECT_EQ(r.json["k"], 4);
    if (offset % 4 == 0 && offset < 11) joined.insert(joined.end(), r.json["results"].begin(), r.json["results"].end());
  }
  EXPECT_EQ(joined, all);

  // POST /api/search with a filter: the slice of the filtered ranking.
  SearchOptions o = k_of(1000);
  o.filter.tags = {"special"};
  const json special = expected(text_query("waves"), o);
  ASSERT_EQ(special.size(), 3u);
  auto r = test::http_post(port_, "/api/search", R"({"text": "waves", "tags": ["special"], "k": 1, "offset": 1})", "application/json");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["results"], json::array({special[1]}));

  // An uploaded image and "more like this" page the same way.
  Query q;
  q.terms = {{QueryTerm::Kind::Image, test::server_data().upload, 1.0f, {}}};
  const json by_image = expected(q, k_of(1000));
  r = test::http_post(port_, "/api/search/image?k=3&offset=5", test::read_bytes(test::server_data().upload), "image/png");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["results"], json(std::vector<json>(by_image.begin() + 5, by_image.begin() + 8)));
  const int64_t id0 = id_of(test::server_data().files[0]);
  q.terms = {{QueryTerm::Kind::Item, "#" + std::to_string(id0), 1.0f, {}}};
  const json similar = expected(q, k_of(1000));
  r = test::http_get(port_, "/api/similar/" + std::to_string(id0) + "?k=2&offset=8");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["results"], json(std::vector<json>(similar.begin() + 8, similar.end())));

  for (const std::string bad : {"offset=-1", "offset=1001", "offset=two", "offset=1&offset=2"})
    expect_error(test::http_get(port_, "/api/search?text=waves&" + bad), 400, bad);
  for (const std::string bad : {R"({"text": "waves", "offset": -1})", R"({"text": "waves", "offset": 1.5})", R"({"text": "waves", "offset": "1"})"})
    expect_error(test::http_post(port_, "/api/search", bad, "application/json"), 400, bad);
}

TEST_F(ServerTest, SearchTuningParametersReachTheSearch) {
  // On the exact test index nprobe / ef_search / rerank change nothing: the results stay Index::search's.
  auto r = test::http_get(port_, "/api/search?text=waves&k=4&nprobe=3&ef_search=40&rerank=0");
  ASSERT_EQ(r.status, 200) << r.body;
  SearchOptions o = k_of(4);
  o.nprobe = 3;
  o.ef_search = 40;
  o.rerank = false;
  EXPECT_EQ(r.json["results"], expected(text_query("waves"), o));
  r = test::http_post(port_, "/api/search", json{{"text", "waves"}, {"k", 4}, {"nprobe", 3}, {"rerank", false}}.dump(), "application/json");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["results"], expected(text_query("waves"), o));
  r = test::http_post(port_, "/api/search", json{{"text", "waves"}, {"nprobe", "many"}}.dump(), "application/json");
  EXPECT_EQ(r.status, 400) << r.body;
}

TEST_F(ServerTest, PostedQueriesEqualIndexSearch) {
  const auto& d = test::server_data();
  const int64_t id3 = id_of(d.files[3]);
  // Weighted terms.
  json body = {{"terms", {{{"text", "stripes"}, {"weight", 0.7}}, {{"like", id3}, {"weight", 1.5}}, {{"text", "blue"}, {"weight", -0.4}}}},
               {"k", 5}};
  auto r = test::http_post(port_, "/api/search", body.dump(), "application/json");
  ASSERT_EQ(r.status, 200) << r.body;
  Query q;
  q.terms = {{QueryTerm::Kind::Text, "stripes", 0.7f, {}}, {QueryTerm::Kind::Item, "#" + std::to_string(id3), 1.5f, {}},
             {QueryTerm::Kind::Text, "blue", -0.4f, {}}};
  EXPECT_EQ(r.json["results"], expected(q, k_of(5)));
  for (const auto& h : r.json["results"]) EXPECT_NE(h["id"], id3);  // a like term excludes its item

  // The expression syntax and shorthands, with filters; exclude_items off keeps the item.
  body = {{"query", "0.5*text:waves + like:" + d.files[3]}, {"minus", "green"}, {"k", 10},
          {"tags", {"special"}}, {"exclude_items", false}};
  r = test::http_post(port_, "/api/search", body.dump(), "application/json");
  ASSERT_EQ(r.status, 200) << r.body;
  SearchRequest sr;
  sr.expression = "0.5*text:waves + like:" + d.files[3];
  sr.minus = {"green"};
  q = build_query(sr);
  q.exclude_items = false;
  SearchOptions o = k_of(10);
  o.filter.tags = {"special"};
  EXPECT_EQ(r.json["results"], expected(q, o));

  // A vector term: the stored vector of an item finds that item first with score 1.
  const std::vector<float> v = ref_->vector(id3);
  body = {{"terms", {{{"vector", v}}}}, {"k", 3}};
  r = test::http_post(port_, "/api/search", body.dump(), "application/json");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_FALSE(r.json["results"].empty());
  EXPECT_EQ(r.json["results"][0]["id"], id3);
  EXPECT_NEAR(r.json["results"][0]["score"].get<double>(), 1.0, 1e-5);
}

TEST_F(ServerTest, ImageUploadEqualsIndexSearchOfTheFile) {
  const auto& d = test::server_data();
  const std::string bytes = test::read_bytes(d.upload);
  Query q;
  q.terms = {{QueryTerm::Kind::Image, d.upload, 1.0f, {}}};
  const json want = expected(q, k_of(5));
  ASSERT_EQ(want.size(), 5u);

  auto r = test::http_post(port_, "/api/search/image?k=5", bytes, "image/png");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["results"], want);

  // multipart/form-data, as a browser form sends it
  httplib::MultipartFormDataItems form = {{"image", bytes, "query.png", "image/png"}};
  r = test::to_result(test::make_client(port_)->Post("/api/search/image?k=5", form));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["results"], want);

  // combined with a text term and a filter from the URL (the CLI's --image + --text order)
  r = test::http_post(port_, "/api/search/image?k=3&text=waves&tag=special", bytes, "image/png");
  ASSERT_EQ(r.status, 200) << r.body;
  q.terms = {{QueryTerm::Kind::Text, "waves", 1.0f, {}}, {QueryTerm::Kind::Image, d.upload, 1.0f, {}}};
  SearchOptions o = k_of(3);
  o.filter.tags = {"special"};
  EXPECT_EQ(r.json["results"], expected(q, o));
}

TEST_F(ServerTest, SimilarExcludesTheItemAndItsDuplicates) {
  const auto& d = test::server_data();
  const int64_t id0 = id_of(d.files[0]);
  EXPECT_EQ(id_of(d.duplicate), id0);
  const auto r = test::http_get(port_, "/api/similar/" + std::to_string(id0) + "?k=20");
  ASSERT_EQ(r.status, 200) << r.body;
  Query q;
  q.terms = {{QueryTerm::Kind::Item, "#" + std::to_string(id0), 1.0f, {}}};
  EXPECT_EQ(r.json["results"], expected(q, k_of(20)));
  EXPECT_EQ(r.json["results"].size(), 10u);  // 11 contents indexed, minus itself
  for (const auto& h : r.json["results"]) {
    EXPECT_NE(h["id"], id0);
    for (const auto& p : h["paths"]) {
      EXPECT_NE(p, d.files[0]);
      EXPECT_NE(p, d.duplicate);
    }
  }
}

TEST_F(ServerTest, ItemsAndTheirImages) {
  const auto& d = test::server_data();
  const int64_t id0 = id_of(d.files[0]);
  auto r = test::http_get(port_, "/api/items/" + std::to_string(id0));
  ASSERT_EQ(r.status, 200) << r.body;
  CatalogItem it;
  ASSERT_TRUE(ref_->find_id(id0, &it));
  EXPECT_EQ(r.json["id"], id0);
  EXPECT_EQ(r.json["sha256"], it.sha256);
  EXPECT_EQ(r.json["size"], it.size);
  EXPECT_EQ(r.json["width"], it.width);
  EXPECT_EQ(r.json["height"], it.height);
  EXPECT_EQ(r.json["paths"], it.paths);
  EXPECT_EQ(r.json["paths"].size(), 2u);  // the picture and its duplicate
  EXPECT_EQ(r.json["tags"], it.tags);

  for (const auto& f : d.files) {
    r = test::http_get(port_, "/api/items/" + std::to_string(id_of(f)) + "/image");
    ASSERT_EQ(r.status, 200) << f;
    EXPECT_EQ(r.content_type, "image/png");
    EXPECT_TRUE(r.body == test::read_bytes(f)) << f;
  }
  // Indexed, then deleted: 404 naming the problem.
  r = test::http_get(port_, "/api/items/" + std::to_string(id_of(d.gone)) + "/image");
  expect_error(r, 404, "deleted file");
  EXPECT_NE(r.json["error"].get<std::string>().find("missing"), std::string::npos) << r.body;
}

TEST_F(ServerTest, PageIsEmbeddedAndServed) {
  const std::string web = std::string(CLIPKIT_TEST_DATA) + "/../../web/";
  struct Page {
    const char* route;
    const char* file;
    const char* type;
  } pages[] = {{"/", "index.html", "text/html"}, {"/app.js", "app.js", "text/javascript"}, {"/style.css", "style.css", "text/css"}};
  for (const auto& p : pages) {
    const auto r = test::http_get(port_, p.route);
    ASSERT_EQ(r.status, 200) << p.route;
    EXPECT_EQ(r.content_type.rfind(p.type, 0), 0u) << r.content_type;
    EXPECT_TRUE(r.body == test::read_bytes(web + p.file)) << p.route << " differs from web/" << p.file;
  }
}

TEST_F(ServerTest, BadParametersAndBodiesGive400) {
  const std::vector<std::string> gets = {
      "/api/search",                                // no query at all
      "/api/search?text=",                          // empty text
      "/api/search?text=a&k=abc",                   // not a number
      "/api/search?text=a&k=0",                     // not positive
      "/api/search?text=a&k=-4",
      "/api/search?text=a&k=99999999999999999999",  // overflow
      "/api/search?text=a&min_score=nan",
      "/api/search?text=a&min_score=0.5x",
      "/api/search?text=a&k=3&k=4",                 // twice
      "/api/search?text=a&color=red",               // unknown parameter
      "/api/search?text=a&nprobe=-1",               // search tuning out of range
      "/api/search?text=a&ef_search=x",
      "/api/search?text=a&rerank=2",
      "/api/search?text=a&templates=/etc/hostname", // a file on the server
      "/api/search?text=a&templates=nosuchset",
      "/api/search?text=a&tag=",
      "/api/search?query=text:",                    // malformed expression
      "/api/search?query=" + url_encode("image:/etc/hostname"),  // server files are not query terms
      "/api/items/abc",
      "/api/items/-1",
      "/api/items/99999999999999999999999",
      "/api/similar/x1",
      "/api/similar/1?text=more",
  };
  for (const auto& g : gets) expect_error(test::http_get(port_, g), 400, g);

  const std::vector<std::string> bodies = {
      "",
      "{",
      "[1, 2]",
      "\"text\"",
      R"({"text": 5})",
      R"({"text": ""})",
      R"({"k": "ten", "text": "a"})",
      R"({"k": 2.5, "text": "a"})",
      R"({"k": -1, "text": "a"})",
      R"({"text": "a", "colour": "red"})",
      R"({"terms": [{"text": "a", "like": 1}]})",
      R"({"terms": [{"weight": 2}]})",
      R"({"terms": [{"text": "a", "weight": "heavy"}]})",
      R"({"terms": [{"vector": [1, 2, 3]}]})",
      R"({"terms": [{"text": "a", "weight": 1}, {"text": "a", "weight": -1}]})",  // cancels out
      R"({"terms": "text:a"})",
      R"({"query": "image:/etc/hostname"})",
      R"({"text": "a", "templates": "../../etc/passwd"})",
      R"({"text": "a", "exclude_items": "yes"})",
      R"({"text": "a", "min_score": "high"})",
      R"({})",
  };
  for (const auto& b : bodies) expect_error(test::http_post(port_, "/api/search", b, "application/json"), 400, "body " + b);
  expect_error(test::http_post(port_, "/api/search?text=a", R"({"text": "a"})", "application/json"), 400, "URL parameters on POST");

  // Uploads that are not images.
  const std::string png = test::read_bytes(test::server_data().upload);
  expect_error(test::http_post(port_, "/api/search/image", "", "image/png"), 400, "empty upload");
  expect_error(test::http_post(port_, "/api/search/image", "this is not an image", "image/png"), 400, "text upload");
  expect_error(test::http_post(port_, "/api/search/image", png.substr(0, png.size() / 2), "image/png"), 400, "truncated png");
  std::string bad = png;
  bad[bad.size() / 2] ^= 0x5a;  // IDAT data damaged: the decoder must refuse it
  expect_error(test::http_post(port_, "/api/search/image", bad, "image/png"), 400, "corrupt png");
  expect_error(test::http_post(port_, "/api/search/image?k=nope", png, "image/png"), 400, "bad k on upload");
  httplib::MultipartFormDataItems no_file = {{"note", "hello", "", ""}};
  const auto r = test::to_result(test::make_client(port_)->Post("/api/search/image", no_file));
  expect_error(r, 400, "form without a file");
  EXPECT_NE(r.json["error"].get<std::string>().find("no file"), std::string::npos) << r.body;

  // ... and the server still answers.
  EXPECT_EQ(test::http_get(port_, "/api/info").status, 200);
}

TEST_F(ServerTest, UnknownIdsAndRoutesGive404) {
  const std::vector<std::string> gets = {"/api/items/987654", "/api/items/987654/image", "/api/similar/987654",
                                         "/api/nothing",      "/api",                    "/etc/passwd",
                                         "/../../etc/passwd", "/api/items/1/image/x",    "/favicon.ico"};
  for (const auto& g : gets) expect_error(test::http_get(port_, g), 404, g);
  expect_error(test::http_post(port_, "/api/search", R"({"like": 987654})", "application/json"), 404, "unknown like id");
  expect_error(test::http_post(port_, "/api/search", R"({"like": "/no/such/file.png"})", "application/json"), 404,
               "unknown like path");
  expect_error(test::http_get(port_, "/api/search?like=987654"), 404, "unknown like id (GET)");
  expect_error(test::http_post(port_, "/api/info", "{}", "application/json"), 404, "POST to a GET route");
  EXPECT_EQ(test::http_get(port_, "/api/info").status, 200);
}

TEST_F(ServerTest, UploadsOverTheLimitGive413AndTheConnectionStaysUsable) {
  std::string big(kUploadLimit + 1, 'x');
  auto client = test::make_client(port_);
  auto r = test::to_result(client->Post("/api/search/image", big, "image/png"));
  expect_error(r, 413, "upload over the limit");
  r = test::to_result(client->Post("/api/search", std::string(kUploadLimit + 10, ' '), "application/json"));
  expect_error(r, 413, "JSON body over the upload limit");
  // The same client (connection) goes on working.
  r = test::to_result(client->Get("/api/search?text=waves&k=2"));
  EXPECT_EQ(r.status, 200) << r.body;

  // A client that announces its size and waits (Expect: 100-continue) is refused before it sends.
  const std::string head = "POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 1000000000000\r\n"
                           "Expect: 100-continue\r\n\r\n";
  const std::string r100 = test::raw_exchange(port_, head);
  EXPECT_EQ(test::status_of(r100), 413) << r100;
  EXPECT_NE(r100.find("{\"error\":"), std::string::npos) << r100;
}

TEST_F(ServerTest, RawProtocolAbuseIsAnsweredAndSurvived) {
  // Garbage instead of a request line.
  std::string r = test::raw_exchange(port_, "\x16\x03\x01 hello there\r\n\r\n");
  EXPECT_EQ(test::status_of(r), 400) << r;
  EXPECT_NE(r.find("{\"error\":"), std::string::npos) << r;
  // A chunked upload cannot be bounded in advance: refused.
  r = test::raw_exchange(port_, "POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
  EXPECT_EQ(test::status_of(r), 411) << r;
  // A body without a length.
  r = test::raw_exchange(port_, "POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n{\"text\": \"a\"}");
  EXPECT_EQ(test::status_of(r), 411) << r;
  // A body shorter than announced, then the client goes away.
  test::raw_exchange(port_, "POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{\"text\": \"a\"}", true);
  // A header flood.
  std::string flood = "GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (int i = 0; i < 2000; ++i) flood += "X-Pad-" + std::to_string(i) + ": " + std::string(100, 'p') + "\r\n";
  test::raw_exchange(port_, flood + "\r\n");
  // An absurdly long URL.
  r = test::raw_exchange(port_, "GET /api/search?text=" + std::string(100000, 'a') + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_EQ(test::status_of(r), 414) << r.substr(0, 200);
  // A client that vanishes without sending anything.
  test::raw_exchange(port_, "", true);
  EXPECT_EQ(test::http_get(port_, "/api/info").status, 200);
}

TEST_F(ServerTest, KIsCapped) {
  const auto r = test::http_get(port_, "/api/search?text=waves&k=100000");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["k"], 1000);
  EXPECT_EQ(r.json["results"], expected(text_query("waves"), k_of(1000)));
  const auto p = test::http_post(port_, "/api/search", R"({"text": "waves", "k": 18446744073709551615})", "application/json");
  ASSERT_EQ(p.status, 200) << p.body;
  EXPECT_EQ(p.json["k"], 1000);
}

TEST_F(ServerTest, ConcurrentRequestsGiveTheSameAnswers) {
  const auto& d = test::server_data();
  const std::string png = test::read_bytes(d.upload);
  const std::string like = "/api/similar/" + std::to_string(id_of(d.files[5])) + "?k=6";
  struct Call {
    std::string target, body;
    json want;
  };
  std::vector<Call> calls = {{"/api/search?text=waves&k=7", "", {}},
                             {"/api/search?text=" + url_encode("a checkered scarf") + "&templates=photo&k=5", "", {}},
                             {like, "", {}},
                             {"/api/search/image?k=4", png, {}}};
  for (auto& c : calls) {  // answers one at a time first
    const auto r = c.body.empty() ? test::http_get(port_, c.target) : test::http_post(port_, c.target, c.body, "image/png");
    ASSERT_EQ(r.status, 200) << c.target << r.body;
    c.want = r.json["results"];
    ASSERT_FALSE(c.want.empty());
  }
  EXPECT_EQ(calls[0].want, expected(text_query("waves"), k_of(7)));

  constexpr int kThreads = 6, kPerThread = 4;
  std::atomic<int> same{0}, different{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      auto client = test::make_client(port_);
      for (int i = 0; i < kPerThread; ++i) {
        const Call& c = calls[static_cast<size_t>(t + i) % calls.size()];
        const auto r = test::to_result(c.body.empty() ? client->Get(c.target.c_str()) : client->Post(c.target.c_str(), c.body, "image/png"));
        (r.status == 200 && r.json["results"] == c.want ? same : different)++;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(same.load(), kThreads * kPerThread);
  EXPECT_EQ(different.load(), 0);
}

// A second server on the same index: the files are byte-identical afterwards, every request is
// logged once, and stop() ends run().
TEST_F(ServerTest, NeverWritesTheIndexAndLogsEveryRequest) {
  const auto& d = test::server_data();
  auto snapshot = [&] {
    std::map<std::string, std::string> files;
    for (const auto& e : fs::directory_iterator(d.index_dir)) {
      const std::string name = e.path().filename().string();
      if (name.size() > 4 && name.substr(name.size() - 4) == "-shm") continue;  // readers' shared memory
      files[name] = test::read_bytes(e.path().string());
    }
    return files;
  };
  const auto before = snapshot();
  const int64_t generation = ref_->info().generation;
  const int64_t id3 = id_of(d.files[3]);

  std::vector<std::string> lines;
  std::mutex mu;
  ServerOptions o;
  o.port = 0;
  o.log = [&](const std::string& l) {
    std::lock_guard<std::mutex> lock(mu);
    lines.push_back(l);
  };
  {
    SearchServer s(Index::open(d.index_dir, Index::Mode::ReadOnly), d.model, o);
    const int port = s.bind();
    std::thread th([&] { s.run(); });
    ASSERT_TRUE(s.wait_until_running());
    EXPECT_EQ(test::http_get(port, "/api/search?text=waves").status, 200);
    EXPECT_EQ(test::http_get(port, "/api/similar/" + std::to_string(id3)).status, 200);
    EXPECT_EQ(test::http_post(port, "/api/search/image", test::read_bytes(d.upload), "image/png").status, 200);
    EXPECT_EQ(test::http_get(port, "/api/items/" + std::to_string(id3) + "/image").status, 200);
    EXPECT_EQ(test::http_get(port, "/api/search?k=x").status, 400);
    EXPECT_EQ(test::http_get(port, "/nowhere").status, 404);
    s.stop();
    th.join();
  }
  EXPECT_EQ(snapshot(), before);
  EXPECT_EQ(Index::open(d.index_dir, Index::Mode::ReadOnly).info().generation, generation);

  // One line per request (a line is written after its answer, so their order may vary).
  ASSERT_EQ(lines.size(), 6u);
  auto logged = [&](const std::string& fragment) {
    return std::count_if(lines.begin(), lines.end(), [&](const std::string& l) { return l.find(fragment) != std::string::npos; });
  };
  EXPECT_EQ(logged("127.0.0.1 GET /api/search?text=waves 200 "), 1);
  EXPECT_EQ(logged("GET /api/similar/" + std::to_string(id3) + " 200 "), 1);
  EXPECT_EQ(logged("POST /api/search/image 200 "), 1);
  EXPECT_EQ(logged("GET /api/items/" + std::to_string(id3) + "/image 200 "), 1);
  EXPECT_EQ(logged("GET /api/search?k=x 400 "), 1);
  EXPECT_EQ(logged("GET /nowhere 404 "), 1);
}

TEST_F(ServerTest, StopBeforeRunAndBusyPort) {
  const auto& d = test::server_data();
  ServerOptions o;
  o.port = 0;
  SearchServer s(Index::open(d.index_dir, Index::Mode::ReadOnly), d.model, o);
  s.bind();
  s.stop();
  s.run();  // returns at once
  EXPECT_FALSE(s.wait_until_running());

  o.port = port_;  // taken by the suite's server
  SearchServer busy(Index::open(d.index_dir, Index::Mode::ReadOnly), d.model, o);
  try {
    busy.bind();
    FAIL() << "bound a port in use";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
    EXPECT_NE(std::string(e.what()).find(std::to_string(port_)), std::string::npos);
  }
}

TEST(ServerSetup, RefusesAnotherModel) {
  const auto& d = test::server_data();
  auto other = std::make_shared<test::FakeModel>();
  EXPECT_THROW({ SearchServer s(Index::open(d.index_dir, Index::Mode::ReadOnly), other); }, Error);
  EXPECT_THROW({ SearchServer s(Index::open(d.index_dir, Index::Mode::ReadOnly), nullptr); }, Error);
}

TEST_F(ServerTest, ExpressionWeightsOutOfRangeGive400) {
  for (const std::string q : {"1e400*text:a", "1e-400*text:a", "-1e39*text:a + text:b"}) {
    const auto r = test::http_get(port_, "/api/search?query=" + url_encode(q));
    expect_error(r, 400, q);
    EXPECT_NE(r.body.find(q.substr(q.find('1'), q.find('*') - q.find('1'))), std::string::npos) << q << ": " << r.body;
  }
  const auto r = test::http_post(port_, "/api/search", R"({"query": "1e400*text:a"})", "application/json");
  expect_error(r, 400, "posted expression");
  EXPECT_NE(r.body.find("weight '1e400'"), std::string::npos) << r.body;
}

TEST_F(ServerTest, DeeplyNestedJsonGives400) {
  std::string deep = R"({"terms": [{"vector": )";
  for (int i = 0; i < 100000; ++i) deep += '[';
  const auto r = test::http_post(port_, "/api/search", deep, "application/json");
  expect_error(r, 400, "nested JSON");
  EXPECT_NE(r.body.find("nested"), std::string::npos) << r.body;
  const auto ok = test::http_post(port_, "/api/search", R"({"terms": [{"text": "waves", "weight": 1}]})", "application/json");
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST_F(ServerTest, ImageRangesAreBoundedByTheFile) {
  const auto& d = test::server_data();
  const std::string file = test::read_bytes(d.files[2]);
  const std::string target = "/api/items/" + std::to_string(id_of(d.files[2])) + "/image";
  auto get = [&](const std::string& range) {
    auto c = test::make_client(port_);
    return c->Get(target.c_str(), httplib::Headers{{"Range", range}});
  };
  // One satisfiable range: 206 with exactly those bytes.
  auto r = get("bytes=10-19");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body, file.substr(10, 10));
  EXPECT_EQ(r->get_header_value("Content-Range"), "bytes 10-19/" + std::to_string(file.size()));
  r = get("bytes=-7");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body, file.substr(file.size() - 7));
  r = get("bytes=5-99999999");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body, file.substr(5));
  // Beyond the end: 416, nothing of the file.
  for (const std::string range : {"bytes=999999-", "bytes=999999-1000000", "bytes=-0"}) {
    const std::string raw = test::raw_exchange(port_, "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: " + range + "\r\n\r\n");
    EXPECT_EQ(test::status_of(raw), 416) << range << "\n" << raw.substr(0, 300);
    EXPECT_NE(raw.find("Content-Range: bytes */" + std::to_string(file.size())), std::string::npos) << raw.substr(0, 300);
  }
  // Many ranges: the whole file once, never more bytes than the file.
  std::string many = "bytes=0-";
  for (int i = 0; i < 2599; ++i) many += ",0-";
  r = get(many);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, file);
  EXPECT_EQ(r->get_header_value("Content-Length"), std::to_string(file.size()));
  r = get("bytes=0-3,8-11");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, file);
  // Other routes ignore Range.
  auto c = test::make_client(port_);
  const auto info = c->Get("/api/info", httplib::Headers{{"Range", "bytes=0-,0-,0-"}});
  ASSERT_TRUE(info);
  EXPECT_EQ(info->status, 200);
  EXPECT_TRUE(json::parse(info->body, nullptr, false).is_object()) << info->body.substr(0, 200);
}

TEST_F(ServerTest, TwoContentLengthsGive400) {
  for (const std::string lengths : {"Content-Length: 13\r\nContent-Length: 13\r\n", "Content-Length: 13\r\nContent-Length: 0\r\n",
                                    "Content-Length: 0\r\nContent-Length: 13\r\n"}) {
    const std::string r = test::raw_exchange(
        port_, "POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + lengths + "\r\n{\"text\":\"a\"}");
    EXPECT_EQ(test::status_of(r), 400) << lengths << "\n" << r.substr(0, 300);
    EXPECT_NE(r.find("Content-Length"), std::string::npos) << r.substr(0, 300);
  }
  const std::string r = test::raw_exchange(port_, "GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(test::status_of(r), 400) << r.substr(0, 300);
  EXPECT_EQ(test::http_get(port_, "/api/info").status, 200);
}

TEST_F(ServerTest, UploadsOverThePixelLimitAreRefusedBeforeDecoding) {
  const auto small = test::http_post(port_, "/api/search/image?k=2", test::solid_lossless_webp(64, 48), "image/webp");
  ASSERT_EQ(small.status, 200) << small.body;  // the generated pictures are valid WebP
  // 7000 x 7000 = 49 megapixels in a few dozen bytes: over the default upload limit of 16 megapixels.
  const auto r = test::http_post(port_, "/api/search/image", test::solid_lossless_webp(7000, 7000), "image/webp");
  expect_error(r, 413, "7000x7000 upload");
  EXPECT_NE(r.body.find("16000000"), std::string::npos) << r.body;
  const auto info = test::http_get(port_, "/api/info");
  EXPECT_EQ(info.json["limits"]["max_upload_pixels"], 16'000'000);
  EXPECT_EQ(info.json["limits"]["decode_memory_bytes"], 512u << 20);
}

// The server's caches stay within their bytes, dropping the least recently used entries first.
TEST(ServerCache, EvictsTheLeastRecentlyUsedWithinItsBytes) {
  const size_t entry = 100 + server::LruCache<std::string>::kEntryOverhead + 2 * 2;  // value, overhead, key twice
  server::LruCache<std::string> c(3 * entry);
  std::string v;
  c.put("k1", std::string(100, '1'), 100);
  c.put("k2", std::string(100, '2'), 100);
  c.put("k3", std::string(100, '3'), 100);
  EXPECT_EQ(c.stats().entries, 3u);
  EXPECT_EQ(c.stats().bytes, 3 * entry);
  ASSERT_TRUE(c.get("k1", &v));  // k1 is now the most recent: k2 goes first
  EXPECT_EQ(v, std::string(100, '1'));
  c.put("k4", std::string(100, '4'), 100);
  EXPECT_FALSE(c.get("k2", &v));
  EXPECT_TRUE(c.get("k1", &v));
  EXPECT_TRUE(c.get("k3", &v));
  EXPECT_TRUE(c.get("k4", &v));
  EXPECT_LE(c.stats().bytes, c.stats().capacity);
  // replacing a key keeps one entry; an entry larger than the whole cache is not kept
  c.put("k4", std::string(10, 'x'), 10);
  ASSERT_TRUE(c.get("k4", &v));
  EXPECT_EQ(v, std::string(10, 'x'));
  c.put("big", std::string(4 * entry, 'b'), 4 * entry);
  EXPECT_FALSE(c.get("big", &v));
  EXPECT_EQ(c.stats().entries, 3u);
  // many entries: the total never passes the capacity
  for (int i = 0; i < 1000; ++i) c.put("n" + std::to_string(i), std::string(static_cast<size_t>(i % 150), 'n'), static_cast<size_t>(i % 150));
  EXPECT_LE(c.stats().bytes, c.stats().capacity);
  EXPECT_TRUE(c.get("n999", &v));
  c.clear();
  EXPECT_EQ(c.stats().entries, 0u);
  EXPECT_EQ(c.stats().bytes, 0u);
  server::LruCache<std::string> none(0);  // --cache-mb 0
  none.put("a", "b", 1);
  EXPECT_FALSE(none.get("a", &v));
}
