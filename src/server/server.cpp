// clipkit serve: the HTTP server over an index. Routes in docs/server.md; the state they share
// and the concurrency rules in server_impl.h. This file: start and stop, the checks every request
// passes (admission), the request log, the web page, and the transport's settings.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <nlohmann/json.hpp>

#include "server/server_impl.h"
#include "server/web_assets.h"

namespace clipkit {

namespace {
using namespace server;
}  // namespace

SearchServer::Impl::Impl(Index idx, std::shared_ptr<const Model> m, ServerOptions o)
    : index(std::move(idx)),
      model(std::move(m)),
      opt(std::move(o)),
      decode_budget(opt.decode_memory_bytes),
      answers(opt.cache_bytes / kAnswerCacheShare),
      text_vectors(opt.cache_bytes / kTextCacheShare),
      upload_vectors(opt.cache_bytes / kUploadCacheShare) {
  for (const auto& h : opt.allowed_hosts) {
    const std::string name = host_name(h);
    if (name.empty()) throw Error(ErrorCode::InvalidArgument, "allowed host '" + h + "' is not a host name");
    allowed_hosts.insert(name);
  }
  // The address the server was told to listen on is a name it goes by (not the wildcards).
  const std::string bound = host_name(opt.host.find(':') != std::string::npos ? "[" + opt.host + "]" : opt.host);
  if (!bound.empty() && bound != "0.0.0.0" && bound != "[::]") allowed_hosts.insert(bound);
  // Files are served only from the folders that held indexed files, as they resolve now: a
  // folder or link swapped later for a way elsewhere leads outside them.
  served_folders = resolve_folders();
  index_folder = real_path(index.dir());
  thumbs = server::ThumbnailCache(index_folder);
  for (const auto& r : opt.allowed_roots) {
    const std::string rr = real_path(r);
    if (rr.empty()) throw Error(ErrorCode::NotFound, "allowed root " + r + " does not exist");
    roots.push_back(rr);
  }
  if (!opt.upload_dir.empty()) {
    const std::string u = real_path(opt.upload_dir);
    if (u.empty()) throw Error(ErrorCode::NotFound, "upload folder " + opt.upload_dir + " does not exist");
    roots.push_back(u);
  }
}

std::shared_ptr<const std::unordered_set<std::string>> SearchServer::Impl::resolve_folders() {
  auto out = std::make_shared<std::unordered_set<std::string>>();
  for (const auto& f : index.folders()) {
    const std::string r = real_path(f);
    if (!r.empty()) out->insert(r);
  }
  return out;
}

// Catches up with commits of other processes.
void SearchServer::Impl::refresh_locked() {
  if (index.refresh()) folders_dirty = true;
}

void SearchServer::Impl::log_request(const httplib::Request& req, const httplib::Response& res) {
  if (!opt.log) return;
  std::string line = utc_now() + " " + (req.remote_addr.empty() ? "-" : req.remote_addr) + " " + loggable(req.method, 16) + " " +
                     loggable(req.target.empty() ? req.path : req.target) + " " + std::to_string(res.status);
  const std::string len = res.get_header_value("Content-Length");
  line += " " + (len.empty() ? std::to_string(res.body.size()) : len) + "B";
  {
    char ms[32];
    std::snprintf(ms, sizeof ms, " %.1fms",
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - HttpServer::request_start(req)).count());
    line += ms;
  }
  if (res.status >= 400 && !res.body.empty() && res.body.size() < 4096) {
    try {
      const json j = json::parse(res.body);
      if (j.is_object() && j.contains("error") && j["error"].is_string()) line += " (" + loggable(j["error"].get<std::string>(), 600) + ")";
    } catch (const json::exception&) {
    }
  }
  try {
    opt.log(line);
  } catch (...) {
    // a failing log sink must not take the server down
  }
}

