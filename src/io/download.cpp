#include "io/download.h"

#include <fcntl.h>
#include <httplib.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>

#include "clipkit/error.h"

namespace clipkit {

namespace fs = std::filesystem;

namespace {

ModelSource openai(const std::string& name, const std::string& sha, const std::string& file) {
  return {name, "openai-jit", "", {{file, "https://openaipublic.azureedge.net/clip/models/" + sha + "/" + file, sha}}};
}

ModelSource hf(const std::string& repo) {
  ModelSource m{repo, "hf", repo.substr(repo.find('/') + 1), {}};
  for (const char* f : {"config.json", "preprocessor_config.json", "model.safetensors"})
    m.files.push_back({f, "https://huggingface.co/" + repo + "/resolve/main/" + f, ""});
  return m;
}

// A Hugging Face folder of the given files; `from` names another repository for a file stored
// there instead ("repo:file").
ModelSource hf_files(const std::string& repo, const std::string& folder, const std::vector<std::string>& files) {
  ModelSource m{repo, "hf", folder, {}};
  for (const auto& f : files) {
    const size_t colon = f.find(':');
    const std::string from = colon == std::string::npos ? repo : f.substr(0, colon);
    const std::string name = colon == std::string::npos ? f : f.substr(colon + 1);
    m.files.push_back({name, "https://huggingface.co/" + from + "/resolve/main/" + name, ""});
  }
  return m;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// What went wrong in words (httplib names its errors "Connection", "Read", ...). `err` is errno
// right after the request, named when it is a network error.
std::string describe_http_error(httplib::Error e, const std::string& origin, int err) {
  const bool net = err == ECONNREFUSED || err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH ||
                   err == ECONNRESET || err == EADDRNOTAVAIL || err == ENETDOWN;
  const std::string why = net ? std::string(" (") + std::strerror(err) + ")" : std::string();
  switch (e) {
    case httplib::Error::Connection:
      return "cannot connect to " + origin + (net ? why : " (host not found, connection refused or network unreachable)");
    case httplib::Error::ConnectionTimeout: return "connecting to " + origin + " timed out";
    case httplib::Error::Read: return "the connection to " + origin + " broke while receiving" + why;
    case httplib::Error::Write: return "the connection to " + origin + " broke while sending the request" + why;
    case httplib::Error::ExceedRedirectCount: return "too many redirects from " + origin;
    case httplib::Error::Canceled: return "cancelled";
    case httplib::Error::SSLConnection: return "the TLS handshake with " + origin + " failed";
    case httplib::Error::SSLLoadingCerts: return "cannot load the system's CA certificates";
    case httplib::Error::SSLServerVerification: return "the TLS certificate of " + origin + " could not be verified";
    case httplib::Error::Compression: return "cannot decompress the response of " + origin;
    default: return "network error (" + httplib::to_string(e) + ")" + why;
  }
}

std::string http_status_text(int status) {
  switch (status) {
    case 400: return " Bad Request";
    case 401: return " Unauthorized";
    case 403: return " Forbidden";
    case 404: return " Not Found";
    case 410: return " Gone";
    case 429: return " Too Many Requests";
    case 500: return " Internal Server Error";
    case 502: return " Bad Gateway";
    case 503: return " Service Unavailable";
    case 504: return " Gateway Timeout";
    default: return "";
  }
}

struct Url {
  std::string origin;  // scheme://host[:port]
  std::string path;    // /... (with query)
};

Url split_url(const std::string& url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) throw Error(ErrorCode::InvalidArgument, "malformed URL '" + url + "' (no scheme)");
  const std::string scheme = lower(url.substr(0, scheme_end));
  if (scheme != "http" && scheme != "https")
    throw Error(ErrorCode::InvalidArgument, "unsupported URL scheme in '" + url + "' (http and https only)");
  const size_t path_start = url.find('/', scheme_end + 3);
  Url u;
  u.origin = url.substr(0, path_start);
  u.path = path_start == std::string::npos ? "/" : url.substr(path_start);
  if (u.origin.size() <= scheme_end + 3) throw Error(ErrorCode::InvalidArgument, "malformed URL '" + url + "' (no host)");
  return u;
}

struct FileCloser {
  void operator()(FILE* f) const {
    if (f) std::fclose(f);
  }
};

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::string hex(const unsigned char* d, unsigned n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < n; ++i) {
    s.push_back(digits[d[i] >> 4]);
    s.push_back(digits[d[i] & 15]);
  }
  return s;
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1)
      throw Error(ErrorCode::Internal, "OpenSSL SHA-256 initialisation failed");
  }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* d, size_t n) { EVP_DigestUpdate(ctx_, d, n); }
  std::string hex_digest() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    return hex(md, len);
  }

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace

