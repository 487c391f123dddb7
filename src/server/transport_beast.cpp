// EventHttpServer over Boost.Beast: one Asio event loop (the thread that calls
// listen_after_bind) owns every socket and runs one coroutine per connection, which reads a
// request, hands it to the compute pool (the write lane's own threads for a write-lane route),
// writes the answer and waits for the next request. Only the handlers (and the production of
// streamed bodies) run on those threads, so a connection that sends nothing, or sends slowly,
// holds no thread.
#include <sys/resource.h>

#include <utility>  // before Boost: asio/awaitable.hpp of Boost 1.74 uses std::exchange without it

// Boost 1.74's Asio enables co_await with clang only for <experimental/coroutine> (libc++);
// clang's C++20 coroutines over libstdc++'s <coroutine> serve as well.
#if defined(__clang__) && defined(__cpp_impl_coroutine) && !defined(BOOST_ASIO_HAS_CO_AWAIT)
#define BOOST_ASIO_HAS_CO_AWAIT 1
#endif

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <string_view>
#include <type_traits>
#include <vector>

#include "server/beast_streams.h"
#include "server/multipart.h"
#include "server/transport.h"

namespace clipkit::server {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
using error_code = boost::system::error_code;
using beast_io::MemoryStream;
using beast_io::Peer;
using beast_io::close_stream;
using beast_io::end_sending;
using beast_io::set_deadline;

// A body larger than the limit is read and dropped (so that the client, still sending, reads the
// answer) when it is at most this large; a larger one closes the connection.
constexpr uint64_t kMaxDrainBytes = 64u << 20;
// Bodies produced by a content provider are written in pieces of about this size.
constexpr size_t kStreamPiece = 256 * 1024;
// After an answer that ends the connection, what the client still sends is read and dropped for
// this long (at most kLingerBytes), so that its unread bytes do not reset the connection before
// it reads the answer.
constexpr std::chrono::milliseconds kLinger{1000};
constexpr size_t kLingerBytes = 1 << 20;

const std::set<std::string> kKnownMethods = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

bool iequals(const std::string& a, const char* b) {
  const size_t n = std::strlen(b);
  if (a.size() != n) return false;
  for (size_t i = 0; i < n; ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

bool safe_header(const std::string& s) { return s.find_first_of("\r\n") == std::string::npos && !s.empty(); }

// Every request the transport hands out is one of these.
struct TimedRequest : httplib::Request {
  std::chrono::steady_clock::time_point start;
};

struct Route {
  std::regex pattern;
  EventHttpServer::Handler handler;
  Lane lane = Lane::Compute;
};

}  // namespace

struct EventHttpServer::Impl {
  template <class Stream>
  struct BasicSession {
    template <class... Args>
    explicit BasicSession(Args&&... args) : stream(std::forward<Args>(args)...) {}
    Stream stream;
    bool idle = true;  // waiting for the client (a request's headers or body): stop() may close it
  };
  using Session = BasicSession<beast::tcp_stream>;

  asio::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  std::unique_ptr<asio::thread_pool> compute;
  std::unique_ptr<asio::thread_pool> writes;  // the write lane's threads
  TransportLimits limits;
  size_t payload_max = std::numeric_limits<size_t>::max();
  std::map<std::string, std::vector<Route>> routes;
  HandlerWithResponse pre_routing;
  Handler error_handler;
  ExceptionHandler exception_handler;
  Expect100ContinueHandler expect_handler;
  httplib::Logger logger;
  httplib::Headers default_headers;
  std::atomic<bool> running{false}, stopping{false};
  std::atomic<size_t> connections{0};
  std::atomic<size_t> body_bytes{0};
  std::set<Session*> sessions;  // touched on the event loop only

  void add_route(const char* method, const std::string& pattern, Handler h, Lane lane = Lane::Compute) {
    routes[method].push_back(Route{std::regex(pattern), std::move(h), lane});
  }

  // The lane of the route that answers `req` (the compute lane when none does).
  Lane lane_of(const httplib::Request& req) const {
    const auto it = routes.find(req.method == "HEAD" ? std::string("GET") : req.method);
    if (it == routes.end()) return Lane::Compute;
    for (const auto& r : it->second)
      if (std::regex_match(req.path, r.pattern)) return r.lane;
    return Lane::Compute;
  }

  // ---- the request budget --------------------------------------------------------------------

  bool take_body_bytes(size_t n) {
    size_t used = body_bytes.load();
    do {
      if (n > limits.body_memory_bytes || used > limits.body_memory_bytes - n) return false;
    } while (!body_bytes.compare_exchange_weak(used, used + n));
    return true;
  }

  // ---- routing (compute threads) -------------------------------------------------------------

  // Runs `f`, turning an exception into the exception handler's answer (500 by default).
  template <class F>
  void guard(httplib::Request& req, httplib::Response& res, F&& f) {
    try {
      f();
    } catch (...) {
      res.status = 500;
      if (exception_handler) {
        try {
          exception_handler(req, res, std::current_exception());
        } catch (...) {
          res.status = 500;
        }
      }
    }
  }

  // The error handler's turn on an answer of 400 or more, and the default status.
  void finish(httplib::Request& req, httplib::Response& res) {
    if (res.status == -1) res.status = 200;
    if (res.status >= 400 && error_handler) {
      try {
        error_handler(req, res);
      } catch (...) {
      }
    }
  }

  // The pre-routing handler, on the request's head (before its body is read). True when it
  // answered the request.
  bool pre_route(httplib::Request& req, httplib::Response& res) {
    if (!pre_routing) return false;
    bool handled = false;
    guard(req, res, [&] { handled = pre_routing(req, res) == HandlerResponse::Handled; });
    if (res.status >= 500) handled = true;  // it threw
    if (handled) finish(req, res);
    return handled;
  }

  void route(httplib::Request& req, httplib::Response& res) {
    guard(req, res, [&] {
      bool handled = false;
      if (req.is_multipart_form_data() && !parse_multipart_form(req.get_header_value("Content-Type"), req.body, &req.files)) {
        res.status = 400;
        handled = true;
      }
      if (!handled) {
        const bool known = kKnownMethods.count(req.method) > 0;
        const auto it = routes.find(req.method == "HEAD" ? std::string("GET") : req.method);
        if (known && it != routes.end()) {
          for (const auto& r : it->second) {
            if (!std::regex_match(req.path, req.matches, r.pattern)) continue;
            r.handler(req, res);
            handled = true;
            break;
          }
        }
        if (!handled) res.status = known ? 404 : 400;
      }
    });
    finish(req, res);
  }

  void log(const httplib::Request& req, const httplib::Response& res) {
    if (!logger) return;
    try {
      logger(req, res);
    } catch (...) {
    }
  }

  // Runs `f` on the compute pool (or the write lane's); the caller resumes on the event loop. A
  // connection answered in memory runs `f` on its own thread (a pool may be serving sockets at the
  // same time, or gone).
  template <class S, class F>
  awaitable<void> on_compute(const S&, F&& f, Lane lane = Lane::Compute) {
    if constexpr (std::is_same_v<S, BasicSession<MemoryStream>>) {
      f();
      co_return;
    } else {
      co_await asio::co_spawn(
          (lane == Lane::Write ? writes : compute)->get_executor(),
          [&f]() -> awaitable<void> {
            f();
            co_return;
          },
          use_awaitable);
    }
  }

  // ---- writing -------------------------------------------------------------------------------

  // The status line and headers of `res`, with Content-Length set to `length`.
  std::string head_of(const httplib::Response& res, uint64_t length, bool keep_alive) const {
    const auto reason = http::obsolete_reason(static_cast<http::status>(res.status));
    std::string head = "HTTP/1.1 " + std::to_string(res.status) + " " +
                       (reason.empty() || reason == "<unknown-status>" ? std::string("Unknown") : std::string(reason)) + "\r\n";
    for (const auto& [k, v] : default_headers)
      if (!res.has_header(k.c_str())) head += k + ": " + v + "\r\n";
    for (const auto& [k, v] : res.headers) {
      if (iequals(k, "Content-Length") || iequals(k, "Connection") || iequals(k, "Transfer-Encoding")) continue;
      if (safe_header(k) && v.find_first_of("\r\n") == std::string::npos) head += k + ": " + v + "\r\n";
    }
    head += "Content-Length: " + std::to_string(length) + "\r\n";
    if (!keep_alive) head += "Connection: close\r\n";
    return head + "\r\n";
  }

  // Writes `res` (its body, or what its content provider gives); false when the connection
  // failed on the way.
  template <class S>
  awaitable<bool> write_response(S& s, httplib::Response& res, bool keep_alive, bool head_only) {
    error_code ec;
    const bool provided = static_cast<bool>(res.content_provider_);
    const uint64_t length = provided ? res.content_length_ : res.body.size();
    const std::string head = head_of(res, length, keep_alive);
    set_deadline(s.stream, limits.write_timeout);
    if (head_only || length == 0) {
      co_await asio::async_write(s.stream, asio::buffer(head), asio::redirect_error(use_awaitable, ec));
      co_return !ec;
    }
    if (!provided) {
      const std::array<asio::const_buffer, 2> parts{asio::buffer(head), asio::buffer(res.body)};
      co_await asio::async_write(s.stream, parts, asio::redirect_error(use_awaitable, ec));
      co_return !ec;
    }
    co_await asio::async_write(s.stream, asio::buffer(head), asio::redirect_error(use_awaitable, ec));
    if (ec) co_return false;
    std::string piece;
    uint64_t offset = 0;
    bool ok = true;
    while (offset < length) {
      piece.clear();
      auto produce = [&] {
        httplib::DataSink sink;
        sink.write = [&](const char* d, size_t n) {
          piece.append(d, n);
          return true;
        };
        sink.is_writable = [] { return true; };
        sink.done = [] {};
        try {
          while (ok && piece.size() < kStreamPiece && offset + piece.size() < length) {
            const size_t before = piece.size();
            ok = res.content_provider_(static_cast<size_t>(offset + before), static_cast<size_t>(length - offset - before), sink);
            if (piece.size() == before) ok = false;  // no progress
          }
        } catch (...) {
          ok = false;
        }
      };
      co_await on_compute(s, produce);
      if (piece.size() > length - offset) piece.resize(static_cast<size_t>(length - offset));
      if (!piece.empty()) {
        set_deadline(s.stream, limits.write_timeout);
        co_await asio::async_write(s.stream, asio::buffer(piece), asio::redirect_error(use_awaitable, ec));
        if (ec) co_return false;
        offset += piece.size();
      }
      if (!ok && offset < length) break;
    }
    res.content_provider_success_ = offset == length;
    co_return offset == length;
  }

  // Reads and drops `n` body bytes (the first of them may already be in `buf`).
  template <class S>
  awaitable<bool> drain(S& s, beast::flat_buffer& buf, uint64_t n) {
    const uint64_t have = std::min<uint64_t>(buf.size(), n);
    buf.consume(static_cast<size_t>(have));
    n -= have;
    set_deadline(s.stream, limits.body_timeout);
    char tmp[16384];
    s.idle = true;
    struct Busy {
      bool& idle;
      ~Busy() { idle = false; }
    } busy{s.idle};
    while (n > 0) {
      error_code ec;
      const size_t got = co_await s.stream.async_read_some(asio::buffer(tmp, static_cast<size_t>(std::min<uint64_t>(n, sizeof tmp))),
                                                           asio::redirect_error(use_awaitable, ec));
      if (ec) co_return false;
      n -= got;
    }
    co_return true;
  }

  // Ends the connection after a last answer: no more writes, what the client still sends is
  // read for a moment, then the socket is closed.
  template <class S>
  awaitable<void> linger_close(S& s) {
    error_code ec;
    end_sending(s.stream);
    set_deadline(s.stream, kLinger);
    char tmp[16384];
    size_t total = 0;
    while (!ec && total < kLingerBytes) {
      const size_t got = co_await s.stream.async_read_some(asio::buffer(tmp), asio::redirect_error(use_awaitable, ec));
      total += got;
    }
    close_stream(s.stream);
  }

  // An answer of the transport's own (a refused request): a JSON error, logged, then the end of
  // the connection unless `keep_alive`.
  // (Coroutines here take no temporaries in a co_await's expression, and no co_await sits in a
  // condition: GCC 12 mishandles both.)
  template <class S>
  awaitable<bool> refuse(S& s, const httplib::Request& req, int status, std::string message, bool keep_alive = false) {
    httplib::Response res;
    res.status = status;
    res.set_content("{\"error\":" + json_string(message) + "}", "application/json; charset=utf-8");
    if (status == 503) res.set_header("Retry-After", "1");
    log(req, res);
    const bool head_only = req.method == "HEAD";
    const bool ok = co_await write_response(s, res, keep_alive, head_only);
    if (!keep_alive) co_await linger_close(s);
    co_return ok;
  }

  // ---- connections ---------------------------------------------------------------------------

  awaitable<void> refuse_connection(tcp::socket socket) {
    Session s(std::move(socket));
    TimedRequest req;
    req.start = std::chrono::steady_clock::now();
    std::string message = "the server has too many open connections (" + std::to_string(limits.max_connections) + "); retry later";
    co_await refuse(s, req, 503, std::move(message));
  }

  awaitable<void> session(tcp::socket socket) {
    Session s(std::move(socket));
    sessions.insert(&s);
    struct Leave {
      Impl& m;
      Session& s;
      ~Leave() {
        m.sessions.erase(&s);
        --m.connections;
      }
    } leave{*this, s};
    error_code ec;
    s.stream.socket().set_option(tcp::no_delay(true), ec);
    Peer peer;
    {
      const auto r = s.stream.socket().remote_endpoint(ec);
      if (!ec) peer.remote_addr = r.address().to_string(), peer.remote_port = r.port();
      const auto l = s.stream.socket().local_endpoint(ec);
      if (!ec) peer.local_addr = l.address().to_string(), peer.local_port = l.port();
    }
    co_await serve(s, peer);
    close_stream(s.stream);
  }

  // The requests of one connection, answered in turn until it ends.
  template <class S>
  awaitable<void> serve(S& s, const Peer& peer) {
    error_code ec;
    beast::flat_buffer buf;
    bool first = true;
    while (!stopping) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(std::min<size_t>(limits.max_header_bytes, UINT32_MAX)));
      parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // checked below, against payload_max
      s.idle = true;
      set_deadline(s.stream, first ? limits.header_timeout : limits.keep_alive_timeout);
      ec = {};
      co_await http::async_read_header(s.stream, buf, parser, asio::redirect_error(use_awaitable, ec));
      s.idle = false;
      TimedRequest req;
      req.start = std::chrono::steady_clock::now();
      req.remote_addr = peer.remote_addr;
      req.remote_port = peer.remote_port;
      req.local_addr = peer.local_addr;
      req.local_port = peer.local_port;
      if (ec) {
        // A connection closed or left idle between requests ends quietly; a request that came
        // in part, or malformed, gets an answer first.
        if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::operation_aborted ||
            ec == asio::error::connection_reset || ec == asio::error::broken_pipe)
          break;
        int status = 400;
        std::string message = "malformed request: " + ec.message();
        // A deadline closes the socket: a client too slow to send its headers gets no answer.
        if (ec == beast::error::timeout) break;
        if (ec == http::error::header_limit) {
          const std::string_view seen(static_cast<const char*>(buf.data().data()), buf.size());
          const size_t eol = seen.find("\r\n");
          if (eol == std::string_view::npos || eol > limits.max_request_line) {
            status = 414;
            message = "the request line is longer than " + std::to_string(limits.max_request_line) + " bytes";
          } else {
            status = 431;
            message = "the request's headers are larger than " + std::to_string(limits.max_header_bytes) + " bytes";
          }
        } else if (ec == http::error::bad_content_length) {
          message = "the request has a malformed or conflicting Content-Length";
        }
        co_await refuse(s, req, status, std::move(message));
        break;
      }
      first = false;

      // The request's head, as cpp-httplib gives it.
      const auto& h = parser.get();
      req.method = std::string(h.method_string());
      req.target = std::string(h.target());
      req.version = h.version() == 10 ? "HTTP/1.0" : "HTTP/1.1";
      for (const auto& f : h) req.headers.emplace(std::string(f.name_string()), std::string(f.value()));
      bool keep_alive = h.keep_alive() && h.version() == 11;
      if (req.target.empty() || req.target[0] != '/') {
        std::string message = "the request target must be a path";
        co_await refuse(s, req, 400, std::move(message));
        break;
      }
      {
        const size_t q = req.target.find('?');
        req.path = httplib::detail::decode_url(req.target.substr(0, q), false);
        if (q != std::string::npos) httplib::detail::parse_query_text(req.target.substr(q + 1), req.params);
      }

      // The body: announced with a Content-Length, bounded, and counted in the memory budget.
      const bool chunked = parser.chunked();
      const uint64_t length = parser.content_length() ? *parser.content_length() : 0;
      const bool expects = iequals(req.get_header_value("Expect"), "100-continue") && length > 0 && !chunked;
      if (expects && expect_handler) {
        httplib::Response res;
        int status = 100;
        try {
          status = expect_handler(req, res);
        } catch (...) {
          status = 500;
        }
        if (status != 100 && status != 417) {
          res.status = status;
          if (res.body.empty() && error_handler) error_handler(req, res);
          log(req, res);
          const bool head_only = req.method == "HEAD";
          co_await write_response(s, res, false, head_only);
          co_await linger_close(s);
          break;
        }
      }
      if (length > payload_max) {
        std::string message = "request body is larger than the limit of " + std::to_string(payload_max) + " bytes";
        bool drained = false;
        if (!expects && length <= kMaxDrainBytes) drained = co_await drain(s, buf, length);
        const bool keep = drained && keep_alive;
        const bool answered = co_await refuse(s, req, 413, std::move(message), keep);
        if (answered && keep) continue;
        break;
      }
      // The checks every request must pass (Host, token, ...), on its head alone.
      {
        httplib::Response res;
        res.version = "HTTP/1.1";
        if (pre_route(req, res)) {
          // A body left unread ends the connection.
          if (length > 0 || chunked) keep_alive = false;
          if (stopping || iequals(res.get_header_value("Connection"), "close")) keep_alive = false;
          log(req, res);
          const bool head_only = req.method == "HEAD";
          const bool written = co_await write_response(s, res, keep_alive, head_only);
          if (written && keep_alive) continue;
          if (written) co_await linger_close(s);
          break;
        }
      }
      size_t held = 0;
      if (length > 0 && !chunked) {
        if (!take_body_bytes(static_cast<size_t>(length))) {
          std::string message = "the server is receiving too many request bodies at once; retry in a moment";
          bool drained = false;
          if (!expects && length <= kMaxDrainBytes) drained = co_await drain(s, buf, length);
          const bool keep = drained && keep_alive;
          const bool answered = co_await refuse(s, req, 503, std::move(message), keep);
          if (answered && keep) continue;
          break;
        }
        held = static_cast<size_t>(length);
      }
      struct GiveBack {
        Impl& m;
        size_t n;
        ~GiveBack() { m.body_bytes -= n; }
      } give_back{*this, held};
      if (expects) {
        set_deadline(s.stream, limits.write_timeout);
        static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        co_await asio::async_write(s.stream, asio::buffer(kContinue), asio::redirect_error(use_awaitable, ec));
        if (ec) break;
      }
      if (chunked) {
        keep_alive = false;  // the body is not read: the handlers see none and the connection ends
      } else if (length > 0) {
        parser.body_limit(length);
        set_deadline(s.stream, limits.body_timeout);
        s.idle = true;
        co_await http::async_read(s.stream, buf, parser, asio::redirect_error(use_awaitable, ec));
        s.idle = false;
        if (ec) {
          break;  // the client went away, or was too slow (the deadline closed the socket)
        }
        req.body = std::move(parser.get().body());
      }

      httplib::Response res;
      res.version = "HTTP/1.1";
      auto answer = [&] {
        route(req, res);
        if (!res.has_header("Content-Length"))
          res.set_header("Content-Length", std::to_string(res.content_provider_ ? res.content_length_ : res.body.size()));
        log(req, res);
      };
      co_await on_compute(s, answer, lane_of(req));
      if (stopping || iequals(res.get_header_value("Connection"), "close")) keep_alive = false;
      const bool head_only = req.method == "HEAD";
      const bool written = co_await write_response(s, res, keep_alive, head_only);
      if (!written) break;
      if (!keep_alive) {
        co_await linger_close(s);
        break;
      }
    }
  }

  awaitable<void> accept_loop() {
    for (;;) {
      error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(use_awaitable, ec));
      if (stopping) co_return;
      if (ec) {
        if (ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) co_return;
        // Out of descriptors or memory for a moment: wait instead of spinning.
        asio::steady_timer pause(ioc, std::chrono::milliseconds(50));
        co_await pause.async_wait(asio::redirect_error(use_awaitable, ec));
        continue;
      }
      if (connections.load() >= limits.max_connections) {
        asio::co_spawn(ioc, refuse_connection(std::move(socket)), asio::detached);
        continue;
      }
      ++connections;
      asio::co_spawn(ioc, session(std::move(socket)), asio::detached);
    }
  }

  bool bind(const std::string& host, int port) {
    error_code ec;
    tcp::endpoint ep;
    const auto addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
    if (!ec) {
      ep = tcp::endpoint(addr, static_cast<unsigned short>(port));
    } else {
      tcp::resolver resolver(ioc);
      const auto found = resolver.resolve(host, std::to_string(port), tcp::resolver::numeric_service, ec);
      if (ec || found.empty()) return false;
      ep = found.begin()->endpoint();
    }
    acceptor.open(ep.protocol(), ec);
    if (ec) return false;
    // SO_REUSEADDR only: SO_REUSEPORT would let a second server share the port.
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    acceptor.bind(ep, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      error_code ignored;
      acceptor.close(ignored);
      return false;
    }
    return true;
  }
};

