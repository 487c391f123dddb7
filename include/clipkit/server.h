// clipkit/server.h — an image index served over HTTP: a JSON search API and a web page.
//
//   auto index = clipkit::Index::open("photos.idx", clipkit::Index::Mode::ReadOnly);
//   auto model = clipkit::Model::load(index.info().model_path);
//   clipkit::SearchServer server(std::move(index), model, {.port = 8080});
//   server.bind();   // throws clipkit::Error(Io) when the address is taken
//   server.run();    // serves until server.stop() is called (from any thread)
//
// The routes and their JSON are described in docs/server.md. Unless `writable`, the server only
// reads the index (it picks up changes other processes commit, within a second); it serves files
// only by catalog id and only while they hold the indexed bytes inside the indexed folders.
// Connections are served by an event loop (an idle or slow connection holds no thread) and
// requests are handled by a pool of threads; text and image queries are embedded concurrently (a
// Model is immutable), the index itself is used under one mutex.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "clipkit/index.h"

namespace clipkit {

class Model;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                        // 0 = a free port chosen by the system (see port())
  int http_threads = 8;                   // requests handled at once
  // Connections open at once; a connection beyond is answered 503 and closed. Each costs a file
  // descriptor and a few kilobytes while idle.
  int max_connections = 2048;
  // Deadlines: from a connection's start to the end of its first request's headers, and for a
  // whole request body; a client slower than either is disconnected. A kept-alive connection
  // may wait 5 s for its next request.
  int header_timeout_ms = 10000;
  int body_timeout_ms = 60000;
  // Request bodies held at once, all connections together: a body that does not fit is answered
  // 503 (with Retry-After) before it is read.
  size_t body_memory_bytes = 256u << 20;
  size_t max_upload_bytes = 16u << 20;    // request bodies above this are refused (413)
  size_t max_json_bytes = 1u << 20;       // JSON query bodies above this are refused (413)
  uint64_t max_upload_pixels = 16'000'000;  // uploaded images above this are refused (413)
  // Memory for uploads being decoded at once: an upload whose decoding would need more than is
  // left waits for it a few seconds, then gets 503; one needing more than all of it gets 413.
  size_t decode_memory_bytes = 512u << 20;
  // Host header names accepted besides localhost, 127.x.x.x, [::1] and `host` itself when it is
  // a specific address; any other Host gets 403 (a page on another site cannot reach the server
  // through a name that resolves to it).
  std::vector<std::string> allowed_hosts;
  // When not empty, every request needs `Authorization: Bearer <token>` (401 without, 403 wrong).
  std::string token;
  int max_k = 1000;                       // larger k values are reduced to this
  // Memory for cached answers and query embeddings (half for the answers of searches, similar
  // items and item records, valid until the next committed change of the catalog; a quarter each
  // for the vectors of text queries and of uploaded images, exact since the model is fixed).
  // 0: nothing is cached.
  size_t cache_bytes = 64u << 20;
  // Writes (POST /api/items, DELETE /api/items/{id}, PATCH /api/items/{id}/meta) are accepted only
  // when set, and then need `token`; the index must be open in Index::Mode::Shared.
  bool writable = false;
  // Folders under which POST /api/items may name files (resolved at start).
  std::vector<std::string> allowed_roots;
  // Folder where uploaded images are stored (as SHA-256.ext) before they are indexed; empty:
  // uploads are refused.
  std::string upload_dir;
  // Called once per request, from the thread that answered it, with a line such as
  // `2024-05-01T10:00:00Z 127.0.0.1 GET /api/search?text=cat 200 1834B 12.5ms`. Null: no log.
  std::function<void(const std::string&)> log;
};

class SearchServer {
 public:
  // `model` must be the index's model (Error(Mismatch) otherwise). Nothing is bound yet.
  SearchServer(Index index, std::shared_ptr<const Model> model, ServerOptions options = {});
  ~SearchServer();
  SearchServer(const SearchServer&) = delete;
  SearchServer& operator=(const SearchServer&) = delete;

  // Binds host:port and returns the port (the chosen one when options.port is 0). Throws
  // Error(Io) when the address cannot be bound.
  int bind();
  // Serves until stop(); binds first when bind() was not called. Returns after the requests in
  // flight have been answered.
  void run();
  // Makes run() return; safe to call from any thread, before or during run(), more than once.
  void stop();
  // Blocks until run() is accepting connections (true) or has ended / failed to start (false).
  bool wait_until_running() const;
  int port() const;

  // Answers the HTTP/1.1 requests in `bytes` as the server answers a connection that sent them
  // and then shut its sending side, in memory on the calling thread: the same parsing, limits,
  // checks and routes, without a socket (no bind() or run() needed; the client is 127.0.0.1).
  // Returns the bytes the server writes back (nothing once stop() was called). For tests and
  // fuzzing.
  std::string answer_connection(std::string_view bytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The server keeps the thumbnails of the web page in `thumbs/` of the index folder, one per
// content (SHA-256). Deletes those whose content the catalog no longer holds (its last path was
// removed, or the file was indexed again with other bytes) and the leftovers of interrupted
// writes; returns how many files were deleted. `clipkit index remove` and `index add` call it.
int64_t remove_stale_thumbnails(const Index& index);

}  // namespace clipkit
