// The clients of bench/serve_load.py in one native process: CLIENTS connections to a server on
// 127.0.0.1:PORT, each sending the next request as soon as its answer is in (a closed loop, kept
// alive), for DURATION seconds, with the same mix of requests as serve_load.py's Python clients:
// 5% uploads to /api/search/image (with --upload), 50% text searches, 20% similar items, 15%
// item images, 10% item records. One event loop (epoll), so that the client costs a few
// microseconds per request and the server, not the client, is measured on a small machine.
//
//   serve_load_client --port P --clients 200 --duration 60 --ids 1,2,3 [--upload FILE] [--fresh F]
//
// --fresh F makes that fraction of the text searches new ones (a word and a number never sent
// before): neither their answers nor their query vectors can come from the server's caches,
// which then fill up and evict (a soak's check that they stay bounded).
//
// Prints one JSON line: requests, latency percentiles (from the first byte sent to the last byte
// of the answer), errors by kind (time-out, refused, reset, closed, non-2xx status), the 99th
// percentile per route. Exit status 0 when there was no error.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

const char* const kWords[] = {"striped", "polka+dot", "checkered", "floral", "plaid", "zigzag", "leopard+print", "plain",
                              "red",     "blue",      "scarf",     "dress",  "sock",  "hat",    "a+photo+of+a+cat", "waves"};

enum Route { kUpload, kSearch, kSimilar, kImage, kItem, kRoutes };
const char* const kRouteNames[kRoutes] = {"upload", "search", "similar", "image", "item"};

struct Conn {
  int fd = -1;
  std::mt19937_64 rnd;
  std::string out;        // the request being sent
  size_t sent = 0;
  std::string in;         // what came back so far
  size_t body_at = 0;     // where the body starts (0: head not complete)
  size_t need = 0;        // head + body bytes of the answer
  int status = 0;
  bool close_after = false;
  Route route = kSearch;
  Clock::time_point t0, retry_at;
  bool busy = false;
};

struct Options {
  int port = 0, clients = 200;
  double duration = 60, timeout = 10;
  std::vector<std::string> ids;
  std::string upload;
  bool have_upload = false;
  double fresh = 0;
};

unsigned long long g_fresh_counter = 0;

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "serve_load_client: %s\nusage: serve_load_client --port P [--clients N] [--duration S] [--timeout S] [--ids 1,2,3] [--upload FILE] [--fresh F]\n", why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + a).c_str());
    const std::string v = argv[++i];
    if (a == "--port") {
      o.port = std::atoi(v.c_str());
    } else if (a == "--clients") {
      o.clients = std::atoi(v.c_str());
    } else if (a == "--duration") {
      o.duration = std::atof(v.c_str());
    } else if (a == "--timeout") {
      o.timeout = std::atof(v.c_str());
    } else if (a == "--ids") {
      size_t at = 0;
      while (at <= v.size()) {
        const size_t comma = std::min(v.find(',', at), v.size());
        if (comma > at) o.ids.push_back(v.substr(at, comma - at));
        at = comma + 1;
      }
    } else if (a == "--fresh") {
      o.fresh = std::atof(v.c_str());
    } else if (a == "--upload") {
      std::ifstream f(v, std::ios::binary);
      if (!f) usage(("cannot read " + v).c_str());
      o.upload.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
      o.have_upload = true;
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  if (o.port <= 0 || o.clients <= 0 || o.duration <= 0 || o.timeout <= 0) usage("give --port, and positive --clients, --duration, --timeout");
  return o;
}

void next_request(Conn& c, const Options& o) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double r = u(c.rnd);
  auto id = [&] { return o.ids[std::uniform_int_distribution<size_t>(0, o.ids.size() - 1)(c.rnd)]; };
  c.out.clear();
  if (o.have_upload && r < 0.05) {
    c.route = kUpload;
    c.out = "POST /api/search/image?k=10 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
            std::to_string(o.upload.size()) + "\r\n\r\n" + o.upload;
  } else if (r < 0.55 || o.ids.empty()) {
    c.route = kSearch;
    const char* w = kWords[std::uniform_int_distribution<size_t>(0, std::size(kWords) - 1)(c.rnd)];
    std::string text = w;
    if (o.fresh > 0 && u(c.rnd) < o.fresh) text += "+" + std::to_string(++g_fresh_counter);
    c.out = "GET /api/search?text=" + text + "&k=20 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  } else if (r < 0.75) {
    c.route = kSimilar;
    c.out = "GET /api/similar/" + id() + "?k=20 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  } else if (r < 0.90) {
    c.route = kImage;
    c.out = "GET /api/items/" + id() + "/image HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  } else {
    c.route = kItem;
    c.out = "GET /api/items/" + id() + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  }
  c.sent = 0;
  c.in.clear();
  c.body_at = 0;
  c.need = 0;
  c.status = 0;
  c.close_after = false;
}

bool iequals_prefix(const std::string& s, size_t at, const char* name) {
  const size_t n = std::strlen(name);
  if (at + n > s.size()) return false;
  for (size_t i = 0; i < n; ++i)
    if (std::tolower(static_cast<unsigned char>(s[at + i])) != name[i]) return false;
  return true;
}

