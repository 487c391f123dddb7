// Who may talk to the server and what it may hand out: files swapped after indexing are not
// served, the Host header must name the server (DNS rebinding), a bearer token guards every route
// when set, and concurrent image decoding stays within a memory budget. Servers run in-process on
// 127.0.0.1 (a free port).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <webp/decode.h>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>

#include "clipkit/error.h"
#include "clipkit/server.h"
#include "server/decode_budget.h"
#include "server/thumbnail.h"
#include "server/server_fixture.h"

namespace fs = std::filesystem;
using namespace clipkit;
using nlohmann::json;

namespace {

// A server on its own thread, stopped at the end of the scope; its log lines are kept.
class RunningServer {
 public:
  RunningServer(const std::string& index_dir, ServerOptions o) {
    o.port = 0;
    o.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu_);
      lines_.push_back(line);
    };
    server_ = std::make_unique<SearchServer>(Index::open(index_dir, Index::Mode::ReadOnly), test::server_data().model, o);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
    server_->wait_until_running();
  }
  ~RunningServer() {
    server_->stop();
    thread_.join();
  }
  int port() const { return port_; }
  std::string log() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string all;
    for (const auto& l : lines_) all += l + "\n";
    return all;
  }

 private:
  std::unique_ptr<SearchServer> server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::vector<std::string> lines_;
};

std::string get_raw(int port, const std::string& target, const std::string& headers) {
  return test::raw_exchange(port, "GET " + target + " HTTP/1.1\r\n" + headers + "Connection: close\r\n\r\n");
}

// A folder of pictures indexed on its own (the tests change files in it).
struct SwapFixture {
  std::string root, photos, outside, index_dir;
  std::map<std::string, int64_t> ids;  // file name -> item id
};

SwapFixture make_swap_fixture() {
  SwapFixture f;
  f.root = test::temp_dir();
  f.photos = f.root + "/photos";
  f.outside = f.root + "/outside";
  f.index_dir = f.root + "/idx";
  fs::create_directories(f.photos + "/sub");
  fs::create_directories(f.outside + "/sub");
  const char* names[] = {"a.png", "b.png", "c.png", "d.png", "e.png", "sub/f.png"};
  for (int k = 0; k < 6; ++k) test::write_synthetic_png(f.photos + "/" + names[k], 11 + 5 * k, 30 + 2 * k, 26);
  Index idx = Index::create(f.index_dir, test::server_data().model->info());
  AddOptions recursive;
  recursive.recursive = true;
  const auto r = idx.add_files({f.photos}, *test::server_data().model, recursive);
  if (r.failed != 0) throw std::runtime_error("fixture: indexing failed");
  for (const char* n : names) {
    CatalogItem it;
    if (!idx.find_path(f.photos + "/" + n, &it)) throw std::runtime_error("fixture: not indexed");
    f.ids[n] = it.id;
  }
  return f;
}

void replace_by_symlink(const std::string& path, const std::string& target) {
  fs::remove(path);
  fs::create_symlink(target, path);
}

}  // namespace

