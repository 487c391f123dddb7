// Shared fixture of the server tests: a small index of generated images built with the tiny-vit
// fixture model, and helpers to talk HTTP to a server on 127.0.0.1.
#pragma once
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clipkit/index.h"
#include "clipkit/model.h"
#include "search/search_helpers.h"
#include "support/test_support.h"

namespace clipkit::test {

struct ServerData {
  std::string root;                      // temp folder
  std::string images;                    // root/images: the indexed pictures
  std::string index_dir;                 // root/idx
  std::shared_ptr<Model> model;          // tiny-vit
  std::vector<std::string> files;        // every indexed file (absolute)
  std::string duplicate;                 // a second path with the bytes of files[0]
  std::string gone;                      // indexed, then deleted from disk
  std::string upload;                    // an image that is NOT in the index (for uploads)
};

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Builds the index once per process: 10 pictures, 3 of them tagged "special" in a sub-folder, a
// duplicate of the first picture, and one picture deleted after indexing.
inline const ServerData& server_data() {
  static const ServerData d = [] {
    namespace fs = std::filesystem;
    ServerData x;
    x.root = temp_dir();
    x.images = x.root + "/images";
    x.index_dir = x.root + "/idx";
    fs::create_directories(x.images + "/special");
    fs::create_directories(x.images + "/copies");
    for (int k = 0; k < 7; ++k) {
      const std::string p = x.images + "/pic" + std::to_string(k) + ".png";
      write_synthetic_png(p, k, 40 + 4 * k, 32);
      x.files.push_back(p);
    }
    for (int k = 7; k < 10; ++k) {
      const std::string p = x.images + "/special/pic" + std::to_string(k) + ".png";
      write_synthetic_png(p, 3 * k, 36, 36);
      x.files.push_back(p);
    }
    x.duplicate = x.images + "/copies/same_as_pic0.png";
    copy_file_bytes(x.files[0], x.duplicate);
    x.gone = x.images + "/gone.png";
    write_synthetic_png(x.gone, 40, 30, 30);
    x.upload = x.root + "/query.png";
    write_synthetic_png(x.upload, 2, 44, 30);  // close to pic2, but other bytes

    x.model = Model::load(data_path("models/tiny-vit.safetensors"));
    Index idx = Index::create(x.index_dir, x.model->info());
    AddOptions plain;
    auto r = idx.add_files({x.images}, *x.model, plain);  // pic0..6 and gone.png
    if (r.failed != 0) throw std::runtime_error("fixture: indexing failed: " + r.failures.at(0).reason);
    AddOptions tagged;
    tagged.tags = {"special"};
    r = idx.add_files({x.images + "/special"}, *x.model, tagged);
    if (r.failed != 0) throw std::runtime_error("fixture: indexing failed");
    r = idx.add_files({x.duplicate}, *x.model, plain);
    if (r.duplicates != 1) throw std::runtime_error("fixture: the duplicate was not recognised");
    fs::remove(x.gone);
    return x;
  }();
  return d;
}

struct HttpResult {
  int status = 0;       // 0: no answer
  std::string body;
  std::string content_type;
  nlohmann::json json;  // parsed body when it is JSON
};

inline HttpResult to_result(const httplib::Result& r) {
  HttpResult out;
  if (!r) return out;
  out.status = r->status;
  out.body = r->body;
  out.content_type = r->get_header_value("Content-Type");
  if (out.content_type.rfind("application/json", 0) == 0) out.json = nlohmann::json::parse(out.body, nullptr, false);
  return out;
}

inline std::unique_ptr<httplib::Client> make_client(int port) {
  auto c = std::make_unique<httplib::Client>("127.0.0.1", port);
  c->set_connection_timeout(10);
  c->set_read_timeout(120);
  c->set_write_timeout(30);
  return c;
}

inline HttpResult http_get(int port, const std::string& target) { return to_result(make_client(port)->Get(target.c_str())); }

inline HttpResult http_post(int port, const std::string& target, const std::string& body, const std::string& type) {
  return to_result(make_client(port)->Post(target.c_str(), body, type.c_str()));
}

// Sends raw bytes on a fresh connection and returns the first response (its headers and a body of
// Content-Length bytes), or what came before the server closed the connection or `max_wait_s`
// passed. With `half_close` our side is shut after sending (the server answers what it received,
// then closes) and everything until the close is returned.
inline std::string raw_exchange(int port, const std::string& data, bool half_close = false, int max_wait_s = 20) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval tv{max_wait_s, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string got;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    (void)!::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (half_close) ::shutdown(fd, SHUT_WR);
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
      const size_t end = got.find("\r\n\r\n");
      if (half_close || end == std::string::npos) continue;
      size_t length = 0;
      const size_t cl = got.find("Content-Length: ");
      if (cl != std::string::npos && cl < end) length = std::stoul(got.substr(cl + 16));
      if (got.size() >= end + 4 + length) break;
    }
  }
  ::close(fd);
  return got;
}

inline int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}


// A lossless WebP of width x height pixels of one colour, a few dozen bytes whatever its size: every
// prefix code has a single symbol, so the pixels take no bits (a picture that is cheap to send and
// expensive to decode).
inline std::string solid_lossless_webp(int width, int height) {
  std::string bits;  // the VP8L bit stream, least significant bit first
  uint64_t acc = 0;
  int n = 0;
  auto put = [&](uint32_t v, int count) {
    acc |= static_cast<uint64_t>(v) << n;
    n += count;
    while (n >= 8) {
      bits += static_cast<char>(acc & 0xff);
      acc >>= 8;
      n -= 8;
    }
  };
  put(0x2f, 8);                                    // signature
  put(static_cast<uint32_t>(width - 1), 14);
  put(static_cast<uint32_t>(height - 1), 14);
  put(0, 1);                                       // no alpha
  put(0, 3);                                       // version 0
  put(0, 1);                                       // no transform
  put(0, 1);                                       // no colour cache
  put(0, 1);                                       // no meta prefix codes
  for (uint32_t symbol : {0x80u, 0x40u, 0x20u, 0xffu, 0u}) {  // green, red, blue, alpha, distance
    put(1, 1);                                     // simple code
    put(0, 1);                                     // one symbol
    put(1, 1);                                     // written with 8 bits
    put(symbol, 8);
  }
  if (n > 0) put(0, 8 - n);
  auto le32 = [](uint32_t v) {
    return std::string{static_cast<char>(v & 0xff), static_cast<char>((v >> 8) & 0xff), static_cast<char>((v >> 16) & 0xff),
                       static_cast<char>(v >> 24)};
  };
  if (bits.size() % 2) bits += '\0';
  const std::string chunk = "VP8L" + le32(static_cast<uint32_t>(bits.size())) + bits;
  return "RIFF" + le32(static_cast<uint32_t>(4 + chunk.size())) + "WEBP" + chunk;
}

}  // namespace clipkit::test