EventHttpServer::EventHttpServer() : impl_(std::make_unique<Impl>()) {}

EventHttpServer::~EventHttpServer() {
  stop();
  close_listener();
}

EventHttpServer& EventHttpServer::Get(const std::string& p, Handler h) {
  impl_->add_route("GET", p, std::move(h));
  return *this;
}
EventHttpServer& EventHttpServer::Post(const std::string& p, Handler h, Lane lane) {
  impl_->add_route("POST", p, std::move(h), lane);
  return *this;
}
EventHttpServer& EventHttpServer::Delete(const std::string& p, Handler h, Lane lane) {
  impl_->add_route("DELETE", p, std::move(h), lane);
  return *this;
}
EventHttpServer& EventHttpServer::Patch(const std::string& p, Handler h, Lane lane) {
  impl_->add_route("PATCH", p, std::move(h), lane);
  return *this;
}
EventHttpServer& EventHttpServer::set_pre_routing_handler(HandlerWithResponse h) {
  impl_->pre_routing = std::move(h);
  return *this;
}
EventHttpServer& EventHttpServer::set_error_handler(Handler h) {
  impl_->error_handler = std::move(h);
  return *this;
}
EventHttpServer& EventHttpServer::set_exception_handler(ExceptionHandler h) {
  impl_->exception_handler = std::move(h);
  return *this;
}
EventHttpServer& EventHttpServer::set_expect_100_continue_handler(Expect100ContinueHandler h) {
  impl_->expect_handler = std::move(h);
  return *this;
}
EventHttpServer& EventHttpServer::set_logger(httplib::Logger l) {
  impl_->logger = std::move(l);
  return *this;
}
EventHttpServer& EventHttpServer::set_default_headers(httplib::Headers h) {
  impl_->default_headers = std::move(h);
  return *this;
}
EventHttpServer& EventHttpServer::set_payload_max_length(size_t length) {
  impl_->payload_max = length;
  return *this;
}
EventHttpServer& EventHttpServer::set_limits(const TransportLimits& limits) {
  impl_->limits = limits;
  impl_->limits.compute_threads = std::max(1, limits.compute_threads);
  impl_->limits.write_threads = std::max(1, limits.write_threads);
  impl_->limits.max_connections = std::max<size_t>(1, limits.max_connections);
  return *this;
}

