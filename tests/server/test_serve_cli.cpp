// `clipkit serve` as a child process: started on a free port (--port 0, the port read from its
// stderr), queried over HTTP, stopped with SIGTERM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <regex>
#include <sstream>
#include <thread>

#include "server/server_fixture.h"

using namespace clipkit;
using nlohmann::json;

namespace {

// A running `clipkit serve`; killed if the test ends without stopping it.
class ServeProcess {
 public:
  explicit ServeProcess(const std::vector<std::string>& args) {
    int err[2];
    if (pipe(err) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(err[1], STDERR_FILENO);
      const int null = open("/dev/null", O_WRONLY);
      dup2(null, STDOUT_FILENO);
      close(err[0]);
      close(err[1]);
      std::vector<std::string> all = {CLIPKIT_CLI_PATH, "serve"};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(err[1]);
    err_fd_ = err[0];
  }
  ~ServeProcess() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (err_fd_ >= 0) close(err_fd_);
  }

  // Reads stderr until a line matches `pattern` (first group returned) or `seconds` pass.
  std::string wait_for(const std::regex& pattern, int seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    size_t scanned = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      std::smatch m;
      size_t nl;
      while ((nl = err_.find('\n', scanned)) != std::string::npos) {
        const std::string line = err_.substr(scanned, nl - scanned);
        scanned = nl + 1;
        if (std::regex_search(line, m, pattern)) return m[1];
      }
      if (!read_some(200)) break;
    }
    return "";
  }