// Checks every request must pass before it is routed: one Content-Length at most, a Host that
// names this server (DNS rebinding), the bearer token when one is set. 0 when admitted, else
// the status of the JSON error written to `res`.
int SearchServer::Impl::admission(const httplib::Request& req, httplib::Response& res) const {
  const auto refuse = [&](int status, const std::string& message) {
    res.set_header("Connection", "close");  // a body that was not read cannot be skipped reliably
    send_error(res, status, message);
    return status;
  };
  const size_t lengths = req.get_header_value_count("Content-Length");
  if (lengths > 1) return refuse(400, "the request has " + std::to_string(lengths) + " Content-Length headers");
  if (req.get_header_value_count("Host") != 1 || req.get_header_value("Host").empty())
    return refuse(400, "the request needs exactly one Host header");
  const std::string host = req.get_header_value("Host");
  const std::string name = host_name(host);
  if (name.empty() || (!is_loopback_name(name) && !allowed_hosts.count(name)))
    return refuse(403, "Host '" + loggable(host, 100) + "' is not a name of this server (start it with --allowed-host NAME to accept one)");
  if (!opt.token.empty()) {
    const std::string auth = req.get_header_value_count("Authorization") == 1 ? req.get_header_value("Authorization") : "";
    if (auth.size() < 7 || lower(auth.substr(0, 7)) != "bearer ") {
      res.set_header("WWW-Authenticate", "Bearer realm=\"clipkit\"");
      return refuse(401, "this server needs an Authorization: Bearer token");
    }
    size_t b = 7;
    while (b < auth.size() && auth[b] == ' ') ++b;
    if (!same_secret(auth.substr(b), opt.token)) return refuse(403, "wrong bearer token");
  }
  return 0;
}

