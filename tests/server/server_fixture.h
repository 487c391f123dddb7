// Shared fixture of the server tests: a small index of generated images built with the tiny-vit
// fixture model, and helpers to talk HTTP to a server on 127.0.0.1.
#pragma once
#include <httplib.h>

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

}  // namespace clipkit::test
