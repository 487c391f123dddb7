// libFuzzer target: download responses (status line, headers, redirects, bodies) to the model
// downloader. A server thread in this process listens on 127.0.0.1 and answers every connection
// with the input's bytes after the first, then closes it; the downloader fetches from it through the
// base-URL override. The first byte picks the call and the starting state: a plain download, a
// resumed one (a partial file already there, so a Range request), a download with an expected
// SHA-256, or the hub's published-hash HEAD request. Every outcome must be a result or a
// clipkit::Error; the partial file is the only thing a failure may leave behind. The destination
// folder is in memory-backed storage (scratch.h), so the downloader's fsyncs cost no disk wait.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

#include "clipkit/error.h"
#include "io/download.h"
#include "scratch.h"

namespace {

namespace fs = std::filesystem;

struct Responder {
  int listen_fd = -1;
  int port = -1;
  std::mutex mu;
  std::string answer;  // what every connection gets
  std::string dir;
};

// Reads the request head (up to its blank line, or what arrives within a moment), then answers.
void serve(Responder* r) {
  for (;;) {
    const int c = ::accept4(r->listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR) continue;
      std::perror("fuzz_download: accept");
      std::abort();
    }
    std::string head;
    char buf[4096];
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < (1u << 16)) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) break;
      const ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) break;
      head.append(buf, static_cast<size_t>(n));
    }
    std::string answer;
    {
      std::lock_guard<std::mutex> lock(r->mu);
      answer = r->answer;
    }
    size_t sent = 0;
    while (sent < answer.size()) {
      const ssize_t n = ::send(c, answer.data() + sent, answer.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    ::shutdown(c, SHUT_RDWR);
    ::close(c);
  }
}

Responder& responder() {
  static Responder* r = [] {
    auto* x = new Responder;
    x->dir = fuzzutil::scratch_path("download");
    fs::remove_all(x->dir);
    fs::create_directories(x->dir);
    x->listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (x->listen_fd < 0 || ::bind(x->listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(x->listen_fd, 64) != 0 || ::getsockname(x->listen_fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      std::perror("fuzz_download: listening socket");
      std::abort();
    }
    x->port = ntohs(addr.sin_port);
    std::thread(serve, x).detach();
    return x;
  }();
  return *r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Responder& r = responder();
  const uint8_t mode = data[0];
  {
    std::lock_guard<std::mutex> lock(r.mu);
    r.answer.assign(reinterpret_cast<const char*>(data) + 1, size - 1);
  }
  const std::string dest = r.dir + "/model.bin";
  std::error_code ec;
  fs::remove(dest, ec);
  fs::remove(dest + ".part", ec);
  if ((mode & 3) == 1) std::ofstream(dest + ".part", std::ios::binary) << "partial bytes";

  clipkit::DownloadOptions o;
  o.base_url = "http://127.0.0.1:" + std::to_string(r.port);
  o.connect_timeout_s = 2;
  o.read_timeout_s = 2;
  o.progress = [](const std::string&, uint64_t, uint64_t) {};
  const std::string url = "https://example.org/models/model.bin";
  try {
    if ((mode & 3) == 3) {
      const std::string sha = clipkit::hub_published_sha256(url, o);
      if (!sha.empty() && sha.size() != 64) std::abort();  // a published hash is a SHA-256 or nothing
    } else {
      const std::string expected = (mode & 3) == 2 ? std::string(64, 'a') : std::string();
      const clipkit::DownloadResult d = clipkit::download_file(url, dest, expected, o);
      // A result names a complete file whose size and hash are what was computed.
      if (!fs::is_regular_file(d.path) || fs::file_size(d.path) != d.bytes || fs::exists(dest + ".part")) std::abort();
    }
  } catch (const clipkit::Error&) {
    // a refused answer: fine, as long as no final file appeared with a wrong hash
    if ((mode & 3) == 2 && fs::exists(dest)) std::abort();
  }
  return 0;
}
