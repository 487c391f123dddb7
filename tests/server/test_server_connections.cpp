// Connection handling of the search server: idle and slow connections cost no worker, slow
// headers are cut off, the number of open connections and the memory of request bodies are
// capped, kept-alive connections answer pipelined requests in order. Servers run in-process on
// 127.0.0.1 (a free port).
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <fstream>
#include <thread>

#include "clipkit/error.h"
#include "clipkit/server.h"
#include "server/server_fixture.h"
#include "server/transport.h"

namespace clipkit {
namespace {

class Served {
 public:
  explicit Served(ServerOptions o, const std::string& index_dir = test::server_data().index_dir) {
    o.port = 0;
    server_ = std::make_unique<SearchServer>(Index::open(index_dir, Index::Mode::ReadOnly),
                                             test::server_data().model, o);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
    EXPECT_TRUE(server_->wait_until_running());
  }
  ~Served() {
    server_->stop();
    thread_.join();
  }
  int port() const { return port_; }

 private:
  std::unique_ptr<SearchServer> server_;
  std::thread thread_;
  int port_ = 0;
};

// A connected socket to 127.0.0.1:port that has sent nothing (-1 when the connection failed).
int connect_idle(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// True when the server has closed (or reset) the connection; reads and keeps what it sent before.
bool closed_by_server(int fd, std::string* got = nullptr) {
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) return true;
    if (got) got->append(buf, static_cast<size_t>(n));
  }
}

// Waits up to `seconds` for the server to close `fd`; what it sent is appended to *got.
bool wait_closed(int fd, int seconds, std::string* got) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < until) {
    if (closed_by_server(fd, got)) return true;
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, 100);
  }
  return false;
}

bool enough_descriptors(rlim_t want) {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0) return false;
  if (r.rlim_cur == RLIM_INFINITY || r.rlim_cur >= want) return true;
  if (r.rlim_max != RLIM_INFINITY && r.rlim_max < want) return false;
  r.rlim_cur = want;
  return ::setrlimit(RLIMIT_NOFILE, &r) == 0;
}

TEST(ServerConnections, AThousandIdleConnectionsDoNotKeepOthersWaiting) {
  if (!enough_descriptors(2600)) GTEST_SKIP() << "the process may not open 2600 descriptors";
  ServerOptions o;
  o.header_timeout_ms = 600000;  // the idle connections stay for the whole test
  Served s(o);
  std::vector<int> idle;
  for (int i = 0; i < 1000; ++i) {
    const int fd = connect_idle(s.port());
    ASSERT_GE(fd, 0) << "connection " << i << ": " << std::strerror(errno);
    idle.push_back(fd);
  }
  // Searches, item records and images are answered while the thousand connections wait (a
  // server with a thread per connection answers none of them before the idle ones time out).
  auto c = test::make_client(s.port());
  c->set_read_timeout(30);
  for (const std::string target : {"/api/search?text=waves&k=3", "/api/info", "/api/similar/1?k=2"}) {
    const auto r = test::to_result(c->Get(target.c_str()));
    EXPECT_EQ(r.status, 200) << target << ": " << r.body;
  }
  // The idle connections are still open: none was dropped to make room.
  int closed = 0;
  for (int fd : idle) closed += closed_by_server(fd) ? 1 : 0;
  EXPECT_EQ(closed, 0);
  // One of them now sends a request and is answered.
  const std::string req = "GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(::send(idle[500], req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  std::string got;
  EXPECT_TRUE(wait_closed(idle[500], 30, &got));
  EXPECT_EQ(test::status_of(got), 200) << got.substr(0, 200);
  for (int fd : idle) ::close(fd);
}

