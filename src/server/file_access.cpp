#include "server/file_access.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

#include "server/http_util.h"

namespace clipkit::server {

#ifdef O_PATH
constexpr int kDirOpenFlags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
#else
constexpr int kDirOpenFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
#endif

int open_without_links(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    errno = EINVAL;
    return -1;
  }
  int dir = ::open("/", kDirOpenFlags);
  if (dir < 0) return -1;
  size_t at = 1;
  for (;;) {
    const size_t slash = path.find('/', at);
    const std::string part = path.substr(at, slash == std::string::npos ? std::string::npos : slash - at);
    const bool last = slash == std::string::npos;
    const int next = part.empty() ? -1
                                  : ::openat(dir, part.c_str(), last ? O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC : kDirOpenFlags);
    const int saved = part.empty() ? EINVAL : errno;
    ::close(dir);
    if (next < 0) {
      errno = saved;
      return -1;
    }
    if (last) return next;
    dir = next;
    at = slash + 1;
  }
}

std::string sha256_of(int fd, uint64_t size) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx) return "";
  std::string hex;
  if (EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1) {
    std::vector<char> buf(64 * 1024);
    uint64_t done = 0;
    bool ok = true;
    while (ok && done < size) {
      const ssize_t n = ::pread(fd, buf.data(), static_cast<size_t>(std::min<uint64_t>(buf.size(), size - done)), static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(n)) != 1) ok = false;
      done += n > 0 ? static_cast<uint64_t>(n) : 0;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (ok && EVP_DigestFinal_ex(ctx, md, &len) == 1) {
      static const char* digits = "0123456789abcdef";
      for (unsigned int i = 0; i < len; ++i) {
        hex += digits[md[i] >> 4];
        hex += digits[md[i] & 15];
      }
    }
  }
  EVP_MD_CTX_free(ctx);
  return hex;
}

std::string real_path(const std::string& path) {
  char* r = ::realpath(path.c_str(), nullptr);
  if (!r) return "";
  std::string out(r);
  std::free(r);
  return out;
}

std::string parent_folder(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return "";
  return slash == 0 ? "/" : path.substr(0, slash);
}

ByteRange parse_range(const std::string& header, uint64_t size) {
  ByteRange r;
  auto trim = [](std::string x) {
    while (!x.empty() && (x.back() == ' ' || x.back() == '\t')) x.pop_back();
    size_t b = 0;
    while (b < x.size() && (x[b] == ' ' || x[b] == '\t')) ++b;
    return x.substr(b);
  };
  const std::string h = trim(header);
  if (lower(h.substr(0, 6)) != "bytes=") return r;
  const std::string spec = trim(h.substr(6));
  if (spec.empty() || spec.find(',') != std::string::npos) return r;
  const size_t dash = spec.find('-');
  if (dash == std::string::npos) return r;
  auto number = [](const std::string& t, uint64_t* v) {  // saturates beyond 18 digits
    if (t.empty()) return false;
    uint64_t x = 0;
    for (char c : t) {
      if (c < '0' || c > '9') return false;
      x = x > 100'000'000'000'000'000ull ? x : x * 10 + static_cast<uint64_t>(c - '0');
    }
    *v = x;
    return true;
  };
  const std::string a = trim(spec.substr(0, dash)), b = trim(spec.substr(dash + 1));
  uint64_t first = 0, last = 0;
  if (a.empty()) {  // the last b bytes
    if (!number(b, &last)) return r;
    if (last == 0 || size == 0) {
      r.kind = ByteRange::Unsatisfiable;
      return r;
    }
    r.kind = ByteRange::Part;
    r.first = size - std::min(last, size);
    r.last = size - 1;
    return r;
  }
  if (!number(a, &first)) return r;
  if (b.empty()) {
    last = UINT64_MAX;
  } else if (!number(b, &last) || last < first) {
    return r;
  }
  if (first >= size) {
    r.kind = ByteRange::Unsatisfiable;
    return r;
  }
  r.kind = ByteRange::Part;
  r.first = first;
  r.last = std::min(last, size - 1);
  return r;
}

}  // namespace clipkit::server