void SearchServer::Impl::setup_routes() {
  using httplib::Request;
  using httplib::Response;
  server::TransportLimits limits;
  limits.compute_threads = std::max(1, opt.http_threads);
  limits.max_connections = static_cast<size_t>(opt.max_connections);
  limits.header_timeout = std::chrono::milliseconds(opt.header_timeout_ms);
  limits.body_timeout = std::chrono::milliseconds(opt.body_timeout_ms);
  limits.body_memory_bytes = opt.body_memory_bytes;
  http.set_limits(limits);
  http.set_payload_max_length(opt.max_upload_bytes);
  http.set_default_headers({{"X-Content-Type-Options", "nosniff"}});
  http.set_logger([this](const Request& req, const Response& res) { log_request(req, res); });
  http.set_pre_routing_handler([this](const Request& req, Response& res) {
    // Ranges are honoured by the image route alone, and there one at a time (parse_range).
    const_cast<Request&>(req).ranges.clear();
    if (admission(req, res) != 0) return httplib::Server::HandlerResponse::Handled;
    // Bodies are bounded through their Content-Length (the transport refuses a larger one with
    // 413 before storing anything); a body without one could not be bounded.
    if ((req.method == "POST" || req.method == "PUT" || req.method == "PATCH") &&
        (!req.has_header("Content-Length") || req.has_header("Transfer-Encoding"))) {
      res.set_header("Connection", "close");
      send_error(res, 411, "request bodies need a Content-Length (chunked uploads are not accepted)");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // A client that waits for "100 Continue" learns about a too large body before sending it.
  http.set_expect_100_continue_handler([this](const Request& req, Response& res) {
    if (const int refused = admission(req, res)) return refused;
    if (req.get_header_value_count("Content-Length") &&
        std::strtoull(req.get_header_value("Content-Length").c_str(), nullptr, 10) > opt.max_upload_bytes) {
      send_error(res, 413, "request body is larger than the limit of " + std::to_string(opt.max_upload_bytes) + " bytes");
      return 413;
    }
    return 100;
  });
  http.set_error_handler([this](const Request& req, Response& res) {
    if (!res.body.empty() || res.has_header("Content-Length")) return;
    std::string msg = status_text(res.status);
    if (res.status == 404) msg = "no such route: " + loggable(req.method, 16) + " " + loggable(req.path, 200);
    if (res.status == 413) msg = "request body is larger than the limit of " + std::to_string(opt.max_upload_bytes) + " bytes";
    send_error(res, res.status, msg);
  });
  http.set_exception_handler([](const Request&, Response& res, std::exception_ptr ep) {
    std::string msg = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      msg += std::string(": ") + e.what();
    } catch (...) {
    }
    send_error(res, 500, msg);
  });

  auto page = [](const Request& req, Response& res) {
    server::WebAsset a;
    if (!server::find_web_asset(req.path, &a)) {
      send_error(res, 404, "no such page: " + loggable(req.path, 200));
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    if (req.path == "/" || req.path == "/index.html")
      res.set_header("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'");
    res.set_content(std::string(a.content), a.mime_type);
  };
  http.Get("/", page);
  http.Get("/index.html", page);
  http.Get("/app.js", page);
  http.Get("/style.css", page);

  add_read_routes();
  add_write_routes();
  add_file_routes();
}


SearchServer::SearchServer(Index index, std::shared_ptr<const Model> model, ServerOptions options) {
  if (!model) throw Error(ErrorCode::InvalidArgument, "the server needs the index's model");
  index.check_model(*model);
  if (options.port < 0 || options.port > 65535) throw Error(ErrorCode::InvalidArgument, "port must be in 0..65535, got " + std::to_string(options.port));
  if (options.http_threads <= 0) throw Error(ErrorCode::InvalidArgument, "http_threads must be positive");
  if (options.max_k <= 0) throw Error(ErrorCode::InvalidArgument, "max_k must be positive");
  if (options.max_upload_bytes == 0) throw Error(ErrorCode::InvalidArgument, "max_upload_bytes must be positive");
  if (options.max_upload_pixels == 0) throw Error(ErrorCode::InvalidArgument, "max_upload_pixels must be positive");
  if (options.decode_memory_bytes == 0) throw Error(ErrorCode::InvalidArgument, "decode_memory_bytes must be positive");
  if (options.max_connections <= 0) throw Error(ErrorCode::InvalidArgument, "max_connections must be positive");
  if (options.header_timeout_ms <= 0 || options.body_timeout_ms <= 0)
    throw Error(ErrorCode::InvalidArgument, "header_timeout_ms and body_timeout_ms must be positive");
  if (options.body_memory_bytes == 0) throw Error(ErrorCode::InvalidArgument, "body_memory_bytes must be positive");
  if (options.writable && options.token.empty())
    throw Error(ErrorCode::InvalidArgument, "a writable server needs a bearer token (--token-file)");
  impl_ = std::make_unique<Impl>(std::move(index), std::move(model), std::move(options));
  impl_->setup_routes();
}

SearchServer::~SearchServer() {
  stop();
  if (impl_ && !impl_->http.is_running()) impl_->http.close_listener();
}

int SearchServer::bind() {
  Impl& m = *impl_;
  if (m.bound_port >= 0) return m.bound_port;
  if (m.opt.port == 0) {
    const int p = m.http.bind_to_any_port(m.opt.host);
    if (p <= 0) throw Error(ErrorCode::Io, "cannot listen on " + m.opt.host + " (no free port, or the address is not local)");
    m.bound_port = p;
  } else {
    if (!m.http.bind_to_port(m.opt.host, m.opt.port))
      throw Error(ErrorCode::Io, "cannot listen on " + m.opt.host + ":" + std::to_string(m.opt.port) +
                                     " (the port is in use, or the address is not local)");
    m.bound_port = m.opt.port;
  }
  return m.bound_port;
}

void SearchServer::run() {
  Impl& m = *impl_;
  bind();
  m.run_started = true;
  if (!m.stopping) m.http.listen_after_bind();
  m.http.close_listener();  // when stopped before it started serving
  m.run_finished = true;
}

void SearchServer::stop() {
  if (!impl_) return;
  Impl& m = *impl_;
  m.stopping = true;
  // run() may be between its start and the moment the transport accepts: wait for either.
  if (m.run_started)
    while (!m.http.is_running() && !m.run_finished) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  m.http.stop();
}

bool SearchServer::wait_until_running() const {
  const Impl& m = *impl_;
  while (!m.http.is_running()) {
    if (m.run_finished || m.stopping) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

int SearchServer::port() const { return impl_->bound_port; }

std::string SearchServer::answer_connection(std::string_view bytes) { return impl_->http.answer_connection(bytes); }

}  // namespace clipkit