  // Sends `sig` and waits (bounded) for the exit; returns the exit status, or -1.
  int stop(int sig, int seconds) {
    kill(pid_, sig);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      read_some(50);
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        while (read_some(50)) {
        }
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
    }
    return -1;
  }

  const std::string& err() const { return err_; }

 private:
  bool read_some(int timeout_ms) {
    pollfd p{err_fd_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return true;  // nothing yet
    char buf[4096];
    const ssize_t n = read(err_fd_, buf, sizeof buf);
    if (n <= 0) return false;  // closed
    err_.append(buf, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int err_fd_ = -1;
  bool reaped_ = false;
  std::string err_;
};

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

}  // namespace

TEST(ServeCli, AnswersLikeClipkitSearchAndStopsOnSigterm) {
  const auto& d = test::server_data();
  ServeProcess p({d.index_dir, "--port", "0", "--threads", "1"});
  const std::string port_text = p.wait_for(std::regex(R"(listening on http://127\.0\.0\.1:(\d+)/)"), 120);
  ASSERT_FALSE(port_text.empty()) << p.err();
  const int port = std::stoi(port_text);

  const auto r = test::http_get(port, "/api/search?text=waves&k=5");
  ASSERT_EQ(r.status, 200) << r.body;
  const auto cli = test::run_cli({"search", d.index_dir, "--text", "waves", "--k", "5", "--format", "json"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  const auto want = json_lines(cli.out);
  ASSERT_EQ(want.size(), 5u);
  ASSERT_EQ(r.json["results"].size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(r.json["results"][i], want[i]) << i;  // same fields, same values

  // A second server cannot take the same port.
  const auto busy = test::run_cli({"serve", d.index_dir, "--port", port_text});
  EXPECT_EQ(busy.exit_code, 1);
  EXPECT_NE(busy.err.find("cannot listen on 127.0.0.1:" + port_text), std::string::npos) << busy.err;
  EXPECT_EQ(test::http_get(port, "/api/info").status, 200);

  EXPECT_EQ(p.stop(SIGTERM, 60), 0) << p.err();
  EXPECT_NE(p.err().find("GET /api/search?text=waves&k=5 200 "), std::string::npos) << p.err();
  EXPECT_NE(p.err().find("received SIGTERM"), std::string::npos) << p.err();
  EXPECT_NE(p.err().find("clipkit serve: stopped"), std::string::npos) << p.err();
}

TEST(ServeCli, StopsOnSigint) {
  const auto& d = test::server_data();
  ServeProcess p({d.index_dir, "--port", "0"});
  const std::string port_text = p.wait_for(std::regex(R"(listening on http://127\.0\.0\.1:(\d+)/)"), 120);
  ASSERT_FALSE(port_text.empty()) << p.err();
  EXPECT_EQ(test::http_get(std::stoi(port_text), "/").status, 200);
  EXPECT_EQ(p.stop(SIGINT, 60), 0) << p.err();
  EXPECT_NE(p.err().find("received SIGINT"), std::string::npos) << p.err();
}

TEST(ServeCli, BadArgumentsFailWithAMessage) {
  const auto& d = test::server_data();
  auto r = test::run_cli({"serve", d.root + "/no-such-index", "--port", "0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  r = test::run_cli({"serve", d.index_dir, "--port", "70000"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--port"), std::string::npos) << r.err;
  r = test::run_cli({"serve", d.index_dir, "--port", "0", "--max-upload-mb", "0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--max-upload-mb"), std::string::npos) << r.err;
  r = test::run_cli({"serve", d.index_dir, "--port", "0", "--model", test::data_path("models/tiny-rn.safetensors")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("was built with model"), std::string::npos) << r.err;
}

TEST(ServeCli, TokenFileAndAllowedHosts) {
  const auto& d = test::server_data();
  const std::string token_file = test::temp_dir() + "/token";
  { std::ofstream(token_file) << "Zq7-serve-cli-token-0123456789\n"; }
  ServeProcess p({d.index_dir, "--port", "0", "--token-file", token_file, "--allowed-host", "photos.example.lan"});
  const std::string port_text = p.wait_for(std::regex(R"(listening on http://127\.0\.0\.1:(\d+)/)"), 120);
  ASSERT_FALSE(port_text.empty()) << p.err();
  const int port = std::stoi(port_text);
  auto status = [&](const std::string& headers) {
    return test::status_of(test::raw_exchange(port, "GET /api/info HTTP/1.1\r\n" + headers + "Connection: close\r\n\r\n"));
  };
  EXPECT_EQ(status("Host: 127.0.0.1\r\n"), 401);
  EXPECT_EQ(status("Host: 127.0.0.1\r\nAuthorization: Bearer wrong-token-0123456789\r\n"), 403);
  EXPECT_EQ(status("Host: 127.0.0.1\r\nAuthorization: Bearer Zq7-serve-cli-token-0123456789\r\n"), 200);
  EXPECT_EQ(status("Host: photos.example.lan:8080\r\nAuthorization: Bearer Zq7-serve-cli-token-0123456789\r\n"), 200);
  EXPECT_EQ(status("Host: other.example\r\nAuthorization: Bearer Zq7-serve-cli-token-0123456789\r\n"), 403);
  EXPECT_EQ(p.stop(SIGTERM, 60), 0) << p.err();
  EXPECT_EQ(p.err().find("Zq7-serve"), std::string::npos) << p.err();  // the token is never printed
}

TEST(ServeCli, SecurityFlagsAreChecked) {
  const auto& d = test::server_data();
  const std::string dir = test::temp_dir();
  { std::ofstream(dir + "/empty"); }
  { std::ofstream(dir + "/short") << "abc\n"; }
  auto r = test::run_cli({"serve", d.index_dir, "--port", "0", "--token-file", dir + "/empty"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--token-file"), std::string::npos) << r.err;
  r = test::run_cli({"serve", d.index_dir, "--port", "0", "--token-file", dir + "/short"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("16"), std::string::npos) << r.err;
  r = test::run_cli({"serve", d.index_dir, "--port", "0", "--token-file", dir + "/missing"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--token-file"), std::string::npos) << r.err;
  r = test::run_cli({"serve", d.index_dir, "--port", "0", "--max-upload-pixels", "0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--max-upload-pixels"), std::string::npos) << r.err;
  r = test::run_cli({"serve", d.index_dir, "--port", "0", "--decode-memory-mb", "0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--decode-memory-mb"), std::string::npos) << r.err;
  r = test::run_cli({"serve", d.index_dir, "--port", "0", "--allowed-host", "bad host"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--allowed-host"), std::string::npos) << r.err;
  // An address other than loopback is warned about before anything listens (this one, from a
  // documentation range, cannot be bound here, so nothing is exposed).
  r = test::run_cli({"serve", d.index_dir, "--port", "0", "--host", "192.0.2.1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("warning"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--token-file"), std::string::npos) << r.err;
  r = test::run_cli({"serve", "--help"});
  for (const char* flag : {"--allowed-host", "--token-file", "--max-upload-pixels", "--decode-memory-mb"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag << "\n" << r.out;
}

TEST(ServeCli, WritableServerKilledMidWriteLeavesAConsistentIndex) {
  namespace fs = std::filesystem;
  const auto& d = test::server_data();
  const std::string root = test::temp_dir();
  const std::string images = root + "/images", dir = root + "/idx", token_file = root + "/token";
  fs::create_directories(images);
  {
    Index idx = Index::create(dir, d.model->info());
    const std::string p = images + "/seed.png";
    test::write_synthetic_png(p, 1, 32, 32);
    idx.add_files({p}, *d.model);
  }
  std::vector<std::string> files;
  for (int k = 0; k < 40; ++k) {
    files.push_back(images + "/w" + std::to_string(k) + ".png");
    test::write_synthetic_png(files.back(), 200 + k, 30 + k % 7, 30);
  }
  const std::string token = "kill-nine-token-0123456789";
  std::ofstream(token_file) << token << "\n";
  ServeProcess p({dir, "--port", "0", "--threads", "1", "--writable", "--token-file", token_file, "--allow-root", images});
  const std::string port_text = p.wait_for(std::regex(R"(listening on http://127\.0\.0\.1:(\d+)/)"), 120);
  ASSERT_FALSE(port_text.empty()) << p.err();
  const int port = std::stoi(port_text);
  std::vector<std::string> acknowledged;
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    auto c = test::make_client(port);
    httplib::Headers h = {{"Authorization", "Bearer " + token}};
    for (size_t k = 0; k < files.size() && !stop; ++k) {
      const json body = {{"path", files[k]}, {"meta", {{"n", static_cast<int>(k)}}}};
      auto r = c->Post("/api/items", h, body.dump(), "application/json");
      if (r && r->status == 201) acknowledged.push_back(files[k]);
      if (!r) break;  // the server is gone
    }
  });
  // let a few writes land, then kill the server while it writes
  for (int i = 0; i < 600 && acknowledged.size() < 5; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(p.stop(SIGKILL, 30), 128 + SIGKILL);
  stop = true;
  writer.join();
  ASSERT_GE(acknowledged.size(), 5u);
  Index idx = Index::open(dir);
  const VerifyReport v = idx.verify();
  EXPECT_TRUE(v.ok) << (v.problems.empty() ? "" : v.problems[0]);
  for (const auto& f : acknowledged) {
    CatalogItem it;
    ASSERT_TRUE(idx.find_path(f, &it)) << f;
    EXPECT_TRUE(json::parse(idx.metadata(f)).contains("n")) << f;  // committed together with its file
  }
}