TEST(ServerConnections, SlowHeadersAreCutOffAfterTheHeaderTimeout) {
  ServerOptions o;
  o.header_timeout_ms = 1000;
  Served s(o);
  // A connection that sends nothing is closed without an answer.
  const int silent = connect_idle(s.port());
  ASSERT_GE(silent, 0);
  // A connection that sends a request's headers a line at a time, never finishing them, is
  // closed, though it never stops sending.
  const int slow = connect_idle(s.port());
  ASSERT_GE(slow, 0);
  std::string head = "GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  ASSERT_EQ(::send(slow, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
  std::string got;
  bool cut = false;
  for (int i = 0; i < 300 && !cut; ++i) {  // at most 30 s
    const std::string line = "X-Slow-" + std::to_string(i) + ": a\r\n";
    if (::send(slow, line.data(), line.size(), MSG_NOSIGNAL) < 0) cut = true;
    cut = cut || wait_closed(slow, 0, &got);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(cut || wait_closed(slow, 5, &got)) << "the slow client was never cut off";
  EXPECT_EQ(got, "") << "the slow client was answered";
  std::string silent_got;
  EXPECT_TRUE(wait_closed(silent, 30, &silent_got));
  EXPECT_EQ(silent_got, "");
  ::close(slow);
  ::close(silent);
  // The server goes on answering.
  EXPECT_EQ(test::http_get(s.port(), "/api/info").status, 200);
}

TEST(ServerConnections, ConnectionsBeyondTheCapAreRefusedWith503) {
  ServerOptions o;
  o.max_connections = 4;
  Served s(o);
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) {
    idle.push_back(connect_idle(s.port()));
    ASSERT_GE(idle.back(), 0);
  }
  // Connections are accepted in the order they came: the fifth is over the cap.
  const std::string r = test::raw_exchange(s.port(), "GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_EQ(test::status_of(r), 503) << r.substr(0, 300);
  EXPECT_NE(r.find("too many open connections (4)"), std::string::npos) << r.substr(0, 300);
  EXPECT_NE(r.find("Retry-After: 1"), std::string::npos) << r.substr(0, 300);
  // The held connections are untouched, and once one goes away a new client is served.
  for (int fd : idle) EXPECT_FALSE(closed_by_server(fd));
  ::close(idle.back());
  idle.pop_back();
  int status = 0;
  for (int i = 0; i < 100 && status != 200; ++i) {  // the server notices the close in its own time
    status = test::status_of(test::raw_exchange(s.port(), "GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
    if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(status, 200);
  for (int fd : idle) ::close(fd);
}

TEST(ServerConnections, BodiesOverTheMemoryBudgetGet503BeforeBeingRead) {
  ServerOptions o;
  o.body_memory_bytes = 1000;
  Served s(o);
  const std::string small = R"({"text": "waves", "k": 2})";
  auto ok = test::http_post(s.port(), "/api/search", small, "application/json");
  EXPECT_EQ(ok.status, 200) << ok.body;
  const std::string large = R"({"text": "waves", "k": 2, "path_prefix": ")" + std::string(2000, 'x') + "\"}";
  const auto r = test::http_post(s.port(), "/api/search", large, "application/json");
  EXPECT_EQ(r.status, 503) << r.body;
  ASSERT_TRUE(r.json.is_object()) << r.body;
  EXPECT_NE(r.json["error"].get<std::string>().find("too many request bodies"), std::string::npos) << r.body;
  // The budget was given back: the small body still fits, again and again.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(test::http_post(s.port(), "/api/search", small, "application/json").status, 200);
}

TEST(ServerConnections, PipelinedRequestsAreAnsweredInOrderOnOneConnection) {
  Served s(ServerOptions{});
  const int fd = connect_idle(s.port());
  ASSERT_GE(fd, 0);
  const std::string two = "GET /api/items/987654 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                          "GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(::send(fd, two.data(), two.size(), MSG_NOSIGNAL), static_cast<ssize_t>(two.size()));
  std::string got;
  EXPECT_TRUE(wait_closed(fd, 30, &got));
  ::close(fd);
  const size_t second = got.find("HTTP/1.1 ", 1);
  ASSERT_NE(second, std::string::npos) << got.substr(0, 400);
  EXPECT_EQ(test::status_of(got), 404) << got.substr(0, 400);
  EXPECT_EQ(test::status_of(got.substr(second)), 200) << got.substr(second, 300);
  EXPECT_NE(got.find("\"version\""), std::string::npos);
}

// A write-lane route (the changes of `clipkit serve --writable`) runs on threads of its own: it is
// answered while reads hold every compute thread and more reads queue behind them. Here the reads
// wait for the write, so without the lane the write would queue behind them until they gave up.
TEST(ServerConnections, WritesAreAnsweredWhileReadsHoldEveryComputeThread) {
  server::EventHttpServer http;
  server::TransportLimits limits;
  limits.compute_threads = 1;
  http.set_limits(limits);
  std::mutex mu;
  std::condition_variable cv;
  bool written = false;
  std::atomic<int> reading{0};
  http.Get("/read", [&](const httplib::Request&, httplib::Response& res) {
    ++reading;
    std::unique_lock<std::mutex> lock(mu);
    const bool after = cv.wait_for(lock, std::chrono::seconds(5), [&] { return written; });
    res.set_content(after ? "after the write" : "gave up", "text/plain");
  });
  http.Post(
      "/write",
      [&](const httplib::Request&, httplib::Response& res) {
        {
          const std::lock_guard<std::mutex> lock(mu);
          written = true;
        }
        cv.notify_all();
        res.set_content("written", "text/plain");
      },
      server::Lane::Write);
  const int port = http.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread loop([&] { http.listen_after_bind(); });
  std::vector<test::HttpResult> reads(3);
  std::vector<std::thread> readers;
  for (auto& r : reads) readers.emplace_back([&r, port] { r = test::http_get(port, "/read"); });
  for (int i = 0; i < 500 && reading == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(reading.load(), 1);  // one compute thread: the other reads queue
  const test::HttpResult w = test::http_post(port, "/write", "{}", "application/json");
  EXPECT_EQ(w.status, 200);
  EXPECT_EQ(w.body, "written");
  for (auto& t : readers) t.join();
  for (const auto& r : reads) EXPECT_EQ(r.body, "after the write");
  http.stop();
  loop.join();
}

// A connection answered in memory (SearchServer::answer_connection) gets, byte for byte, what the
// same bytes get over a socket whose client then shuts its sending side: pipelined requests, an
// unknown route, a HEAD, a body over the limit, and a malformed request that ends the connection.
TEST(ServerConnections, AnswersInMemoryAreTheAnswersOverASocket) {
  ServerOptions o;
  o.max_upload_bytes = 64;
  o.port = 0;
  SearchServer server(Index::open(test::server_data().index_dir, Index::Mode::ReadOnly), test::server_data().model, o);
  const std::string big(100, 'x');
  const std::string bytes = "GET /api/items/987654 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                            "HEAD /api/info HTTP/1.1\r\nHost: localhost\r\n\r\n"
                            "GET /api/fields?x=%zz HTTP/1.1\r\nHost: localhost\r\n\r\n"
                            "POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n" + big +
                            "GET /api/info HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n";
  const std::string in_memory = server.answer_connection(bytes);
  EXPECT_EQ(test::status_of(in_memory), 404) << in_memory.substr(0, 300);
  size_t answers = 0;
  for (size_t at = in_memory.find("HTTP/1.1 "); at != std::string::npos; at = in_memory.find("HTTP/1.1 ", at + 1)) ++answers;
  EXPECT_EQ(answers, 5u) << in_memory;
  EXPECT_NE(in_memory.find("HTTP/1.1 413"), std::string::npos) << in_memory;
  EXPECT_NE(in_memory.rfind("HTTP/1.1 400"), std::string::npos) << in_memory;
  server.bind();
  std::thread t([&] { server.run(); });
  ASSERT_TRUE(server.wait_until_running());
  const std::string over_socket = test::raw_exchange(server.port(), bytes, true);
  server.stop();
  t.join();
  EXPECT_EQ(in_memory, over_socket);
  EXPECT_EQ(server.answer_connection(""), "");
  // A stopped server answers nothing, in memory too (and returns at once).
  EXPECT_EQ(server.answer_connection("GET /api/info HTTP/1.1\r\nHost: localhost\r\n\r\n"), "");
}

TEST(ServerConnections, HeadAnswersLikeGetWithoutTheBody) {
  Served s(ServerOptions{});
  const std::string get = test::raw_exchange(s.port(), "GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  const std::string head = test::raw_exchange(s.port(), "HEAD /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", true);
  EXPECT_EQ(test::status_of(head), 200) << head;
  const size_t end = head.find("\r\n\r\n");
  ASSERT_NE(end, std::string::npos);
  EXPECT_EQ(head.size(), end + 4) << "a HEAD answer carries no body";
  const size_t get_end = get.find("\r\n\r\n");
  ASSERT_NE(get_end, std::string::npos);
  EXPECT_NE(head.find("Content-Length: " + std::to_string(get.size() - get_end - 4)), std::string::npos) << head;
}

// An uncompressed 24-bit BMP of width x height pixels (rows padded to 4 bytes), a gradient.
std::string gradient_bmp(int width, int height) {
  const uint32_t row = static_cast<uint32_t>((width * 3 + 3) / 4 * 4), pixels = row * static_cast<uint32_t>(height);
  std::string b = "BM";
  auto le32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) b += static_cast<char>((v >> (8 * i)) & 0xff);
  };
  auto le16 = [&](uint16_t v) {
    b += static_cast<char>(v & 0xff);
    b += static_cast<char>(v >> 8);
  };
  le32(54 + pixels);
  le32(0);
  le32(54);
  le32(40);
  le32(static_cast<uint32_t>(width));
  le32(static_cast<uint32_t>(height));
  le16(1);
  le16(24);
  le32(0);
  le32(pixels);
  le32(2835);
  le32(2835);
  le32(0);
  le32(0);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      b += static_cast<char>(x & 0xff);
      b += static_cast<char>(y & 0xff);
      b += static_cast<char>((x * y) & 0xff);
    }
    b.append(row - static_cast<uint32_t>(width) * 3, '\0');
  }
  return b;
}

// A file above the size the server reads whole is sent in pieces read on the compute threads:
// every byte arrives, for GET, a Range and HEAD alike.
TEST(ServerConnections, LargeFilesAreStreamedInPieces) {
  const std::string dir = test::temp_dir() + "/large-file";
  std::filesystem::create_directories(dir);
  const std::string picture = dir + "/large.bmp";
  const std::string bytes = gradient_bmp(320, 280);
  ASSERT_GT(bytes.size(), 256u << 10);
  std::ofstream(picture, std::ios::binary) << bytes;
  CatalogItem item;
  {
    Index idx = Index::create(dir + "/idx", test::server_data().model->info());
    ASSERT_EQ(idx.add_files({picture}, *test::server_data().model).added, 1);
    ASSERT_TRUE(idx.find_path(picture, &item));
  }
  Served s(ServerOptions{}, dir + "/idx");
  const std::string target = "/api/items/" + std::to_string(item.id) + "/image";
  const auto whole = test::http_get(s.port(), target);
  EXPECT_EQ(whole.status, 200);
  EXPECT_TRUE(whole.body == bytes) << whole.body.size() << " bytes of " << bytes.size();
  httplib::Headers range{{"Range", "bytes=1000-"}};
  const auto part = test::to_result(test::make_client(s.port())->Get(target.c_str(), range));
  EXPECT_EQ(part.status, 206);
  EXPECT_TRUE(part.body == bytes.substr(1000)) << part.body.size() << " bytes of " << bytes.size() - 1000;
  const std::string head =
      test::raw_exchange(s.port(), "HEAD " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", true);
  EXPECT_EQ(test::status_of(head), 200) << head;
  EXPECT_NE(head.find("Content-Length: " + std::to_string(bytes.size())), std::string::npos) << head;
  EXPECT_EQ(head.size(), head.find("\r\n\r\n") + 4) << "a HEAD answer carries no body";
}

TEST(ServerConnections, MalformedMultipartBodiesGet400) {
  Served s(ServerOptions{});
  const std::string body = "--xyz\r\nContent-Disposition: form-data\r\n\r\nno closing boundary";
  const std::string r = test::raw_exchange(s.port(), "POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                     "Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: " +
                                                         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  EXPECT_EQ(test::status_of(r), 400) << r.substr(0, 300);
}

// Every connection is a descriptor: a server raises its soft limit to what its cap needs (the
// cap and 256 more) when the hard limit allows.
TEST(ServerConnections, DescriptorLimitIsRaisedForTheConnectionCap) {
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &before), 0);
  if (before.rlim_max != RLIM_INFINITY && before.rlim_max < 1300) GTEST_SKIP() << "hard descriptor limit " << before.rlim_max;
  rlimit low = before;
  low.rlim_cur = 512;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  {
    ServerOptions o;
    o.max_connections = 1000;
    Served s(o);
    rlimit now{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &now), 0);
    EXPECT_EQ(now.rlim_cur, 1256u);
  }
  ::setrlimit(RLIMIT_NOFILE, &before);
}