const std::vector<ModelSource>& known_models() {
  // OpenAI's published checkpoints (clip/clip.py `_MODELS`): the URL path holds the file's SHA-256.
  static const std::vector<ModelSource> models = {
      openai("RN50", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", "RN50.pt"),
      openai("RN101", "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", "RN101.pt"),
      openai("RN50x4", "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd", "RN50x4.pt"),
      openai("RN50x16", "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", "RN50x16.pt"),
      openai("RN50x64", "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c", "RN50x64.pt"),
      openai("ViT-B/32", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt"),
      openai("ViT-B/16", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt"),
      openai("ViT-L/14", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt"),
      openai("ViT-L/14@336px", "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
             "ViT-L-14-336px.pt"),
      hf("openai/clip-vit-base-patch32"),
      hf("openai/clip-vit-base-patch16"),
      hf("openai/clip-vit-large-patch14"),
      hf("openai/clip-vit-large-patch14-336"),
      // Multilingual text towers (docs/multilingual.md): M-CLIP folders, paired with the image
      // model named in each (--text-model), and open_clip's XLM-RoBERTa CLIP models with
      // XLM-RoBERTa's tokenizer beside the weights.
      hf_files("M-CLIP/XLM-Roberta-Large-Vit-B-32", "XLM-Roberta-Large-Vit-B-32",
               {"config.json", "pytorch_model.bin", "sentencepiece.bpe.model"}),
      hf_files("M-CLIP/XLM-Roberta-Large-Vit-L-14", "XLM-Roberta-Large-Vit-L-14",
               {"config.json", "pytorch_model.bin", "sentencepiece.bpe.model"}),
      hf_files("M-CLIP/XLM-Roberta-Large-Vit-B-16Plus", "XLM-Roberta-Large-Vit-B-16Plus",
               {"config.json", "pytorch_model.bin", "sentencepiece.bpe.model"}),
      hf_files("laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k", "CLIP-ViT-B-32-xlm-roberta-base",
               {"open_clip_pytorch_model.bin", "FacebookAI/xlm-roberta-base:sentencepiece.bpe.model"}),
      hf_files("laion/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k", "CLIP-ViT-H-14-xlm-roberta-large",
               {"open_clip_pytorch_model.bin", "FacebookAI/xlm-roberta-large:sentencepiece.bpe.model"}),
  };
  return models;
}

const ModelSource* find_model(const std::string& name) {
  const std::string want = lower(name);
  for (const auto& m : known_models()) {
    std::string n = lower(m.name);
    if (n == want) return &m;
    if (m.kind == "openai-jit") {
      std::replace(n.begin(), n.end(), '/', '-');
      if (n == want) return &m;
    }
  }
  return nullptr;
}

std::string model_path(const ModelSource& model, const std::string& dir) {
  const fs::path d(dir);
  if (!model.folder.empty()) return (d / model.folder).string();
  return (d / model.files.at(0).name).string();
}

std::string sha256_digest_hex(const void* data, size_t size) {
  Sha256 h;
  h.update(data, size);
  return h.hex_digest();
}

std::string sha256_file(const std::string& path) {
  std::unique_ptr<FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) throw Error(errno == ENOENT ? ErrorCode::NotFound : ErrorCode::Io,
                      "cannot open '" + path + "': " + std::strerror(errno));
  Sha256 h;
  // 64 KiB reads hash as fast as larger ones; the buffer is not zero-filled (fread fills it).
  constexpr size_t kChunk = 64 << 10;
  const std::unique_ptr<char[]> buf(new char[kChunk]);
  size_t n;
  while ((n = std::fread(buf.get(), 1, kChunk, f.get())) > 0) h.update(buf.get(), n);
  if (std::ferror(f.get())) throw Error(ErrorCode::Io, "cannot read '" + path + "'");
  return h.hex_digest();
}

std::string rebase_url(const std::string& url, const std::string& base) {
  if (base.empty()) return url;
  std::string b = base;
  while (!b.empty() && b.back() == '/') b.pop_back();
  return b + split_url(url).path;
}

namespace {

std::string effective_base(const DownloadOptions& options) {
  if (!options.base_url.empty()) return options.base_url;
  const char* env = std::getenv("CLIPKIT_DOWNLOAD_BASE_URL");
  return env ? env : "";
}

constexpr int kMaxRedirects = 10;

// The absolute URL a redirect's Location names, relative to the request it answered.
std::string resolve_location(const std::string& location, const Url& from) {
  if (location.rfind("http://", 0) == 0 || location.rfind("https://", 0) == 0) return location;
  if (!location.empty() && location[0] == '/') return from.origin + location;
  const size_t slash = from.path.rfind('/');
  return from.origin + (slash == std::string::npos ? "/" : from.path.substr(0, slash + 1)) + location;
}

bool is_sha256_hex(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

}  // namespace

std::string hub_published_sha256(const std::string& url_in, const DownloadOptions& options) {
  const std::string url = rebase_url(url_in, effective_base(options));
  const Url u = split_url(url);
  httplib::Client cli(u.origin);
  cli.set_follow_location(false);  // the header belongs to the hub's own answer, not to the storage it redirects to
  cli.set_connection_timeout(options.connect_timeout_s, 0);
  cli.set_read_timeout(options.read_timeout_s, 0);
  auto res = cli.Head(u.path, {{"User-Agent", "clipkit"}, {"Accept-Encoding", "identity"}});
  if (!res) throw Error(ErrorCode::Io, "cannot reach " + url + ": " + httplib::to_string(res.error()));
  std::string tag = res->get_header_value("X-Linked-Etag");
  if (tag.rfind("W/", 0) == 0) tag = tag.substr(2);
  tag.erase(std::remove(tag.begin(), tag.end(), '"'), tag.end());
  return is_sha256_hex(tag) ? lower(tag) : "";
}

DownloadResult download_file(const std::string& url_in, const std::string& dest, const std::string& expected_sha256,
                             const DownloadOptions& options) {
  const std::string url = rebase_url(url_in, effective_base(options));
  const std::string expected = lower(expected_sha256);
  DownloadResult r;
  r.path = dest;
  std::error_code ec;
  if (fs::exists(dest, ec) && !fs::is_regular_file(dest, ec))
    throw Error(ErrorCode::Io, "'" + dest + "' exists and is not a regular file");
  const fs::path parent = fs::path(dest).parent_path();
  if (!parent.empty()) {
    fs::create_directories(parent, ec);
    if (ec) throw Error(ErrorCode::Io, "cannot create folder '" + parent.string() + "': " + ec.message());
  }
  if (fs::is_regular_file(dest, ec)) {
    const std::string have = sha256_file(dest);
    if (expected.empty() || have == expected) {
      r.sha256 = have;
      r.bytes = fs::file_size(dest);
      r.already_present = true;
      r.verified = !expected.empty();
      return r;
    }
    // A stale or corrupt file: fetch again; it is replaced only once the new one verifies.
  }

  const std::string part = dest + ".part";
  uint64_t offset = fs::is_regular_file(part, ec) ? fs::file_size(part, ec) : 0;
  // With a base-URL override every request goes to that server, redirects included: they are
  // followed here, rebased like the first URL, instead of by the HTTP client.
  const std::string base = effective_base(options);
  std::string request_url = url;
  std::string redirect;  // Location of a redirect answer to follow (override only)
  httplib::Headers headers = {{"User-Agent", "clipkit"}, {"Accept-Encoding", "identity"}};
  if (offset > 0) headers.emplace("Range", "bytes=" + std::to_string(offset) + "-");

  std::unique_ptr<FILE, FileCloser> out;
  std::string failure;  // set by the handlers; the request is then cancelled
  int status = 0;
  uint64_t total = 0;
  const std::string fname = fs::path(dest).filename().string();
  auto on_response = [&](const httplib::Response& res) {
    status = res.status;
    if (!base.empty() && res.status >= 300 && res.status < 400 && res.has_header("Location")) {
      redirect = res.get_header_value("Location");
      return false;
    }
    if (res.status == 206 && offset > 0) {
      // Content-Range: bytes START-END/TOTAL must continue the partial file.
      const std::string cr = res.get_header_value("Content-Range");
      unsigned long long start = 0, end = 0, tot = 0;
      if (std::sscanf(cr.c_str(), "bytes %llu-%llu/%llu", &start, &end, &tot) < 2 || start != offset) {
        failure = "server answered the resume request with Content-Range '" + cr + "', expected one starting at " +
                  std::to_string(offset);
        return false;
      }
      total = tot;
      out.reset(std::fopen(part.c_str(), "ab"));
    } else if (res.status == 200) {
      offset = 0;  // the server ignored the Range request (or none was sent): start over
      if (res.has_header("Content-Length")) total = std::strtoull(res.get_header_value("Content-Length").c_str(), nullptr, 10);
      out.reset(std::fopen(part.c_str(), "wb"));
    } else if (res.status == 416 && offset > 0) {
      return false;  // the .part file already holds everything; it is verified below
    } else {
      failure = "the server answered HTTP " + std::to_string(res.status) + http_status_text(res.status) + " for " + url;
      return false;
    }
    if (!out) {
      failure = "cannot write '" + part + "': " + std::strerror(errno);
      return false;
    }
    return true;
  };
  uint64_t got = 0;
  auto on_data = [&](const char* data, size_t len) {
    if (std::fwrite(data, 1, len, out.get()) != len) {
      failure = "cannot write '" + part + "': " + std::strerror(errno);
      return false;
    }
    got += len;
    if (options.progress) options.progress(fname, offset + got, total);
    return true;
  };
  std::optional<httplib::Result> res;
  int net_errno = 0;
  Url u;
  for (int hops = 0;; ++hops) {
    u = split_url(request_url);
    httplib::Client cli(u.origin);
    cli.set_follow_location(base.empty());
    cli.set_connection_timeout(options.connect_timeout_s, 0);
    cli.set_read_timeout(options.read_timeout_s, 0);
    cli.set_decompress(false);  // bytes as stored: the hash and the Content-Length refer to them
    redirect.clear();
    errno = 0;
    res.emplace(cli.Get(u.path, headers, on_response, on_data));
    net_errno = errno;
    if (redirect.empty()) break;
    if (hops >= kMaxRedirects) throw Error(ErrorCode::Io, "download of '" + dest + "' failed: too many redirects from " + url);
    request_url = rebase_url(resolve_location(redirect, u), base);
  }
  if (out) {
    if (std::fflush(out.get()) != 0 || ::fsync(fileno(out.get())) != 0) {
      failure = failure.empty() ? "cannot write '" + part + "': " + std::strerror(errno) : failure;
    }
    out.reset();
  }
  if (!failure.empty()) throw Error(ErrorCode::Io, "download of '" + dest + "' failed: " + failure);
  if (!(status == 416 && offset > 0)) {
    if (!*res) {
      throw Error(ErrorCode::Io, "download of '" + dest + "' from " + url + " failed: " +
                                     describe_http_error(res->error(), u.origin, net_errno) +
                                     (fs::exists(part, ec) ? " (the partial file '" + part + "' is kept; run again to resume)" : ""));
    }
    if (total > 0 && offset + got != total) {
      throw Error(ErrorCode::Io, "download of '" + dest + "' stopped after " + std::to_string(offset + got) + " of " +
                                     std::to_string(total) + " bytes (run again to resume)");
    }
  }
  r.fetched = got;
  r.resumed_from = offset;
  r.sha256 = sha256_file(part);
  if (!expected.empty() && r.sha256 != expected) {
    fs::remove(part, ec);
    throw Error(ErrorCode::Mismatch, "checksum mismatch for '" + dest + "': expected SHA-256 " + expected + ", got " +
                                         r.sha256 + " (the partial download was removed)");
  }
  r.verified = !expected.empty();
  fs::rename(part, dest, ec);
  if (ec) throw Error(ErrorCode::Io, "cannot rename '" + part + "' to '" + dest + "': " + ec.message());
  fsync_dir(parent);
  r.bytes = fs::file_size(dest);
  return r;
}

std::vector<DownloadResult> download_model(const std::string& name, const std::string& dir, const DownloadOptions& options) {
  const ModelSource* m = find_model(name);
  if (!m) {
    std::string names;
    for (const auto& k : known_models()) names += (names.empty() ? "" : ", ") + k.name;
    throw Error(ErrorCode::NotFound, "unknown model '" + name + "' (known: " + names + ")");
  }
  std::vector<DownloadResult> out;
  const fs::path base = m->folder.empty() ? fs::path(dir) : fs::path(dir) / m->folder;
  for (const auto& f : m->files) out.push_back(download_file(f.url, (base / f.name).string(), f.sha256, options));
  return out;
}

}  // namespace clipkit