// Parses the head once it is complete; false on a malformed answer.
bool parse_head(Conn& c) {
  const size_t end = c.in.find("\r\n\r\n");
  if (end == std::string::npos) return true;
  c.body_at = end + 4;
  if (c.in.compare(0, 9, "HTTP/1.1 ") != 0) return false;
  c.status = std::atoi(c.in.c_str() + 9);
  size_t length = 0;
  for (size_t at = c.in.find("\r\n") + 2; at < end; at = c.in.find("\r\n", at) + 2) {
    if (iequals_prefix(c.in, at, "content-length:")) length = std::strtoull(c.in.c_str() + at + 15, nullptr, 10);
    if (iequals_prefix(c.in, at, "connection:") && c.in.compare(at + 11, 6, " close") == 0) c.close_after = true;
  }
  c.need = c.body_at + length;
  return c.status > 0;
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5))];
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const int ep = epoll_create1(0);
  std::vector<Conn> conns(static_cast<size_t>(o.clients));
  std::vector<double> all;
  std::vector<double> by_route[kRoutes];
  std::map<std::string, long> errors;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(o.port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const auto start = Clock::now();
  const auto stop_at = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration));
  const auto timeout = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.timeout));

  auto drop = [&](Conn& c, const char* why) {
    if (why) ++errors[why];
    if (c.fd >= 0) {
      epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
      ::close(c.fd);
    }
    c.fd = -1;
    c.busy = false;
    c.retry_at = Clock::now() + (why ? std::chrono::milliseconds(50) : std::chrono::milliseconds(0));
  };
  auto send_some = [&](size_t i) {
    Conn& c = conns[i];
    while (c.sent < c.out.size()) {
      const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        epoll_event ev{EPOLLIN | EPOLLOUT, {}};
        ev.data.u64 = i;
        epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
        return;
      }
      if (n <= 0) return drop(c, errno == ECONNRESET || errno == EPIPE ? "reset" : "send failed");
      c.sent += static_cast<size_t>(n);
    }
  };
  auto start_request = [&](size_t i) {
    Conn& c = conns[i];
    if (c.fd < 0) {
      c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (::connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(c.fd);
        c.fd = -1;
        ++errors["refused"];
        c.retry_at = Clock::now() + std::chrono::milliseconds(50);
        return;
      }
      const int one = 1;
      ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) | O_NONBLOCK);
      epoll_event ev{EPOLLIN, {}};
      ev.data.u64 = i;
      epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
    }
    next_request(c, o);
    c.busy = true;
    c.t0 = Clock::now();
    send_some(i);
  };

  for (size_t i = 0; i < conns.size(); ++i) {
    conns[i].rnd.seed(i + 1);
    start_request(i);
  }
  std::vector<epoll_event> events(conns.size());
  char buf[64 * 1024];
  while (true) {
    const auto now = Clock::now();
    if (now >= stop_at) break;
    const int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 20);
    for (int e = 0; e < n; ++e) {
      const size_t i = events[e].data.u64;
      Conn& c = conns[i];
      if (c.fd < 0 || !c.busy) continue;
      if (events[e].events & EPOLLOUT) {
        send_some(i);
        if (c.fd >= 0 && c.sent == c.out.size()) {
          epoll_event ev{EPOLLIN, {}};
          ev.data.u64 = i;
          epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
        }
        if (c.fd < 0) continue;
      }
      if (!(events[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
      bool done = false;
      while (true) {
        const ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (r <= 0) {
          drop(c, r == 0 ? "closed by the server" : "reset");
          break;
        }
        c.in.append(buf, static_cast<size_t>(r));
        if (c.body_at == 0 && !parse_head(c)) {
          drop(c, "malformed answer");
          break;
        }
        if (c.body_at != 0 && c.in.size() >= c.need) {
          done = true;
          break;
        }
      }
      if (!done) continue;
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - c.t0).count();
      all.push_back(ms);
      by_route[c.route].push_back(ms);
      if (c.status >= 300) ++errors["status " + std::to_string(c.status)];
      c.busy = false;
      if (c.close_after) drop(c, nullptr);
      if (Clock::now() < stop_at && c.fd >= 0) start_request(i);
    }
    const auto after = Clock::now();
    for (size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      if (c.busy && after - c.t0 > timeout) drop(c, "time-out");
      if (!c.busy && after >= c.retry_at && after < stop_at) start_request(i);
    }
  }
  // Requests still in flight at the end are neither counted nor errors, as in serve_load.py.
  long n_errors = 0;
  std::string kinds;
  for (const auto& [k, v] : errors) {
    n_errors += v;
    kinds += (kinds.empty() ? "" : ", ") + ("\"" + k + "\": " + std::to_string(v));
  }
  std::string routes;
  for (int r = 0; r < kRoutes; ++r)
    if (!by_route[r].empty())
      routes += (routes.empty() ? "" : ", ") + ("\"" + std::string(kRouteNames[r]) + "\": " + std::to_string(pct(by_route[r], 99)));
  std::string counts;
  for (int r = 0; r < kRoutes; ++r)
    if (!by_route[r].empty())
      counts += (counts.empty() ? "" : ", ") + ("\"" + std::string(kRouteNames[r]) + "\": " + std::to_string(by_route[r].size()));
  std::printf(
      "{\"requests\": %zu, \"p50_ms\": %.2f, \"p90_ms\": %.2f, \"p99_ms\": %.2f, \"max_ms\": %.2f, \"errors\": %ld, "
      "\"error_kinds\": {%s}, \"p99_ms_by_route\": {%s}, \"requests_by_route\": {%s}}\n",
      all.size(), pct(all, 50), pct(all, 90), pct(all, 99), all.empty() ? 0.0 : *std::max_element(all.begin(), all.end()), n_errors,
      kinds.c_str(), routes.c_str(), counts.c_str());
  for (auto& c : conns)
    if (c.fd >= 0) ::close(c.fd);
  ::close(ep);
  return n_errors == 0 ? 0 : 1;
}