TEST(ServerFiles, FilesSwappedAfterIndexingAreNotServed) {
  const SwapFixture f = make_swap_fixture();
  RunningServer s(f.index_dir, {});
  auto image = [&](const std::string& name) { return test::http_get(s.port(), "/api/items/" + std::to_string(f.ids.at(name)) + "/image"); };
  // Untouched files are served.
  auto r = image("a.png");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(r.body == test::read_bytes(f.photos + "/a.png"));

  auto refused = [&](const std::string& name, const std::string& why) {
    const auto res = image(name);
    EXPECT_TRUE(res.status == 404 || res.status == 410) << why << ": " << res.status << " " << res.body.substr(0, 200);
    ASSERT_TRUE(res.json.is_object() && res.json.contains("error")) << why << ": " << res.body.substr(0, 200);
  };
  // An indexed picture replaced by a link to the index's own catalog.
  const std::string catalog = test::read_bytes(f.index_dir + "/catalog.sqlite");
  ASSERT_FALSE(catalog.empty());
  replace_by_symlink(f.photos + "/a.png", f.index_dir + "/catalog.sqlite");
  refused("a.png", "link to the catalog");
  // ... by a link to a file outside, of the same size.
  const std::string b = test::read_bytes(f.photos + "/b.png");
  { std::ofstream(f.outside + "/secret.txt", std::ios::binary) << std::string(b.size(), 's'); }
  replace_by_symlink(f.photos + "/b.png", f.outside + "/secret.txt");
  refused("b.png", "link to another file of the same size");
  // ... by a link to a copy of itself outside the indexed folders (same bytes: only the place is wrong).
  test::copy_file_bytes(f.photos + "/c.png", f.outside + "/c.png");
  replace_by_symlink(f.photos + "/c.png", f.outside + "/c.png");
  refused("c.png", "link out of the indexed folders");
  // An indexed folder replaced by a link to another folder holding a copy of its picture.
  test::copy_file_bytes(f.photos + "/sub/f.png", f.outside + "/sub/f.png");
  fs::rename(f.photos + "/sub", f.root + "/sub-moved");
  fs::create_directory_symlink(f.outside + "/sub", f.photos + "/sub");
  refused("sub/f.png", "folder swapped for a link");
  // Rewritten in place with other bytes of the same size.
  std::string e = test::read_bytes(f.photos + "/e.png");
  e[e.size() / 2] ^= 0x55;
  { std::ofstream(f.photos + "/e.png", std::ios::binary | std::ios::trunc) << e; }
  refused("e.png", "rewritten");

  // Touched (a new modification time) but the same bytes: still served (the SHA-256 matches).
  const std::string d = test::read_bytes(f.photos + "/d.png");
  timeval times[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_EQ(::utimes((f.photos + "/d.png").c_str(), times), 0);
  r = image("d.png");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(r.body == d);

  // Every refusal is logged with its reason.
  const std::string log = s.log();
  for (const char* n : {"a.png", "b.png", "c.png", "f.png", "e.png"})
    EXPECT_NE(log.find("/photos/" + std::string(n == std::string("f.png") ? "sub/f.png" : n)), std::string::npos) << n << "\n" << log;
  EXPECT_NE(log.find("outside the indexed folders"), std::string::npos) << log;
  EXPECT_NE(log.find("changed since it was indexed"), std::string::npos) << log;
}

TEST(ServerFiles, ThumbnailsPassTheSameChecksAndAreCachedSafely) {
  const SwapFixture f = make_swap_fixture();
  RunningServer s(f.index_dir, {});
  auto thumb = [&](const std::string& name) { return test::http_get(s.port(), "/api/items/" + std::to_string(f.ids.at(name)) + "/thumb"); };
  auto sha = [&](const std::string& name) {
    CatalogItem it;
    EXPECT_TRUE(Index::open(f.index_dir, Index::Mode::ReadOnly).find_id(f.ids.at(name), &it));
    return it.sha256;
  };
  const std::string cache = f.index_dir + "/thumbs/";
  // Made on the first request (WebP of the image's size: these are smaller than 256 px), kept in
  // the cache under the content's SHA-256, answered from there afterwards.
  auto r = thumb("a.png");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type, "image/webp");
  int w = 0, h = 0;
  ASSERT_TRUE(WebPGetInfo(reinterpret_cast<const uint8_t*>(r.body.data()), r.body.size(), &w, &h));
  EXPECT_EQ(w, 30);
  EXPECT_EQ(h, 26);
  const std::string cached = cache + sha("a.png") + "-256.webp";
  ASSERT_TRUE(fs::is_regular_file(cached));
  EXPECT_TRUE(test::read_bytes(cached) == r.body);
  EXPECT_TRUE(thumb("a.png").body == r.body);
  for (const auto& e : fs::directory_iterator(cache)) EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << e.path();

  // A picture swapped for a link to another file of the same size: no thumbnail, nothing cached.
  const std::string b = test::read_bytes(f.photos + "/b.png");
  { std::ofstream(f.outside + "/secret.png", std::ios::binary) << std::string(b.size(), 's'); }
  replace_by_symlink(f.photos + "/b.png", f.outside + "/secret.png");
  r = thumb("b.png");
  EXPECT_TRUE(r.status == 404 || r.status == 410) << r.status << " " << r.body.substr(0, 200);
  EXPECT_FALSE(fs::exists(cache + sha("b.png") + "-256.webp"));

  // A link planted in the cache under the name of a thumbnail is neither read nor written through.
  const std::string target = f.outside + "/planted.webp";
  const std::string planted = test::read_bytes(cached);  // valid WebP bytes, of another image
  { std::ofstream(target, std::ios::binary) << planted; }
  const std::string c_name = cache + sha("c.png") + "-256.webp";
  fs::create_symlink(target, c_name);
  r = thumb("c.png");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(WebPGetInfo(reinterpret_cast<const uint8_t*>(r.body.data()), r.body.size(), &w, &h));
  EXPECT_EQ(w, 34);  // c.png's own size, not the planted thumbnail's
  EXPECT_TRUE(test::read_bytes(target) == planted);
  EXPECT_FALSE(fs::is_symlink(c_name));
  EXPECT_TRUE(test::read_bytes(c_name) == r.body);
}

