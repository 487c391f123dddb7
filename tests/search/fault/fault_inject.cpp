// Storage fault injection for tests, loaded with LD_PRELOAD into a clipkit process.
//
// Counts the calls that make data durable (write, pwrite, pwrite64, ftruncate, ftruncate64, fsync,
// fdatasync, rename, renameat) on files other than stdin, stdout and stderr, and makes the N-th one
// fail. SQLite and the vector cache writer both go through these functions.
//
//   CLIPKIT_FAULT_AT=N        fail the N-th counted call (1-based); unset or 0: count only
//   CLIPKIT_FAULT_ERRNO=name  EIO (default) or ENOSPC
//   CLIPKIT_FAULT_STICKY=1    also fail every later counted call (a disk that stays full)
//   CLIPKIT_FAULT_REPORT=path when the fault fires, write "<call> <N>" there; at exit (count only),
//                             write "count <total>" there if nothing fired
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>

namespace {

std::atomic<long> g_count{0};
std::atomic<bool> g_fired{false};
long g_at = -1;  // -1: not read yet
int g_errno = EIO;
bool g_sticky = false;
const char* g_report = nullptr;

void configure() {
  if (g_at >= 0) return;
  const char* at = getenv("CLIPKIT_FAULT_AT");
  const char* e = getenv("CLIPKIT_FAULT_ERRNO");
  const char* s = getenv("CLIPKIT_FAULT_STICKY");
  g_errno = (e && strcmp(e, "ENOSPC") == 0) ? ENOSPC : EIO;
  g_sticky = s && strcmp(s, "1") == 0;
  g_report = getenv("CLIPKIT_FAULT_REPORT");
  g_at = at ? atol(at) : 0;
}

template <class F>
F real(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

void report(const char* text) {
  if (!g_report) return;
  using OpenFn = int (*)(const char*, int, ...);
  using WriteFn = ssize_t (*)(int, const void*, size_t);
  static const auto open_fn = real<OpenFn>("open");
  static const auto write_fn = real<WriteFn>("write");
  const int fd = open_fn(g_report, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  write_fn(fd, text, strlen(text));
  close(fd);
}

// True when this call must fail (errno is then set).
bool inject(const char* call, int fd) {
  if (fd >= 0 && fd <= 2) return false;
  configure();
  const long n = ++g_count;
  if (g_at <= 0) return false;
  if (n == g_at || (g_sticky && n > g_at)) {
    if (!g_fired.exchange(true)) {
      char text[96];
      snprintf(text, sizeof text, "%s %ld\n", call, n);
      report(text);
    }
    errno = g_errno;
    return true;
  }
  return false;
}

struct AtExit {
  ~AtExit() {
    configure();
    if (g_at <= 0 && g_report) {
      char text[64];
      snprintf(text, sizeof text, "count %ld\n", g_count.load());
      report(text);
    }
  }
} g_at_exit;

}  // namespace

extern "C" {

ssize_t write(int fd, const void* buf, size_t n) {
  static const auto f = real<ssize_t (*)(int, const void*, size_t)>("write");
  if (inject("write", fd)) return -1;
  return f(fd, buf, n);
}

ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  static const auto f = real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite");
  if (inject("pwrite", fd)) return -1;
  return f(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void* buf, size_t n, off64_t off) {
  static const auto f = real<ssize_t (*)(int, const void*, size_t, off64_t)>("pwrite64");
  if (inject("pwrite64", fd)) return -1;
  return f(fd, buf, n, off);
}

int ftruncate(int fd, off_t len) {
  static const auto f = real<int (*)(int, off_t)>("ftruncate");
  if (inject("ftruncate", fd)) return -1;
  return f(fd, len);
}

int ftruncate64(int fd, off64_t len) {
  static const auto f = real<int (*)(int, off64_t)>("ftruncate64");
  if (inject("ftruncate64", fd)) return -1;
  return f(fd, len);
}

int fsync(int fd) {
  static const auto f = real<int (*)(int)>("fsync");
  if (inject("fsync", fd)) return -1;
  return f(fd);
}

int fdatasync(int fd) {
  static const auto f = real<int (*)(int)>("fdatasync");
  if (inject("fdatasync", fd)) return -1;
  return f(fd);
}

int rename(const char* from, const char* to) {
  static const auto f = real<int (*)(const char*, const char*)>("rename");
  if (inject("rename", -1)) return -1;
  return f(from, to);
}

int renameat(int fromdir, const char* from, int todir, const char* to) {
  static const auto f = real<int (*)(int, const char*, int, const char*)>("renameat");
  if (inject("renameat", -1)) return -1;
  return f(fromdir, from, todir, to);
}

}  // extern "C"
