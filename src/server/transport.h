// The HTTP transport of `clipkit serve`: an event-driven HTTP/1.1 server (Boost.Beast over
// Boost.Asio, one event-loop thread for every connection) with the handlers run on a separate
// pool of compute threads.
//
// Routes are registered as with cpp-httplib's Server (Get/Post/Put/Delete/Patch with a regular
// expression and a handler taking httplib::Request and httplib::Response), and requests and
// responses are those plain httplib structures: route code does not depend on the transport.
// What the transport adds is the handling of connections: an idle or slow connection costs a
// socket and a few kilobytes, not a thread; every phase of a request has a deadline; the number of
// open connections and the memory of request bodies held at once are capped.
//
// Of httplib::Request the transport fills method, target, path (decoded), params, headers, body,
// files (multipart/form-data), matches, version and the remote and local address; `ranges` stays
// empty. Of httplib::Response it reads status, headers, body, and a content provider with a
// length (set_content_provider(length, ...)), whose output is written in pieces produced on the
// compute threads; providers without a length (chunked answers) are not supported. A chunked
// request body is not read: the handlers see an empty body and the connection is closed after
// the answer.
//
// Routes registered on the write lane (Lane::Write: the changes of the index) run on threads of
// their own (`write_threads`), not on the compute pool: a change never queues behind the reads
// waiting for a compute thread, however many there are.
#pragma once

#include <httplib.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace clipkit::server {

struct TransportLimits {
  size_t max_connections = 2048;        // open connections; more are answered 503 and closed
  size_t max_header_bytes = 16 * 1024;  // request line and headers; beyond: 431 (414 for the line)
  size_t max_request_line = 8192;       // request line alone; beyond: 414
  // Deadlines: from the connection's start to the end of its first request's headers; between
  // two requests of a kept-alive connection (to the end of the next headers); for a whole body;
  // for writing a whole response.
  std::chrono::milliseconds header_timeout{10000};
  std::chrono::milliseconds keep_alive_timeout{5000};
  std::chrono::milliseconds body_timeout{60000};
  std::chrono::milliseconds write_timeout{60000};
  // Request bodies held at once, all connections together: a body that does not fit is
  // answered 503 before it is read.
  size_t body_memory_bytes = 256u << 20;
  int compute_threads = 8;  // handlers run at once (the compute lane)
  int write_threads = 1;    // handlers of write-lane routes run at once, beside those
};

// The threads a route's handler runs on (see the top of this file).
enum class Lane { Compute, Write };

class EventHttpServer {
 public:
  using Handler = httplib::Server::Handler;
  using HandlerWithResponse = httplib::Server::HandlerWithResponse;
  using ExceptionHandler = httplib::Server::ExceptionHandler;
  using Expect100ContinueHandler = httplib::Server::Expect100ContinueHandler;
  using HandlerResponse = httplib::Server::HandlerResponse;

  EventHttpServer();
  ~EventHttpServer();
  EventHttpServer(const EventHttpServer&) = delete;
  EventHttpServer& operator=(const EventHttpServer&) = delete;

  // Routes: the pattern must match the whole decoded path (req.matches holds its groups). HEAD
  // requests are answered by the GET routes, without the body.
  EventHttpServer& Get(const std::string& pattern, Handler handler);
  EventHttpServer& Post(const std::string& pattern, Handler handler, Lane lane = Lane::Compute);
  EventHttpServer& Delete(const std::string& pattern, Handler handler, Lane lane = Lane::Compute);
  EventHttpServer& Patch(const std::string& pattern, Handler handler, Lane lane = Lane::Compute);

  // Called on the request's head, before its body is read (on the event loop: it must not
  // block); Handled answers the request with `res` and skips the routes.
  EventHttpServer& set_pre_routing_handler(HandlerWithResponse handler);
  // Called after routing for every answer with a status of 400 or more.
  EventHttpServer& set_error_handler(Handler handler);
  // Called when a handler throws (the status is then 500 unless it sets another).
  EventHttpServer& set_exception_handler(ExceptionHandler handler);
  // Called for a request with "Expect: 100-continue" before its body is read: 100 lets the body
  // come, any other status is answered with `res` and the connection closed.
  EventHttpServer& set_expect_100_continue_handler(Expect100ContinueHandler handler);
  // Called once per answered request (and per request refused by the transport itself).
  EventHttpServer& set_logger(httplib::Logger logger);
  // Headers added to every response that does not set them.
  EventHttpServer& set_default_headers(httplib::Headers headers);
  // Bodies whose Content-Length is larger are answered 413 without being stored.
  EventHttpServer& set_payload_max_length(size_t length);
  EventHttpServer& set_limits(const TransportLimits& limits);

  // Binding: false / -1 when the address cannot be bound (in use, or not local).
  bool bind_to_port(const std::string& host, int port);
  int bind_to_any_port(const std::string& host);
  // Serves until stop(); returns once the requests in flight have been answered.
  bool listen_after_bind();
  bool is_running() const;
  // Safe from any thread, more than once.
  void stop();
  // Closes a bound socket that was never served.
  void close_listener();

  // Answers the requests in `bytes` as it answers a connection that sent them and then shut its
  // sending side, in memory: the same parsing, limits, checks, routes and written answers, with
  // no socket, no deadline and no other thread (the handlers run on the calling thread). The
  // connection's two ends are 127.0.0.1. Returns the bytes written back. Needs no bind or
  // listen; an exception that would end a served connection is thrown.
  std::string answer_connection(std::string_view bytes);

  // When the transport began to read `req`, a request it passed to a handler or the logger.
  static std::chrono::steady_clock::time_point request_start(const httplib::Request& req);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace clipkit::server
