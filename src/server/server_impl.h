// The state of `clipkit serve` shared by its routes (private to src/server/). The routes are
// defined by concept: server.cpp (start, admission, logging, the page), read_routes.cpp (searches,
// recommendations, items, fields), write_routes.cpp (changes, --writable), file_routes.cpp (item
// images and thumbnails).
//
// Concurrency: connections are served by an event loop (server/transport.h) and requests run on
// its pool of compute threads (`http_threads`), the changes (write_routes.cpp) on the transport's
// write lane, a thread of their own, so that they never queue behind reads. The Model is immutable and encodes
// from several threads at once. Index runs its reads in parallel, each on an immutable snapshot
// (and its own catalog connection), and its changes beside them without waiting for them (see
// src/search/call_lock.h); the routes take no lock of their own around reads. Every change is one
// Index call (an upload with its tags and metadata is one commit), so a read sees it whole or not
// at all; the routes that change the index hold `change_mu` (change_lock), so that a change and
// what its answer reports (the item, the generation) are one step. `folders_mu` guards the
// server's own state (served_folders). Index::embed_query reads nothing but the dimension and
// model fingerprint fixed at open for text and vector terms; item terms are turned into vector
// terms (the stored vector) first, exactly as Index::search would resolve them, so the results
// equal Index::search for the same query.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "clipkit/model.h"
#include "clipkit/search_request.h"
#include "clipkit/server.h"
#include "server/decode_budget.h"
#include "server/file_access.h"
#include "server/http_util.h"
#include "server/lru_cache.h"
#include "server/thumbnail.h"
#include "server/transport.h"
#include "vision/decode_hook.h"

namespace clipkit {

namespace server {

// JSON bodies deeper than this are refused before they are built.
inline constexpr int kMaxJsonDepth = 16;

// Decoding an upload needs about this many bytes per pixel at its peak (the decoder's buffers, the
// decoded image and the resampled copies of the preprocessing).
inline constexpr uint64_t kDecodeBytesPerPixel = 16;
// Item files up to this size are read whole by the request's handler; larger ones are streamed.
inline constexpr uint64_t kInlineFileBytes = 256u << 10;
// Files larger than this get no thumbnail (the file is read whole before decoding).
inline constexpr uint64_t kMaxThumbnailSourceBytes = 256ull << 20;
// How long an upload waits for other decodings to give their memory back before a 503.
inline constexpr std::chrono::milliseconds kDecodeWait{10000};

// Shares of ServerOptions::cache_bytes: encoded answers, text query vectors, upload vectors.
inline constexpr size_t kAnswerCacheShare = 2, kTextCacheShare = 4, kUploadCacheShare = 4;  // 1/2, 1/4, 1/4

// The event-driven HTTP transport; routes are registered on it as on cpp-httplib's Server.
using HttpServer = EventHttpServer;

}  // namespace server

struct SearchServer::Impl {
  Index index;
  std::shared_ptr<const Model> model;
  ServerOptions opt;
  std::mutex change_mu;   // held by the routes that change the index, one at a time
  std::unique_lock<std::mutex> change_lock() { return std::unique_lock<std::mutex>(change_mu); }
  std::mutex folders_mu;  // served_folders and folders_dirty change under it
  server::HttpServer http;
  int bound_port = -1;
  std::atomic<bool> stopping{false}, run_started{false}, run_finished{false};
  mutable server::DecodeBudget decode_budget;
  std::set<std::string> allowed_hosts;             // host names accepted besides the loopback ones
  // Folders of indexed files, resolved (at start, and again after the catalog moved); replaced
  // under folders_mu, read through a copy of the pointer.
  std::shared_ptr<const std::unordered_set<std::string>> served_folders;
  std::string index_folder;                        // the index folder, resolved
  server::ThumbnailCache thumbs{""};               // in the index folder
  std::atomic<bool> folders_dirty{false};          // the catalog moved: served_folders may lack new folders
  std::vector<std::string> roots;                  // allowed roots of POST /api/items, resolved
  // Caches (bounded by opt.cache_bytes). Answers of the read routes that depend only on the
  // request target and the catalog: valid for the generation `answers_generation` and emptied when
  // the catalog moves on. Query vectors of text-only queries and embeddings of uploaded images
  // (by SHA-256): the model is fixed, so these stay valid for the server's life.
  server::LruCache<std::shared_ptr<const std::string>> answers;
  mutable server::LruCache<std::shared_ptr<const std::vector<float>>> text_vectors;
  mutable server::LruCache<std::shared_ptr<const std::vector<float>>> upload_vectors;
  std::mutex answers_mu;
  int64_t answers_generation = -1;

  Impl(Index idx, std::shared_ptr<const Model> m, ServerOptions o);

  // ---- server.cpp: state, admission, logging, the routes ------------------------------------

  std::shared_ptr<const std::unordered_set<std::string>> resolve_folders();
  // Catches up with commits of other processes.
  void refresh_locked();
  void log_request(const httplib::Request& req, const httplib::Response& res);
  int admission(const httplib::Request& req, httplib::Response& res) const;
  void setup_routes();

  // Runs a handler, turning every failure into a JSON error with its status.
  template <class F>
  void guarded(httplib::Response& res, F&& f) {
    try {
      f();
    } catch (const server::HttpError& e) {
      if (e.status == 503) res.set_header("Retry-After", "1");
      server::send_error(res, e.status, e.what());
    } catch (const Error& e) {
      server::send_error(res, server::status_for(e.code()), e.what());
    } catch (const std::bad_alloc&) {
      server::send_error(res, 500, "out of memory");
    } catch (const std::exception& e) {
      server::send_error(res, 500, std::string("internal error: ") + e.what());
    }
  }