bool EventHttpServer::bind_to_port(const std::string& host, int port) { return impl_->bind(host, port); }

int EventHttpServer::bind_to_any_port(const std::string& host) {
  if (!impl_->bind(host, 0)) return -1;
  error_code ec;
  const auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? -1 : ep.port();
}

bool EventHttpServer::listen_after_bind() {
  Impl& m = *impl_;
  if (m.stopping || !m.acceptor.is_open()) return false;
  // Every connection is a descriptor: let the process have enough of them when the system allows.
  rlimit fds{};
  if (::getrlimit(RLIMIT_NOFILE, &fds) == 0) {
    const rlim_t want = static_cast<rlim_t>(m.limits.max_connections) + 256;
    if (fds.rlim_cur != RLIM_INFINITY && fds.rlim_cur < want) {
      fds.rlim_cur = fds.rlim_max == RLIM_INFINITY ? want : std::min(want, fds.rlim_max);
      ::setrlimit(RLIMIT_NOFILE, &fds);
    }
  }
  m.compute = std::make_unique<asio::thread_pool>(static_cast<size_t>(m.limits.compute_threads));
  m.writes = std::make_unique<asio::thread_pool>(static_cast<size_t>(m.limits.write_threads));
  asio::co_spawn(m.ioc, m.accept_loop(), asio::detached);
  m.running = true;
  m.ioc.run();
  m.running = false;
  m.compute->join();
  m.writes->join();
  return true;
}

std::string EventHttpServer::answer_connection(std::string_view bytes) {
  Impl& m = *impl_;
  asio::io_context ioc{1};
  std::string out;
  Impl::BasicSession<MemoryStream> s(ioc.get_executor(), bytes, &out);
  const Peer peer{"127.0.0.1", "127.0.0.1", 0, 0};
  asio::co_spawn(ioc, m.serve(s, peer), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  ioc.run();
  return out;
}

bool EventHttpServer::is_running() const { return impl_->running; }

void EventHttpServer::stop() {
  Impl& m = *impl_;
  if (m.stopping.exchange(true)) return;
  asio::post(m.ioc, [&m] {
    error_code ec;
    m.acceptor.close(ec);
    for (auto* s : m.sessions)
      if (s->idle) s->stream.socket().close(ec);
  });
}

void EventHttpServer::close_listener() {
  if (impl_->running) return;
  error_code ec;
  impl_->acceptor.close(ec);
}

std::chrono::steady_clock::time_point EventHttpServer::request_start(const httplib::Request& req) {
  return static_cast<const TimedRequest&>(req).start;
}

}  // namespace clipkit::server