TEST(ServerAccess, HostHeaderMustNameTheServer) {
  ServerOptions o;
  o.allowed_hosts = {"photos.example.lan"};
  RunningServer s(test::server_data().index_dir, o);
  for (const std::string host : {"localhost", "localhost:8080", "LocalHost", "127.0.0.1", "127.0.0.1:1", "127.8.9.10:80", "[::1]",
                                 "[::1]:8080", "photos.example.lan", "Photos.Example.Lan:8080"}) {
    const std::string r = get_raw(s.port(), "/api/info", "Host: " + host + "\r\n");
    EXPECT_EQ(test::status_of(r), 200) << host << "\n" << r.substr(0, 300);
  }
  for (const std::string host : {"evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.evil.example",
                                 "photos.example.lan.evil.example", "10.0.0.1", "[::2]", "0.0.0.0", "127.0.0.1:abc", "::1",
                                 "[::1", "localhost:8080:1"}) {
    const std::string r = get_raw(s.port(), "/api/info", "Host: " + host + "\r\n");
    EXPECT_EQ(test::status_of(r), 403) << host << "\n" << r.substr(0, 300);
    EXPECT_NE(r.find("{\"error\":"), std::string::npos) << r;
  }
  // The page too, and a request without a Host header.
  EXPECT_EQ(test::status_of(get_raw(s.port(), "/", "Host: rebound.example\r\n")), 403);
  EXPECT_EQ(test::status_of(get_raw(s.port(), "/", "")), 400);
  EXPECT_EQ(test::status_of(get_raw(s.port(), "/", "Host: \r\n")), 400);
  EXPECT_EQ(test::status_of(get_raw(s.port(), "/", "Host: localhost\r\nHost: evil.example\r\n")), 400);
  EXPECT_NE(s.log().find("Host"), std::string::npos) << s.log();
}

TEST(ServerAccess, BearerTokenGuardsEveryRoute) {
  const auto& d = test::server_data();
  ServerOptions o;
  o.token = "k9UuV1-s3cret-Token_0123456789";
  RunningServer s(d.index_dir, o);
  Index ref = Index::open(d.index_dir, Index::Mode::ReadOnly);
  CatalogItem it;
  ASSERT_TRUE(ref.find_path(d.files[1], &it));
  const std::string host = "Host: 127.0.0.1\r\n";
  const std::string id = std::to_string(it.id);
  for (const std::string& target : std::vector<std::string>{"/", "/app.js", "/api/info", "/api/search?text=waves", "/api/items/" + id,
                                                            "/api/items/" + id + "/image", "/api/similar/" + id, "/no/such/route"}) {
    std::string r = get_raw(s.port(), target, host);
    EXPECT_EQ(test::status_of(r), 401) << target << "\n" << r.substr(0, 300);
    EXPECT_NE(r.find("WWW-Authenticate: Bearer"), std::string::npos) << r.substr(0, 300);
    r = get_raw(s.port(), target, host + "Authorization: Bearer k9UuV1-s3cret-Token_0123456788\r\n");
    EXPECT_EQ(test::status_of(r), 403) << target;
    r = get_raw(s.port(), target, host + "Authorization: Bearer k9UuV1-s3cret-Token_01234567890\r\n");
    EXPECT_EQ(test::status_of(r), 403) << target;
    r = get_raw(s.port(), target, host + "Authorization: Basic azlVdVYxOnNlY3JldA==\r\n");
    EXPECT_EQ(test::status_of(r), 401) << target;
    r = get_raw(s.port(), target, host + "Authorization: Bearer k9UuV1-s3cret-Token_0123456789\r\n");
    EXPECT_EQ(test::status_of(r), target == "/no/such/route" ? 404 : 200) << target << "\n" << r.substr(0, 300);
  }
  // A POST without the token is refused before its body is used.
  const std::string post = "POST /api/search HTTP/1.1\r\n" + host + "Content-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"text\":\"a\"}";
  EXPECT_EQ(test::status_of(test::raw_exchange(s.port(), post)), 401);
  // The token never appears in the log.
  EXPECT_EQ(s.log().find("s3cret"), std::string::npos) << s.log();
}

TEST(ServerUploads, DecodeMemoryBudgetRefusesWhatCannotFit) {
  ServerOptions o;
  o.max_upload_pixels = 60'000'000;        // the pixel limit lets the picture through ...
  o.decode_memory_bytes = 64u << 20;       // ... the decoding budget does not
  RunningServer s(test::server_data().index_dir, o);
  const std::string big = test::solid_lossless_webp(7000, 7000);
  ASSERT_LT(big.size(), 100u);
  auto r = test::http_post(s.port(), "/api/search/image", big, "image/webp");
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_NE(r.body.find("memory"), std::string::npos) << r.body;
  // A picture that fits is decoded.
  r = test::http_post(s.port(), "/api/search/image?k=2", test::solid_lossless_webp(300, 200), "image/webp");
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST(DecodeBudget, TakesWaitsAndGivesBack) {
  server::DecodeBudget b(100);
  EXPECT_EQ(b.capacity(), 100u);
  EXPECT_TRUE(b.acquire(60, std::chrono::milliseconds(0)));
  EXPECT_FALSE(b.acquire(50, std::chrono::milliseconds(0)));  // 40 left
  EXPECT_FALSE(b.acquire(101, std::chrono::milliseconds(0)));  // never fits
  EXPECT_TRUE(b.acquire(40, std::chrono::milliseconds(0)));
  EXPECT_EQ(b.in_use(), 100u);
  // A waiter gets its bytes when another request gives them back.
  std::thread giver([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    b.release(60);
  });
  EXPECT_TRUE(b.acquire(50, std::chrono::seconds(30)));
  giver.join();
  EXPECT_EQ(b.in_use(), 90u);
  b.release(90);
  EXPECT_EQ(b.in_use(), 0u);
}
