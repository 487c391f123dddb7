// libFuzzer target: raw HTTP request bytes to the search server (`clipkit serve`). The server runs
// in this process on 127.0.0.1 (a free port) over a small index of fixture images built with the
// tiny ViT model; each input is sent on a fresh connection, the sending side is then shut down and
// the answer read until the server closes the connection. Several requests in one input are
// answered in turn (keep-alive). A crash or sanitizer report anywhere in the server counts.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "clipkit/index.h"
#include "clipkit/model.h"
#include "clipkit/server.h"
#include "scratch.h"

namespace {

struct Served {
  std::unique_ptr<clipkit::SearchServer> server;
  std::thread thread;
  int port = -1;
};

Served& served() {
  static Served* s = [] {
    namespace fs = std::filesystem;
    auto* x = new Served;
    const std::string root = fuzzutil::scratch_path("http");
    fs::remove_all(root);
    fs::create_directories(root + "/images");
    for (const char* f : {"09_tiny_7x5.png", "10_small_40x50.png", "11_palette.png"})
      fs::copy_file(std::string(CLIPKIT_FUZZ_IMAGES) + "/" + f, root + "/images/" + f);
    std::shared_ptr<clipkit::Model> model = clipkit::Model::load(CLIPKIT_FUZZ_MODEL);
    {
      clipkit::Index idx = clipkit::Index::create(root + "/idx", model->info());
      idx.add_files({root + "/images"}, *model, clipkit::AddOptions{});
    }
    clipkit::ServerOptions o;
    o.port = 0;
    o.http_threads = 2;
    o.max_upload_bytes = 1 << 20;
    o.decode_memory_bytes = 64u << 20;
    x->server = std::make_unique<clipkit::SearchServer>(
        clipkit::Index::open(root + "/idx", clipkit::Index::Mode::ReadOnly), model, o);
    x->port = x->server->bind();
    x->thread = std::thread([x] { x->server->run(); });
    if (!x->server->wait_until_running()) std::abort();
    return x;
  }();
  return *s;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_http_request: %s to the server failed: %s\n", what, std::strerror(errno));
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Served& s = served();
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(s.port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // libFuzzer's timeout alarm can interrupt the calls below: they resume instead of failing.
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINTR) fail("connect");
    pollfd p{fd, POLLOUT, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    errno = err;
    if (err != 0) fail("connect");
  }
  timeval tv{10, 0};  // a server that stops answering is reported as a hang by libFuzzer's -timeout
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  size_t sent = 0;
  while (sent < size) {
    const ssize_t n = ::send(fd, data + sent, size - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the server may close early (an oversized or malformed request)
    sent += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
  }
  // Closing with a reset leaves no TIME_WAIT behind: thousands of runs a second would otherwise
  // use up the loopback's ephemeral ports.
  linger lg{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  ::close(fd);
  return 0;
}