  // Runs `f` (which decodes an image) with a hook that takes the decoding memory from the budget
  // once the header has given the size, before any pixel is allocated; the memory is given back
  // when `f` returns (its pixels gone). `what` names the image in errors.
  template <class F>
  auto with_decode_budget(const std::string& what, F&& f) const {
    size_t held = 0;
    struct GiveBack {
      server::DecodeBudget& budget;
      size_t& held;
      ~GiveBack() { budget.release(held); }
    } give_back{decode_budget, held};
    const vision::ScopedDimensionHook hook([&](int64_t width, int64_t height) {
      const uint64_t pixels = static_cast<uint64_t>(width) * static_cast<uint64_t>(height);
      const uint64_t need = pixels > UINT64_MAX / server::kDecodeBytesPerPixel ? UINT64_MAX : pixels * server::kDecodeBytesPerPixel;
      if (need <= held) return;
      const std::string size = std::to_string(width) + "x" + std::to_string(height);
      if (need > decode_budget.capacity())
        throw server::HttpError(413, what + " is " + size + ": decoding it needs about " + std::to_string(need >> 20) +
                                         " MiB, more than the decode memory budget of " + std::to_string(decode_budget.capacity() >> 20) +
                                         " MiB");
      if (!decode_budget.acquire(static_cast<size_t>(need - held), server::kDecodeWait))
        throw server::HttpError(503, "the server is busy decoding other images; retry in a moment");
      held = static_cast<size_t>(need);
    });
    return f();
  }

  // ---- read_routes.cpp: searches, recommendations, items, fields ----------------------------

  struct Parsed {
    SearchRequest request;
    bool exclude_items = true;
    std::vector<QueryTerm> extra;  // explicit weighted terms (POST "terms"), after the shorthands
    int offset = 0;                // results skipped (paging): ranks start at offset + 1
  };

  void add_read_routes();
  int cap_k(int64_t k) const;
  int check_offset(int64_t offset) const;
  // Drops the first `offset` hits; the others keep their rank in the whole ranking.
  static void drop_first(std::vector<SearchHit>& hits, int offset);
  static void set_search_tuning(SearchOptions& o, const std::string& key, int64_t v);
  void set_templates(SearchRequest& r, const std::string& name) const;
  Parsed parse_params(const httplib::Params& params) const;
  Parsed parse_body(const std::string& body) const;
  Query make_query(const Parsed& p, const std::vector<float>* upload) const;
  bool resolve_item(const std::string& value, CatalogItem* it);
  std::vector<SearchHit> search(Query q, SearchOptions o);
  std::vector<SearchHit> search_page(Query q, SearchOptions o, int offset);
  void send_hits(httplib::Response& res, const std::vector<SearchHit>& hits, int k, std::chrono::steady_clock::time_point t0);
  // The catalog's generation now; empties the answer cache when it moved.
  int64_t answer_generation();
  // The answer cached for `key` at `generation`, or null.
  std::shared_ptr<const std::string> cached_answer(int64_t generation, const std::string& key);
  void cache_answer(int64_t generation, const std::string& key, std::shared_ptr<const std::string> body);
  // Sends the hits `search()` finds (a search whose results depend only on `key` and the
  // catalog), from the answer cache when it holds them; took_ms is this request's time.
  template <class F>
  void send_cached_hits(httplib::Response& res, const std::string& key, int k, std::chrono::steady_clock::time_point t0, F&& search) {
    const int64_t gen = answer_generation();  // before the search: a commit during it only makes the entry older
    std::shared_ptr<const std::string> results = cached_answer(gen, key);
    if (!results) {
      results = std::make_shared<const std::string>(hits_json(search()));
      cache_answer(gen, key, results);
    }
    send_hits_json(res, *results, k, t0);
  }
  static std::string hits_json(const std::vector<SearchHit>& hits);
  static void send_hits_json(httplib::Response& res, const std::string& results, int k, std::chrono::steady_clock::time_point t0);
  // Index::embed_query through the text-vector cache (queries of text terms only).
  std::vector<float> embed_query(const Query& q) const;
  std::vector<float> embed_upload(const std::string& bytes) const;
  void recommend(const std::string& body, httplib::Response& res, std::chrono::steady_clock::time_point t0);
  void fields(httplib::Response& res);
  void info(httplib::Response& res);
  void item(const std::string& id_text, httplib::Response& res);
  std::string item_body(const std::string& id_text);
  void near_duplicates(const std::string& body, httplib::Response& res);

  // ---- write_routes.cpp: changes (--writable) -----------------------------------------------

  void add_write_routes();
  void require_writable() const;
  std::string store_upload(const std::string& bytes) const;
  std::string allowed_file(const std::string& path) const;
  void add_item(const std::string& body, httplib::Response& res);
  void delete_item(const std::string& id_text, httplib::Response& res);
  void patch_meta(const std::string& id_text, const std::string& body, httplib::Response& res);

  // ---- file_routes.cpp: item images and thumbnails ------------------------------------------

  void add_file_routes();
  std::string open_indexed(const CatalogItem& it, const std::string& path, int64_t mtime_ns,
                           const std::unordered_set<std::string>& served, std::shared_ptr<server::FileHandle>* fd) const;
  CatalogItem find_item(const std::string& id_text, std::shared_ptr<const std::unordered_set<std::string>>* folders);
  std::shared_ptr<server::FileHandle> open_servable(const CatalogItem& it, const std::string& id_text,
                                                    const std::unordered_set<std::string>& folders) const;
  void item_thumb(const std::string& id_text, httplib::Response& res);
  void item_image(const httplib::Request& req, const std::string& id_text, httplib::Response& res);
};

}  // namespace clipkit
