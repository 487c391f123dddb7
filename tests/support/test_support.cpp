#include "support/test_support.h"

#include <sstream>

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>

namespace clipkit::test {

std::string data_path(const std::string& relative) { return std::string(CLIPKIT_TEST_DATA) + "/" + relative; }

namespace {
struct TempDirs {
  std::vector<std::string> dirs;
  std::mutex mu;
  ~TempDirs() {
    for (const auto& d : dirs) {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  }
};
TempDirs& temp_dirs() {
  static TempDirs t;
  return t;
}
}  // namespace

std::string temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "clipkit-test-XXXXXX").string();
  char* p = mkdtemp(tmpl.data());
  if (!p) std::abort();
  auto& t = temp_dirs();
  std::lock_guard<std::mutex> lock(t.mu);
  t.dirs.push_back(tmpl);
  return tmpl;
}

CommandResult run_cli(const std::vector<std::string>& args, const std::string& stdin_data) {
  int in[2], out[2], err[2];
  if (pipe(in) || pipe(out) || pipe(err)) std::abort();
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(in[0]); close(in[1]); close(out[0]); close(out[1]); close(err[0]); close(err[1]);
    std::vector<char*> argv;
    std::string exe = CLIPKIT_CLI_PATH;
    argv.push_back(exe.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(exe.c_str(), argv.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  size_t written = 0;
  if (stdin_data.empty()) { close(in[1]); in[1] = -1; }
  CommandResult r;
  char buf[65536];
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    struct pollfd fds[3];
    int nf = 0;
    if (out_open) fds[nf++] = {out[0], POLLIN, 0};
    if (err_open) fds[nf++] = {err[0], POLLIN, 0};
    if (in[1] >= 0) fds[nf++] = {in[1], POLLOUT, 0};
    if (poll(fds, nf, -1) < 0) break;
    for (int i = 0; i < nf; ++i) {
      if (!fds[i].revents) continue;
      if (fds[i].fd == in[1]) {
        ssize_t n = write(in[1], stdin_data.data() + written, stdin_data.size() - written);
        if (n > 0) written += static_cast<size_t>(n);
        if (n < 0 || written == stdin_data.size()) { close(in[1]); in[1] = -1; }
        continue;
      }
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        if (fds[i].fd == out[0]) out_open = false; else err_open = false;
        continue;
      }
      (fds[i].fd == out[0] ? r.out : r.err).append(buf, static_cast<size_t>(n));
    }
  }
  if (in[1] >= 0) close(in[1]);
  close(out[0]);
  close(err[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

double cosine(const float* a, const float* b, size_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < n; ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

double max_abs_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

double max_abs(const float* a, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(static_cast<double>(a[i])));
  return m;
}

std::vector<std::string> nonempty_lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string l;
  while (std::getline(ss, l))
    if (!l.empty()) out.push_back(l);
  return out;
}

long non_warning_lines(const std::string& err) {
  long n = 0;
  for (const auto& l : nonempty_lines(err))
    if (l.find(": warning: ") == std::string::npos) ++n;
  return n;
}

}  // namespace clipkit::test
