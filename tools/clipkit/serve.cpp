// clipkit serve: search an index over HTTP, with a web page.
//
//   clipkit serve INDEX_DIR [--host 127.0.0.1] [--port 8080] [--model M] [--threads N]
//                 [--max-upload-mb 16] [--max-upload-pixels 16000000] [--decode-memory-mb 512]
//                 [--allowed-host NAME]... [--token-file FILE] [--max-connections 2048]
//                 [--header-timeout 10] [--body-memory-mb 256] [--cache-mb 64]
//                 [--writable [--allow-root DIR]... [--upload-dir DIR]]
//
// Opens the index read-only (shared with other writers when --writable) and loads the model recorded in it (or --model), then serves the JSON
// API and the page (docs/server.md) until SIGINT or SIGTERM. One log line per request on stderr.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <cerrno>
#include <fstream>
#include <iostream>
#include <iterator>
#include <thread>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "clipkit/model.h"
#include "clipkit/options.h"
#include "clipkit/server.h"
#include "clipkit/verb.h"

namespace {

using namespace clipkit;

struct Args {
  std::string dir, host = "127.0.0.1", model, dtype = "f32", arch, text_model, tokenizer;
  int port = 8080, threads = 0, http_threads = 8;
  double max_upload_mb = 16;
  uint64_t max_upload_pixels = 16'000'000;
  double decode_memory_mb = 512;
  int max_connections = 2048;
  double header_timeout_s = 10;
  double body_memory_mb = 256;
  double cache_mb = 64;
  std::vector<std::string> allowed_hosts;
  std::string token_file, upload_dir;
  std::vector<std::string> allow_roots;
  bool writable = false;
};

// 127.x.x.x, ::1 and localhost.
bool is_loopback_address(const std::string& host) {
  if (host == "localhost") return true;
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  return inet_pton(AF_INET6, host.c_str(), &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

// The token of --token-file: its first line without surrounding blanks, at least 16 visible
// ASCII characters.
std::string read_token(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::NotFound, "--token-file " + path + ": cannot open it");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > 4096) throw Error(ErrorCode::InvalidArgument, "--token-file " + path + ": more than 4096 bytes");
  const size_t nl = text.find_first_of("\r\n");
  std::string token = text.substr(0, nl);
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.pop_back();
  while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.erase(0, 1);
  if (token.empty()) throw Error(ErrorCode::InvalidArgument, "--token-file " + path + ": the file holds no token");
  for (char c : token)
    if (c <= 0x20 || c >= 0x7f)
      throw Error(ErrorCode::InvalidArgument, "--token-file " + path + ": the token must be visible ASCII without spaces");
  if (token.size() < 16)
    throw Error(ErrorCode::InvalidArgument, "--token-file " + path + ": the token has " + std::to_string(token.size()) +
                                                " characters, at least 16 are needed");
  return token;
}

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
  if (a.max_upload_pixels == 0 || a.max_upload_pixels > 1'000'000'000)
    throw Error(ErrorCode::InvalidArgument, "--max-upload-pixels must be in 1..1000000000");
  if (!(a.decode_memory_mb >= 1) || a.decode_memory_mb > 1 << 20)
    throw Error(ErrorCode::InvalidArgument, "--decode-memory-mb must be in [1, 1048576]");
  if (!(a.cache_mb >= 0) || a.cache_mb > 1 << 20) throw Error(ErrorCode::InvalidArgument, "--cache-mb must be in [0, 1048576]");
  if (a.max_connections < 1 || a.max_connections > 100000) throw Error(ErrorCode::InvalidArgument, "--max-connections must be in 1..100000");
  if (!(a.header_timeout_s >= 0.1) || a.header_timeout_s > 3600)
    throw Error(ErrorCode::InvalidArgument, "--header-timeout must be in [0.1, 3600] seconds");
  if (!(a.body_memory_mb >= 1) || a.body_memory_mb > 1 << 20)
    throw Error(ErrorCode::InvalidArgument, "--body-memory-mb must be in [1, 1048576]");
  for (const auto& h : a.allowed_hosts)
    if (h.empty() || h.find_first_of(" \t/@") != std::string::npos)
      throw Error(ErrorCode::InvalidArgument, "--allowed-host '" + h + "' is not a host name");
  if (a.writable && a.token_file.empty())
    throw cli::UsageError("--writable needs --token-file FILE: every write must carry the bearer token");
  if (!a.writable && (!a.allow_roots.empty() || !a.upload_dir.empty()))
    throw cli::UsageError("--allow-root and --upload-dir apply only with --writable");
  const std::string token = a.token_file.empty() ? std::string() : read_token(a.token_file);

  Index idx = Index::open(a.dir, a.writable ? Index::Mode::Shared : Index::Mode::ReadOnly);
  for (const auto& n : idx.open_notes()) cli::warn("serve", "note: " + n);
  const std::string model_path = a.model.empty() ? idx.info().model_path : a.model;
  if (model_path.empty()) throw Error(ErrorCode::InvalidArgument, "index " + a.dir + " records no model path; pass --model");
  ModelOptions mo;
  mo.threads = a.threads;
  mo.dtype = a.dtype;
  mo.arch = a.arch.empty() ? idx.info().model_arch : a.arch;  // the name the index was created with
  mo.text_model = a.text_model;
  mo.tokenizer = a.tokenizer;
  cli::use_recorded_text_model(mo.text_model, mo.tokenizer, idx.info().text_model_path, idx.info().tokenizer_path);
  std::shared_ptr<Model> model;
  try {
    model = Model::load(model_path, mo);
  } catch (const Error& e) {
    if (a.model.empty())
      throw Error(e.code(), std::string(e.what()) + " (the model recorded in index " + a.dir + "; pass --model to use another copy)");
    throw;
  }
  const IndexInfo info = idx.info();
  if (!is_loopback_address(a.host)) {
    if (token.empty())
      std::cerr << "clipkit serve: warning: --host " << a.host << " is not a loopback address: anyone who can reach the port can "
                << "search the index and read its images. Pass --token-file FILE to require a bearer token, and "
                << "--allowed-host NAME for each name clients use to reach the server.\n";
    else
      std::cerr << "clipkit serve: note: --host " << a.host << " is not a loopback address; the bearer token travels "
                << "unencrypted (plain HTTP): use it only on a network you trust, or behind a TLS proxy.\n";
  }
  model->encode_texts({"warm up"});  // the first call prepares the weights: not in the first query's time

  ServerOptions so;
  so.host = a.host;
  so.port = a.port;
  so.http_threads = a.http_threads;
  so.max_upload_bytes = static_cast<size_t>(a.max_upload_mb * 1024 * 1024);
  so.max_upload_pixels = a.max_upload_pixels;
  so.decode_memory_bytes = static_cast<size_t>(a.decode_memory_mb * 1024 * 1024);
  so.max_connections = a.max_connections;
  so.header_timeout_ms = static_cast<int>(a.header_timeout_s * 1000);
  so.body_memory_bytes = static_cast<size_t>(a.body_memory_mb * 1024 * 1024);
  so.cache_bytes = static_cast<size_t>(a.cache_mb * 1024 * 1024);
  so.allowed_hosts = a.allowed_hosts;
  so.token = token;
  so.writable = a.writable;
  so.allowed_roots = a.allow_roots;
  so.upload_dir = a.upload_dir;
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
  cmd->add_option("INDEX_DIR", args->dir, "Index folder (opened read-only unless --writable)")->required();
  cmd->add_option("--host", args->host,
                  "Address to listen on (default 127.0.0.1; another address exposes the index to the network: see --token-file)");
  cmd->add_option("--port", args->port, "Port (default 8080; 0 = any free port, printed at start)");
  cmd->add_option("--model", args->model, "Use this model file instead of the one recorded in the index");
  cmd->add_option("--dtype", args->dtype, "Weights/compute for queries: f32 (default), f16 or int8");
  clipkit::cli::add_arch_option(cmd, args->arch);
  clipkit::cli::add_text_model_options(cmd, args->text_model, args->tokenizer, /*recorded=*/true);
  cmd->add_option("--threads", args->threads, "Compute threads per query (0 = one per core)");
  cmd->add_option("--http-threads", args->http_threads, "Requests handled at once (default 8)");
  cmd->add_option("--max-upload-mb", args->max_upload_mb, "Largest accepted upload in MiB (default 16)");
  cmd->add_option("--max-upload-pixels", args->max_upload_pixels,
                  "Largest uploaded image in pixels, checked from its header before decoding (default 16000000)");
  cmd->add_option("--decode-memory-mb", args->decode_memory_mb,
                  "Memory for uploads being decoded at once, in MiB (default 512); an upload that does not fit waits, then gets 503");
  cmd->add_option("--max-connections", args->max_connections,
                  "Connections open at once (default 2048); more are answered 503 and closed");
  cmd->add_option("--header-timeout", args->header_timeout_s,
                  "Seconds a new connection has to send its request's headers (default 10); slower ones are closed");
  cmd->add_option("--body-memory-mb", args->body_memory_mb,
                  "Memory for request bodies held at once, in MiB (default 256); a body that does not fit gets 503");
  cmd->add_option("--cache-mb", args->cache_mb,
                  "Memory for cached answers (until the index changes) and query embeddings, in MiB (default 64; 0 = none)");
  cmd->add_option("--allowed-host", args->allowed_hosts,
                  "A Host name clients may use besides localhost, 127.x.x.x and [::1] (repeatable; others get 403)")
      ->allow_extra_args(false);
  cmd->add_option("--token-file", args->token_file,
                  "File holding a bearer token (16+ characters); every request then needs 'Authorization: Bearer TOKEN'");
  cmd->add_flag("--writable", args->writable,
                "Accept changes: POST /api/items, DELETE /api/items/{id}, PATCH /api/items/{id}/meta (needs --token-file)");
  cmd->add_option("--allow-root", args->allow_roots, "With --writable: a folder whose files POST /api/items may add (repeatable)");
  cmd->add_option("--upload-dir", args->upload_dir, "With --writable: folder where uploaded images are stored before they are indexed");
  cli::add_examples(cmd, {"clipkit serve photos.idx --port 0 --dtype int8",
                          "clipkit serve shop.idx --writable --token-file token.txt --upload-dir uploads/"});
  cmd->callback([args] { run(*args); });
});

}  // namespace
