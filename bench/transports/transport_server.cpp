// The HTTP libraries considered for `clipkit serve`, each serving the same synthetic handler, so
// that bench/serve_load.py can compare how they hold idle connections and many clients:
//
//   bench_transport_server --transport beast|mhd|httplib --port P [--work-us 1000] [--threads 8]
//
// beast: the server's own transport (src/server/transport.h: Boost.Beast, one event loop, the
// handler on a pool of `threads`); mhd: libmicrohttpd with its internal epoll threads
// (MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, a pool of `threads`, the handler run on them);
// httplib: cpp-httplib with a pool of `threads` (a thread per connection, the previous design).
// Every request, whatever its path, spins `work-us` microseconds of CPU (a query's embedding and
// search) and answers a small JSON object with a few item ids.
#include <httplib.h>
#include <signal.h>
#ifdef CLIPKIT_HAVE_MHD
#include <microhttpd.h>
#endif

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "server/transport.h"

namespace {

const std::string kBody = R"({"results":[{"id":1,"score":0.5},{"id":2,"score":0.4},{"id":3,"score":0.3}],"k":3})";
int g_work_us = 1000;

void work() {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(g_work_us);
  volatile unsigned x = 0;
  while (std::chrono::steady_clock::now() < until) x = x + 1;
}

volatile sig_atomic_t g_stop = 0;
extern "C" void on_signal(int) { g_stop = 1; }

#ifdef CLIPKIT_HAVE_MHD
MHD_Result mhd_handler(void*, MHD_Connection* c, const char*, const char*, const char*, const char*, size_t* upload_size,
                       void** state) {
  if (*state == nullptr) {
    *state = c;
    return MHD_YES;
  }
  if (*upload_size != 0) {
    *upload_size = 0;
    return MHD_YES;
  }
  work();
  MHD_Response* r = MHD_create_response_from_buffer(kBody.size(), const_cast<char*>(kBody.data()), MHD_RESPMEM_PERSISTENT);
  MHD_add_response_header(r, "Content-Type", "application/json");
  const MHD_Result ok = MHD_queue_response(c, 200, r);
  MHD_destroy_response(r);
  return ok;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  std::string transport = "beast";
  int port = 8090, threads = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--transport") transport = v;
    else if (k == "--port") port = std::atoi(v.c_str());
    else if (k == "--work-us") g_work_us = std::atoi(v.c_str());
    else if (k == "--threads") threads = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "bench_transport_server: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  auto handler = [](const httplib::Request&, httplib::Response& res) {
    work();
    res.set_content(kBody, "application/json");
  };
  if (transport == "beast") {
    clipkit::server::EventHttpServer s;
    clipkit::server::TransportLimits l;
    l.compute_threads = threads;
    l.max_connections = 4000;
    s.set_limits(l);
    s.Get(".*", handler);
    if (!s.bind_to_port("127.0.0.1", port)) return 1;
    std::thread waiter([&] {
      while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      s.stop();
    });
    s.listen_after_bind();
    waiter.join();
  } else if (transport == "httplib") {
    httplib::Server s;
    s.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    s.Get(".*", handler);
    std::thread waiter([&] {
      while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      s.stop();
    });
    s.listen("127.0.0.1", port);
    waiter.join();
#ifdef CLIPKIT_HAVE_MHD
  } else if (transport == "mhd") {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    MHD_Daemon* d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, static_cast<uint16_t>(port), nullptr, nullptr,
                                     &mhd_handler, nullptr, MHD_OPTION_SOCK_ADDR, &a, MHD_OPTION_THREAD_POOL_SIZE,
                                     static_cast<unsigned>(threads), MHD_OPTION_CONNECTION_LIMIT, 4000u,
                                     MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!d) return 1;
    while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    MHD_stop_daemon(d);
#endif
  } else {
    std::fprintf(stderr, "bench_transport_server: unknown transport %s\n", transport.c_str());
    return 2;
  }
  return 0;
}
