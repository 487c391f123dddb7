// libFuzzer target: raw HTTP request bytes to the search server (`clipkit serve`) over a small
// index of fixture images built with the tiny ViT model. Each input is answered as one connection
// that sent it and then shut its sending side (SearchServer::answer_connection): the transport's
// own request loop (Beast's parser with the server's header and body limits, the admission
// checks, multipart bodies, routing, the written answers) and the routes run in this process,
// in memory, on this thread. Several requests in one input are answered in turn (keep-alive). A
// crash or sanitizer report anywhere in the server counts, and so does an answer that does not
// start as an HTTP/1.1 response.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "clipkit/index.h"
#include "clipkit/model.h"
#include "clipkit/server.h"
#include "kernels/gemm.h"
#include "scratch.h"

namespace {

clipkit::SearchServer& served() {
  static clipkit::SearchServer* s = [] {
    namespace fs = std::filesystem;
    const std::string root = fuzzutil::scratch_path("http");
    fs::remove_all(root);
    fs::create_directories(root + "/images");
    for (const char* f : {"09_tiny_7x5.png", "10_small_40x50.png", "11_palette.png"})
      fs::copy_file(std::string(CLIPKIT_FUZZ_IMAGES) + "/" + f, root + "/images/" + f);
    // The model runs on this thread alone: a team of threads would wait for one another on
    // every layer of a text or image encoding, more than a small model's work takes.
    clipkit::set_num_threads(1);
    std::shared_ptr<clipkit::Model> model = clipkit::Model::load(CLIPKIT_FUZZ_MODEL);
    {
      clipkit::Index idx = clipkit::Index::create(root + "/idx", model->info());
      idx.add_files({root + "/images"}, *model, clipkit::AddOptions{});
    }
    clipkit::ServerOptions o;
    o.port = 0;
    o.max_upload_bytes = 1 << 20;
    o.decode_memory_bytes = 64u << 20;
    return new clipkit::SearchServer(clipkit::Index::open(root + "/idx", clipkit::Index::Mode::ReadOnly), model, o);
  }();
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  clipkit::SearchServer& s = served();
  const std::string out = s.answer_connection(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!out.empty() && out.compare(0, 9, "HTTP/1.1 ") != 0) {
    std::fprintf(stderr, "fuzz_http_request: the server wrote something other than an HTTP/1.1 answer: %.80s\n", out.c_str());
    std::abort();
  }
  return 0;
}