TEST(ServerConnections, OptionsAreChecked) {
  const auto& d = test::server_data();
  for (auto bad : {+[](ServerOptions& o) { o.max_connections = 0; }, +[](ServerOptions& o) { o.header_timeout_ms = 0; },
                   +[](ServerOptions& o) { o.body_timeout_ms = -1; }, +[](ServerOptions& o) { o.body_memory_bytes = 0; }}) {
    ServerOptions o;
    bad(o);
    EXPECT_THROW({ SearchServer s(Index::open(d.index_dir, Index::Mode::ReadOnly), d.model, o); }, Error);
  }
}

}  // namespace
}  // namespace clipkit

namespace clipkit {
namespace {

TEST(ServerConnections, CliFlagsAreChecked) {
  const auto& d = test::server_data();
  for (const std::string flag : {"--max-connections", "--header-timeout", "--body-memory-mb"}) {
    const auto r = test::run_cli({"serve", d.index_dir, "--port", "0", flag, "0"});
    EXPECT_EQ(r.exit_code, 1) << flag;
    EXPECT_NE(r.err.find(flag), std::string::npos) << r.err;
  }
  const auto help = test::run_cli({"serve", "--help"});
  for (const char* flag : {"--max-connections", "--header-timeout", "--body-memory-mb"})
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag << "\n" << help.out;
}

}  // namespace
}  // namespace clipkit
