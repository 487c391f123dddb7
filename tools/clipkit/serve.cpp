// clipkit serve: search an index over HTTP, with a web page.
//
//   clipkit serve INDEX_DIR [--host 127.0.0.1] [--port 8080] [--model M] [--threads N]
//                 [--max-upload-mb 16]
//
// Opens the index read-only and loads the model recorded in it (or --model), then serves the JSON
// API and the page (docs/server.md) until SIGINT or SIGTERM. One log line per request on stderr.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <iostream>
#include <thread>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "clipkit/model.h"
#include "clipkit/server.h"
#include "clipkit/verb.h"

namespace {

using namespace clipkit;

struct Args {
  std::string dir, host = "127.0.0.1", model, dtype = "f32", arch;
  int port = 8080, threads = 0, http_threads = 8;
  double max_upload_mb = 16;
};

// SIGINT/SIGTERM write one byte to this pipe; a thread reading it stops the server. (The handler
// may run on any thread, including the libraries' own; write() is async-signal-safe.)
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
  const int saved = errno;
  const char c = static_cast<char>(sig);
  if (g_signal_pipe[1] >= 0) (void)!::write(g_signal_pipe[1], &c, 1);
  errno = saved;
}

void log_line(const std::string& line) {
  const std::string s = "clipkit serve: " + line + "\n";
  (void)!::write(STDERR_FILENO, s.data(), s.size());  // one write: lines of concurrent requests never interleave
}

void run(const Args& a) {
  if (a.port < 0 || a.port > 65535) throw Error(ErrorCode::InvalidArgument, "--port must be in 0..65535");
  if (a.threads < 0) throw Error(ErrorCode::InvalidArgument, "--threads must be >= 0");
  if (a.http_threads <= 0) throw Error(ErrorCode::InvalidArgument, "--http-threads must be positive");
  if (!(a.max_upload_mb > 0) || a.max_upload_mb > 4096) throw Error(ErrorCode::InvalidArgument, "--max-upload-mb must be in (0, 4096]");

  Index idx = Index::open(a.dir, Index::Mode::ReadOnly);
  for (const auto& n : idx.open_notes()) std::cerr << "clipkit: note: " << n << "\n";
  const std::string model_path = a.model.empty() ? idx.info().model_path : a.model;
  if (model_path.empty()) throw Error(ErrorCode::InvalidArgument, "index " + a.dir + " records no model path; pass --model");
  ModelOptions mo;
  mo.threads = a.threads;
  mo.dtype = a.dtype;
  mo.arch = a.arch;
  std::shared_ptr<Model> model;
  try {
    model = Model::load(model_path, mo);
  } catch (const Error& e) {
    if (a.model.empty())
      throw Error(e.code(), std::string(e.what()) + " (the model recorded in index " + a.dir + "; pass --model to use another copy)");
    throw;
  }
  const IndexInfo info = idx.info();
  model->encode_texts({"warm up"});  // the first call prepares the weights: not in the first query's time

  ServerOptions so;
  so.host = a.host;
  so.port = a.port;
  so.http_threads = a.http_threads;
  so.max_upload_bytes = static_cast<size_t>(a.max_upload_mb * 1024 * 1024);
  so.log = log_line;
  SearchServer server(std::move(idx), model, so);
  const int port = server.bind();

  if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) throw Error(ErrorCode::Io, "cannot create a pipe for signal handling");
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  std::thread stopper([&server] {
    char c = 0;
    ssize_t n;
    do n = ::read(g_signal_pipe[0], &c, 1);
    while (n < 0 && errno == EINTR);
    if (c != 0) {
      log_line(std::string("received ") + (c == SIGINT ? "SIGINT" : "SIGTERM") + ", finishing the requests in flight");
      signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process at once
      signal(SIGTERM, SIG_DFL);
    }
    server.stop();
  });

  std::string host = a.host.find(':') != std::string::npos ? "[" + a.host + "]" : a.host;
  std::cerr << "clipkit serve: " << info.items << " images in " << a.dir << " (" << info.structure << ", model "
            << model->info().path << ")\n"
            << "clipkit serve: listening on http://" << host << ":" << port << "/  (Ctrl-C stops)" << std::endl;
  try {
    server.run();
  } catch (...) {
    on_stop_signal(0);
    stopper.join();
    throw;
  }
  on_stop_signal(0);  // wakes the stopper when run() ended on its own
  stopper.join();
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  std::cerr << "clipkit serve: stopped" << std::endl;
}

const bool registered = cli::register_verb([](CLI::App& app) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("serve", "Search an index over HTTP: JSON API and web page");
  cmd->add_option("INDEX_DIR", args->dir, "Index folder (opened read-only)")->required();
  cmd->add_option("--host", args->host, "Address to listen on (default 127.0.0.1; 0.0.0.0 exposes the index to the network)");
  cmd->add_option("--port", args->port, "Port (default 8080; 0 = any free port, printed at start)");
  cmd->add_option("--model", args->model, "Use this model file instead of the one recorded in the index");
  cmd->add_option("--dtype", args->dtype, "Weights/compute for queries: f32 (default), f16 or int8");
  clipkit::cli::add_arch_option(cmd, args->arch);
  cmd->add_option("--threads", args->threads, "Compute threads per query (0 = one per core)");
  cmd->add_option("--http-threads", args->http_threads, "Requests handled at once (default 8)");
  cmd->add_option("--max-upload-mb", args->max_upload_mb, "Largest accepted upload in MiB (default 16)");
  cmd->callback([args] { run(*args); });
});

}  // namespace
