// A cpp-httplib server on 127.0.0.1 (a free port chosen by the OS) serving in-memory files, for
// the download tests. Range requests are logged; cpp-httplib answers them with 206 and the slice.
// HEAD requests get the same headers (plus any set with header()) and are not logged.
#pragma once
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace iotest {

class LocalServer {
 public:
  LocalServer() {
    server_.Get(R"(/.*)", [this](const httplib::Request& req, httplib::Response& res) { handle(req, res); });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~LocalServer() {
    server_.stop();
    thread_.join();
  }
  LocalServer(const LocalServer&) = delete;
  LocalServer& operator=(const LocalServer&) = delete;

  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void serve(const std::string& path, std::string bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    files_[path] = std::move(bytes);
  }
  // An extra response header for `path` (e.g. the hub's X-Linked-Etag).
  void header(const std::string& path, const std::string& name, const std::string& value) {
    std::lock_guard<std::mutex> lock(mu_);
    headers_[path][name] = value;
  }
  // The next full (non-Range) response for `path` announces the whole length but stops after
  // `bytes` bytes and drops the connection: a transfer cut short.
  void cut_next(const std::string& path, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    cuts_[path] = bytes;
  }
  void redirect(const std::string& from, const std::string& to) {
    std::lock_guard<std::mutex> lock(mu_);
    redirects_[from] = to;
  }
  // Range headers received, and body bytes sent, since the last reset.
  std::vector<std::string> ranges() {
    std::lock_guard<std::mutex> lock(mu_);
    return ranges_;
  }
  size_t bytes_sent() const { return sent_; }
  void reset_log() {
    std::lock_guard<std::mutex> lock(mu_);
    ranges_.clear();
    sent_ = 0;
  }

 private:
  void handle(const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto r = redirects_.find(req.path); r != redirects_.end()) {
      res.set_redirect(r->second);
      return;
    }
    auto it = files_.find(req.path);
    if (it == files_.end()) {
      res.status = 404;
      res.set_content("not found", "text/plain");
      return;
    }
    const std::string& body = it->second;
    if (auto h = headers_.find(req.path); h != headers_.end())
      for (const auto& [name, value] : h->second) res.set_header(name, value);
    if (req.method == "HEAD") {  // metadata only: not logged as a transfer
      res.set_content(body, "application/octet-stream");
      return;
    }
    const std::string range = req.get_header_value("Range");
    ranges_.push_back(range);
    size_t start = 0;
    if (!range.empty() && std::sscanf(range.c_str(), "bytes=%zu-", &start) == 1) {
      if (start >= body.size()) {
        res.status = 416;
        res.set_header("Content-Range", "bytes */" + std::to_string(body.size()));
        return;
      }
      // cpp-httplib itself answers 206 with the requested slice of the full content.
    }
    if (auto c = cuts_.find(req.path); c != cuts_.end() && range.empty()) {
      const size_t cut = std::min(c->second, body.size());
      cuts_.erase(c);
      sent_ += cut;
      std::string head = body.substr(0, cut);
      res.set_content_provider(body.size(), "application/octet-stream",
                               [head](size_t offset, size_t, httplib::DataSink& sink) {
                                 if (offset < head.size()) sink.write(head.data() + offset, head.size() - offset);
                                 return offset < head.size();  // false: the connection is dropped
                               });
      return;
    }
    sent_ += body.size() - start;
    res.set_content(body, "application/octet-stream");
  }

  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::map<std::string, std::string> files_, redirects_;
  std::map<std::string, std::map<std::string, std::string>> headers_;
  std::map<std::string, size_t> cuts_;
  std::vector<std::string> ranges_;
  std::atomic<size_t> sent_{0};
};

}  // namespace iotest
