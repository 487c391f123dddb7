// The streams a connection of EventHttpServer (transport_beast.cpp) is served over, and the
// operations its request loop does on them besides reading and writing.
#pragma once

#include <utility>  // before Boost: asio/awaitable.hpp of Boost 1.74 uses std::exchange without it

// Boost 1.74's Asio enables co_await with clang only for <experimental/coroutine> (libc++);
// clang's C++20 coroutines over libstdc++'s <coroutine> serve as well.
#if defined(__clang__) && defined(__cpp_impl_coroutine) && !defined(BOOST_ASIO_HAS_CO_AWAIT)
#define BOOST_ASIO_HAS_CO_AWAIT 1
#endif

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <chrono>
#include <string>
#include <string_view>

namespace clipkit::server {

namespace beast_io {
namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

// The two ends a connection is served over: a TCP socket, or bytes in memory
// (EventHttpServer::answer_connection). The request loop is the same for both; these are the
// only operations it does on a stream besides reading and writing.
//
// A connection in memory: reads take from `in` until it is empty (then end of file, as after
// the client shut its sending side), writes append to `out`. Every operation completes through
// the executor, as a socket's would; there are no deadlines.
class MemoryStream {
 public:
  using executor_type = asio::any_io_executor;

  MemoryStream(executor_type ex, std::string_view in, std::string* out) : ex_(std::move(ex)), in_(in), out_(out) {}
  executor_type get_executor() const { return ex_; }

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(error_code, size_t)>(
        [this](auto handler, const MutableBuffers& b) {
          error_code ec;
          size_t n = 0;
          if (closed_) {
            ec = asio::error::bad_descriptor;
          } else if (in_.empty()) {
            ec = asio::error::eof;
          } else {
            n = asio::buffer_copy(b, asio::buffer(in_.data(), in_.size()));
            in_.remove_prefix(n);
          }
          complete(std::move(handler), ec, n);
        },
        token, buffers);
  }

  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(error_code, size_t)>(
        [this](auto handler, const ConstBuffers& b) {
          error_code ec;
          size_t n = 0;
          if (closed_ || sending_done_) {
            ec = asio::error::broken_pipe;
          } else {
            n = asio::buffer_size(b);
            const size_t at = out_->size();
            out_->resize(at + n);
            asio::buffer_copy(asio::buffer(out_->data() + at, n), b);
          }
          complete(std::move(handler), ec, n);
        },
        token, buffers);
  }

  void end_sending() { sending_done_ = true; }
  void close() { closed_ = true; }

 private:
  template <class Handler>
  void complete(Handler handler, error_code ec, size_t n) {
    auto ex = asio::get_associated_executor(handler, ex_);
    asio::post(ex, [h = std::move(handler), ec, n]() mutable { h(ec, n); });
  }

  executor_type ex_;
  std::string_view in_;
  std::string* out_;
  bool sending_done_ = false, closed_ = false;
};

inline void set_deadline(beast::tcp_stream& s, std::chrono::milliseconds d) { s.expires_after(d); }
inline void set_deadline(MemoryStream&, std::chrono::milliseconds) {}
inline void end_sending(beast::tcp_stream& s) {
  error_code ec;
  s.socket().shutdown(tcp::socket::shutdown_send, ec);
}
inline void end_sending(MemoryStream& s) { s.end_sending(); }
inline void close_stream(beast::tcp_stream& s) {
  error_code ec;
  s.socket().close(ec);
}
inline void close_stream(MemoryStream& s) { s.close(); }

// The addresses of a connection's two ends, as the handlers see them.
struct Peer {
  std::string remote_addr, local_addr;
  int remote_port = -1, local_port = -1;
};

}  // namespace beast_io

}  // namespace clipkit::server
