// clipkit serve: the HTTP server over a read-only index. Routes in docs/server.md.
//
// Concurrency: connections are served by an event loop (server/transport.h) and requests run on
// its pool of compute threads (`http_threads`). The Model is immutable and encodes
// from several threads at once. Index is not thread-safe (one SQLite connection, faiss search
// parameters set per search), so every Index call that reads the catalog or faiss holds `index_mu`.
// Index::embed_query is called without the lock, and only with text and vector terms: for those
// it reads nothing but the dimension and model fingerprint fixed at open. Item terms are turned
// into vector terms (the stored vector, under the lock) first, exactly as Index::search would
// resolve them, so the results equal Index::search for the same query.
#include "clipkit/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <unordered_set>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "clipkit/model.h"
#include "clipkit/search_request.h"
#include "clipkit/version.h"
#include "clipkit/zeroshot.h"
#include "server/api_requests.h"
#include "server/decode_budget.h"
#include "server/file_access.h"
#include "server/http_util.h"
#include "server/transport.h"
#include "server/thumbnail.h"
#include "vision/thumbnail.h"
#include "server/web_assets.h"
#include "vision/decode_hook.h"

namespace clipkit {

namespace {

using namespace server;

// JSON bodies deeper than this are refused before they are built.
constexpr int kMaxJsonDepth = 16;

// Decoding an upload needs about this many bytes per pixel at its peak (the decoder's buffers, the
// decoded image and the resampled copies of the preprocessing).
constexpr uint64_t kDecodeBytesPerPixel = 16;
// Files larger than this get no thumbnail (the file is read whole before decoding).
constexpr uint64_t kMaxThumbnailSourceBytes = 256ull << 20;
// How long an upload waits for other decodings to give their memory back before a 503.
constexpr std::chrono::milliseconds kDecodeWait{10000};

// The event-driven HTTP transport; routes are registered on it as on cpp-httplib's Server.
using HttpServer = server::EventHttpServer;

}  // namespace

struct SearchServer::Impl {
  Index index;
  std::shared_ptr<const Model> model;
  ServerOptions opt;
  std::mutex index_mu;
  HttpServer http;
  int bound_port = -1;
  std::atomic<bool> stopping{false}, run_started{false}, run_finished{false};
  mutable server::DecodeBudget decode_budget;
  std::set<std::string> allowed_hosts;             // host names accepted besides the loopback ones
  // Folders of indexed files, resolved (at start, and again after the catalog moved); replaced
  // under index_mu, read through a copy of the pointer.
  std::shared_ptr<const std::unordered_set<std::string>> served_folders;
  std::string index_folder;                        // the index folder, resolved
  server::ThumbnailCache thumbs{""};               // in the index folder
  bool folders_dirty = false;                      // the catalog moved: served_folders may lack new folders
  std::vector<std::string> roots;                  // allowed roots of POST /api/items, resolved

  Impl(Index idx, std::shared_ptr<const Model> m, ServerOptions o)
      : index(std::move(idx)), model(std::move(m)), opt(std::move(o)), decode_budget(opt.decode_memory_bytes) {
    for (const auto& h : opt.allowed_hosts) {
      const std::string name = host_name(h);
      if (name.empty()) throw Error(ErrorCode::InvalidArgument, "allowed host '" + h + "' is not a host name");
      allowed_hosts.insert(name);
    }
    // The address the server was told to listen on is a name it goes by (not the wildcards).
    const std::string bound = host_name(opt.host.find(':') != std::string::npos ? "[" + opt.host + "]" : opt.host);
    if (!bound.empty() && bound != "0.0.0.0" && bound != "[::]") allowed_hosts.insert(bound);
    // Files are served only from the folders that held indexed files, as they resolve now: a
    // folder or link swapped later for a way elsewhere leads outside them.
    served_folders = resolve_folders();
    index_folder = real_path(index.dir());
    thumbs = server::ThumbnailCache(index_folder);
    for (const auto& r : opt.allowed_roots) {
      const std::string rr = real_path(r);
      if (rr.empty()) throw Error(ErrorCode::NotFound, "allowed root " + r + " does not exist");
      roots.push_back(rr);
    }
    if (!opt.upload_dir.empty()) {
      const std::string u = real_path(opt.upload_dir);
      if (u.empty()) throw Error(ErrorCode::NotFound, "upload folder " + opt.upload_dir + " does not exist");
      roots.push_back(u);
    }
  }

  std::shared_ptr<const std::unordered_set<std::string>> resolve_folders() {
    auto out = std::make_shared<std::unordered_set<std::string>>();
    for (const auto& f : index.folders()) {
      const std::string r = real_path(f);
      if (!r.empty()) out->insert(r);
    }
    return out;
  }

  // Catches up with commits of other processes; call with index_mu held.
  void refresh_locked() {
    if (index.refresh()) folders_dirty = true;
  }

  // ---- queries ----------------------------------------------------------------------------

  struct Parsed {
    SearchRequest request;
    bool exclude_items = true;
    std::vector<QueryTerm> extra;  // explicit weighted terms (POST "terms"), after the shorthands
  };

  int cap_k(int64_t k) const {
    if (k <= 0) throw HttpError(400, "k must be positive, got " + std::to_string(k));
    return static_cast<int>(std::min<int64_t>(k, opt.max_k));
  }

  // nprobe (IVF lists probed), ef_search (HNSW) and rerank (0/1): approximate search tuning.
  static void set_search_tuning(SearchOptions& o, const std::string& key, int64_t v) {
    if (key == "rerank") {
      if (v != 0 && v != 1) throw HttpError(400, "rerank must be 0 or 1");
      o.rerank = v == 1;
      return;
    }
    if (v < 0 || v > 1000000) throw HttpError(400, key + " must be between 0 (automatic) and 1000000, got " + std::to_string(v));
    (key == "nprobe" ? o.nprobe : o.ef_search) = static_cast<int>(v);
  }

  void set_templates(SearchRequest& r, const std::string& name) const {
    if (name.empty() || name == "none") return;
    // Only built-in sets: a template file would be a path on the server.
    if (!is_builtin_template_set(name)) {
      std::string names;
      for (const auto& n : builtin_template_set_names()) names += (names.empty() ? "" : ", ") + n;
      throw HttpError(400, "unknown template set '" + name + "' (built-in: " + names + ")");
    }
    r.templates = name;
  }

  // GET /api/search and the query string of POST /api/search/image.
  Parsed parse_params(const httplib::Params& params) const {
    Parsed p;
    SearchRequest& r = p.request;
    r.options.k = std::min(20, opt.max_k);
    std::set<std::string> seen;
    for (const auto& [key, value] : params) {
      const bool single = key != "text" && key != "minus" && key != "like" && key != "tag";
      if (single && !seen.insert(key).second) throw HttpError(400, "parameter " + key + " given twice");
      if (key == "text") {
        r.texts.push_back(value);
      } else if (key == "minus") {
        r.minus.push_back(value);
      } else if (key == "like") {
        r.likes.push_back(value);
      } else if (key == "query") {
        r.expression = value;
      } else if (key == "templates") {
        set_templates(r, value);
      } else if (key == "k") {
        r.options.k = cap_k(parse_int(key, value));
      } else if (key == "min_score") {
        if (!value.empty()) r.options.min_score = static_cast<float>(parse_number(key, value));
      } else if (key == "path_prefix") {
        r.options.filter.path_prefix = value;
      } else if (key == "tag") {
        if (value.empty()) throw HttpError(400, "parameter tag is empty");
        r.options.filter.tags.push_back(value);
      } else if (key == "nprobe" || key == "ef_search" || key == "rerank") {
        set_search_tuning(r.options, key, parse_int(key, value));
      } else if (key == "where") {
        r.options.where = value;
      } else {
        throw HttpError(400, "unknown parameter '" + key +
                                 "' (known: text, minus, like, query, templates, k, min_score, path_prefix, tag, where, nprobe, ef_search, rerank)");
      }
    }
    for (const auto& t : r.texts)
      if (t.empty()) throw HttpError(400, "parameter text is empty");
    return p;
  }

  // POST /api/search: a JSON object.
  Parsed parse_body(const std::string& body) const {
    if (body.size() > opt.max_json_bytes)
      throw HttpError(413, "query body is larger than " + std::to_string(opt.max_json_bytes) + " bytes");
    json j;
    try {
      j = json::parse(body, [](int depth, json::parse_event_t, json&) {
        if (depth > kMaxJsonDepth) throw HttpError(400, "the JSON body is nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
        return true;
      });
    } catch (const json::exception& e) {
      throw HttpError(400, std::string("malformed JSON: ") + e.what());
    }
    if (!j.is_object()) throw HttpError(400, "the request body must be a JSON object");
    Parsed p;
    SearchRequest& r = p.request;
    r.options.k = std::min(20, opt.max_k);
    auto strings = [](const std::string& key, const json& v) {
      std::vector<std::string> out;
      if (v.is_string()) return std::vector<std::string>{v.get<std::string>()};
      if (!v.is_array()) throw HttpError(400, "\"" + key + "\" must be a string or an array of strings");
      for (const auto& x : v) {
        if (!x.is_string()) throw HttpError(400, "\"" + key + "\" must be a string or an array of strings");
        out.push_back(x.get<std::string>());
      }
      return out;
    };
    auto item_ref = [](const std::string& key, const json& v) {
      if (v.is_number_integer()) return "#" + std::to_string(v.get<int64_t>());
      if (v.is_string() && !v.get<std::string>().empty()) return v.get<std::string>();
      throw HttpError(400, "\"" + key + "\" must be an item id or an indexed path");
    };
    auto number = [](const std::string& key, const json& v) {
      if (!v.is_number() || !std::isfinite(v.get<double>())) throw HttpError(400, "\"" + key + "\" must be a finite number");
      return v.get<double>();
    };
    for (const auto& [key, v] : j.items()) {
      if (key == "query") {
        if (!v.is_string()) throw HttpError(400, "\"query\" must be a string");
        r.expression = v.get<std::string>();
      } else if (key == "text") {
        r.texts = strings(key, v);
      } else if (key == "minus") {
        r.minus = strings(key, v);
      } else if (key == "like") {
        if (v.is_array()) {
          for (const auto& x : v) r.likes.push_back(item_ref(key, x));
        } else {
          r.likes.push_back(item_ref(key, v));
        }
      } else if (key == "templates") {
        if (!v.is_string()) throw HttpError(400, "\"templates\" must be the name of a built-in template set");
        set_templates(r, v.get<std::string>());
      } else if (key == "k") {
        if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(opt.max_k)) {
          r.options.k = opt.max_k;
        } else {
          if (!v.is_number_integer()) throw HttpError(400, "\"k\" must be a positive integer");
          r.options.k = cap_k(v.get<int64_t>());
        }
      } else if (key == "min_score") {
        if (!v.is_null()) r.options.min_score = static_cast<float>(number(key, v));
      } else if (key == "path_prefix") {
        if (!v.is_string()) throw HttpError(400, "\"path_prefix\" must be a string");
        r.options.filter.path_prefix = v.get<std::string>();
      } else if (key == "tags" || key == "tag") {
        for (auto& t : strings(key, v)) {
          if (t.empty()) throw HttpError(400, "empty tag");
          r.options.filter.tags.push_back(std::move(t));
        }
      } else if (key == "nprobe" || key == "ef_search" || key == "rerank") {
        if (key == "rerank" && v.is_boolean()) {
          r.options.rerank = v.get<bool>();
        } else {
          if (!v.is_number_integer()) throw HttpError(400, "\"" + key + "\" must be an integer");
          set_search_tuning(r.options, key, v.get<int64_t>());
        }
      } else if (key == "where") {
        r.options.where = where_of(v);
      } else if (key == "exclude_items") {
        if (!v.is_boolean()) throw HttpError(400, "\"exclude_items\" must be true or false");
        p.exclude_items = v.get<bool>();
      } else if (key == "terms") {
        if (!v.is_array()) throw HttpError(400, "\"terms\" must be an array of objects");
        for (const auto& t : v) {
          if (!t.is_object()) throw HttpError(400, "\"terms\" must be an array of objects");
          QueryTerm qt;
          int kinds = 0;
          for (const auto& [tk, tv] : t.items()) {
            if (tk == "weight") {
              qt.weight = static_cast<float>(number("weight", tv));
              if (!std::isfinite(qt.weight)) throw HttpError(400, "\"weight\" is out of range");
            } else if (tk == "text") {
              if (!tv.is_string() || tv.get<std::string>().empty()) throw HttpError(400, "a \"text\" term needs a non-empty string");
              qt.kind = QueryTerm::Kind::Text;
              qt.value = tv.get<std::string>();
              ++kinds;
            } else if (tk == "like") {
              qt.kind = QueryTerm::Kind::Item;
              qt.value = item_ref("like", tv);
              ++kinds;
            } else if (tk == "vector") {
              if (!tv.is_array()) throw HttpError(400, "a \"vector\" term needs an array of numbers");
              qt.kind = QueryTerm::Kind::Vector;
              qt.value = "vector";
              for (const auto& x : tv) qt.vector.push_back(static_cast<float>(number("vector", x)));
              ++kinds;
            } else {
              throw HttpError(400, "unknown term field \"" + tk + "\" (a term is {\"text\"|\"like\"|\"vector\": ..., \"weight\": w})");
            }
          }
          if (kinds != 1) throw HttpError(400, "each term needs exactly one of \"text\", \"like\" or \"vector\"");
          p.extra.push_back(std::move(qt));
        }
      } else {
        throw HttpError(400, "unknown field \"" + key +
                                 "\" (known: query, text, minus, like, terms, templates, k, min_score, path_prefix, tags, where, exclude_items, nprobe, ef_search, rerank)");
      }
    }
    for (const auto& t : r.texts)
      if (t.empty()) throw HttpError(400, "empty text");
    return p;
  }

  // The Query of a parsed request; `upload` (when not null) is the uploaded image's embedding,
  // placed where an --image term goes on the command line.
  Query make_query(const Parsed& p, const std::vector<float>* upload) const {
    SearchRequest r = p.request;
    size_t upload_at = std::string::npos;
    if (upload) {
      upload_at = (r.expression.empty() ? 0 : parse_query(r.expression).terms.size()) + r.texts.size();
      r.images.push_back("(uploaded image)");
    }
    Query q = build_query(r);
    q.exclude_items = p.exclude_items;
    for (size_t i = 0; i < q.terms.size(); ++i) {
      QueryTerm& t = q.terms[i];
      if (t.kind != QueryTerm::Kind::Image) continue;
      if (i != upload_at) throw HttpError(400, "image: terms name files on the server; upload the image to POST /api/search/image instead");
      t.kind = QueryTerm::Kind::Vector;
      t.vector = *upload;
    }
    q.terms.insert(q.terms.end(), p.extra.begin(), p.extra.end());
    if (q.terms.empty()) throw HttpError(400, "no query: give text, like, query or terms");
    return q;
  }

  // Finds an item term's item as Index::search does: an indexed path, else an id ("42", "#42").
  bool resolve_item(const std::string& value, CatalogItem* it) {
    if (index.find_path(value, it)) return true;
    std::string v = value;
    if (!v.empty() && v[0] == '#') v = v.substr(1);
    if (v.empty() || v.size() > 18 || !std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); }))
      return false;
    return index.find_id(std::stoll(v), it);
  }

  std::vector<SearchHit> search(Query q, SearchOptions o) {
    {
      std::lock_guard<std::mutex> lock(index_mu);
      refresh_locked();
      for (auto& t : q.terms) {
        if (t.kind != QueryTerm::Kind::Item) continue;
        CatalogItem it;
        if (!resolve_item(t.value, &it)) throw HttpError(404, "'" + t.value + "' is neither an indexed path nor an item id");
        t.kind = QueryTerm::Kind::Vector;
        t.vector = index.vector(it.id);
        if (q.exclude_items) o.exclude_ids.push_back(it.id);
      }
    }
    // Text and vector terms only: embedding needs no lock (see the top of the file).
    const std::vector<float> v = index.embed_query(q, model.get());
    std::lock_guard<std::mutex> lock(index_mu);
    return index.search_vector(v, o);
  }

  void send_hits(httplib::Response& res, const std::vector<SearchHit>& hits, int k, std::chrono::steady_clock::time_point t0) {
    json out;
    out["results"] = json::array();
    for (const auto& h : hits) out["results"].push_back(search_hit_json(h));
    out["k"] = k;
    out["took_ms"] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    send_json(res, out);
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
      const uint64_t need = pixels > UINT64_MAX / kDecodeBytesPerPixel ? UINT64_MAX : pixels * kDecodeBytesPerPixel;
      if (need <= held) return;
      const std::string size = std::to_string(width) + "x" + std::to_string(height);
      if (need > decode_budget.capacity())
        throw HttpError(413, what + " is " + size + ": decoding it needs about " + std::to_string(need >> 20) +
                                 " MiB, more than the decode memory budget of " + std::to_string(decode_budget.capacity() >> 20) + " MiB");
      if (!decode_budget.acquire(static_cast<size_t>(need - held), kDecodeWait))
        throw HttpError(503, "the server is busy decoding other images; retry in a moment");
      held = static_cast<size_t>(need);
    });
    return f();
  }

  std::vector<float> embed_upload(const std::string& bytes) const {
    if (bytes.empty()) throw HttpError(400, "no image: send the image as the request body or as a multipart/form-data file");
    DecodeOptions d;
    d.max_pixels = opt.max_upload_pixels;
    const std::vector<float> px = with_decode_budget("the uploaded image", [&] {
      const Image img = decode_image_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "uploaded image", d);
      return preprocess(img, model->preprocess_config());
    });
    const Embeddings e = model->encode_images(px.data(), 1, true);
    if (e.rows != 1 || e.dim != index.dim()) throw Error(ErrorCode::Shape, "the model returned a wrong-sized image embedding");
    return std::vector<float>(e.row(0), e.row(0) + e.dim);
  }

  // ---- recommendations, fields, writes (bodies parsed in api_requests.cpp) -------------------

  void recommend(const std::string& body, httplib::Response& res, std::chrono::steady_clock::time_point t0) {
    RecommendBody b = parse_recommend_body(parse_json_object(body, opt.max_json_bytes), opt.max_k, index.dim());
    RecommendOptions& o = b.options;
    const int k = o.search.k;
    o.search.k = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(k) + b.offset, opt.max_k + static_cast<int64_t>(b.offset)));
    // Items become their stored vectors (and are excluded) under the lock; texts and uploads are
    // embedded without it (see the top of the file).
    {
      std::lock_guard<std::mutex> lock(index_mu);
      refresh_locked();
      for (auto* list : {&b.positive, &b.negative})
        for (auto& e : *list) {
          if (e.term.kind != QueryTerm::Kind::Item) continue;
          CatalogItem it;
          if (!resolve_item(e.term.value, &it)) throw HttpError(404, "'" + e.term.value + "' is neither an indexed path nor an item id");
          e.term.kind = QueryTerm::Kind::Vector;
          e.term.vector = index.vector(it.id);
          o.search.exclude_ids.push_back(it.id);
        }
    }
    for (auto* list : {&b.positive, &b.negative})
      for (auto& e : *list) {
        if (e.is_image) {
          e.term.kind = QueryTerm::Kind::Vector;
          e.term.vector = embed_upload(e.image_bytes);
        } else if (e.term.kind == QueryTerm::Kind::Text) {
          Query q;
          q.terms.push_back(e.term);
          e.term.kind = QueryTerm::Kind::Vector;
          e.term.vector = index.embed_query(q, model.get());
        }
      }
    for (const auto& e : b.positive) o.positive.push_back(e.term);
    for (const auto& e : b.negative) o.negative.push_back(e.term);
    std::vector<SearchHit> hits;
    {
      std::lock_guard<std::mutex> lock(index_mu);
      hits = index.recommend(o, nullptr);
    }
    hits.erase(hits.begin(), hits.begin() + std::min<size_t>(hits.size(), static_cast<size_t>(b.offset)));
    for (size_t i = 0; i < hits.size(); ++i) hits[i].rank = static_cast<int>(b.offset + i + 1);
    send_hits(res, hits, k, t0);
  }

  void fields(httplib::Response& res) {
    std::string summary;
    {
      std::lock_guard<std::mutex> lock(index_mu);
      refresh_locked();
      summary = index.fields_summary();
    }
    send_json(res, json::parse(summary));
  }

  void require_writable() const {
    if (!opt.writable) throw HttpError(403, "this server is read-only (start it with --writable to accept changes)");
  }

  // Where an uploaded image is stored: UPLOAD_DIR/SHA256.EXT, written once (atomically).
  std::string store_upload(const std::string& bytes) const {
    if (opt.upload_dir.empty()) throw HttpError(403, "this server accepts no uploads (start it with --upload-dir DIR)");
    const char* type = sniff_image_type(bytes.data(), bytes.size());
    const std::string t = type;
    const std::string ext = t == "image/png" ? ".png" : t == "image/jpeg" ? ".jpg" : t == "image/webp" ? ".webp"
                            : t == "image/gif" ? ".gif" : t == "image/bmp" ? ".bmp" : "";
    if (ext.empty()) throw HttpError(415, "the upload is not a PNG, JPEG, WebP, GIF or BMP image");
    DecodeOptions d;
    d.max_pixels = opt.max_upload_pixels;
    (void)decode_image_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "uploaded image", d);
    const std::string path = real_path(opt.upload_dir) + "/" + content_sha256(bytes.data(), bytes.size()) + ext;
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) return path;
    const std::string tmp = path + ".part";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      out.flush();
      if (!out) throw Error(ErrorCode::Io, "cannot write the upload to " + opt.upload_dir);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error(ErrorCode::Io, "cannot store the upload in " + opt.upload_dir);
    return path;
  }

  // A file named by POST /api/items must resolve under an allowed root.
  std::string allowed_file(const std::string& path) const {
    const std::string r = real_path(path);
    if (r.empty()) throw HttpError(404, "'" + path + "' does not exist on the server");
    for (const auto& root : roots)
      if (r.compare(0, root.size() + 1, root + "/") == 0) return r;
    throw HttpError(403, "'" + path + "' is outside the allowed roots of this server");
  }

  void add_item(const std::string& body, httplib::Response& res) {
    require_writable();
    ItemBody b = parse_item_body(parse_json_object(body, opt.max_upload_bytes));
    const std::string path = b.image_bytes.empty() ? allowed_file(b.path) : store_upload(b.image_bytes);
    AddOptions ao;
    ao.tags = b.tags;
    if (!b.meta.empty()) ao.meta[path] = b.meta;
    AddReport r;
    CatalogItem it;
    int64_t gen = 0;
    {
      std::lock_guard<std::mutex> lock(index_mu);
      r = index.add_files({path}, *model, ao);
      if (!r.failures.empty()) throw HttpError(400, "cannot add " + path + ": " + r.failures.front().reason);
      if (!index.find_path(path, &it)) throw HttpError(500, "the added file is not in the catalog");
      gen = index.info().generation;
      folders_dirty = true;
    }
    send_json(res,
              {{"id", it.id}, {"path", path}, {"added", r.added}, {"updated", r.updated}, {"duplicates", r.duplicates}, {"generation", gen}},
              r.added > 0 ? 201 : 200);
  }

  void delete_item(const std::string& id_text, httplib::Response& res) {
    require_writable();
    const int64_t id = parse_id(id_text);
    std::lock_guard<std::mutex> lock(index_mu);
    refresh_locked();
    CatalogItem it;
    if (!index.find_id(id, &it)) throw HttpError(404, "no item " + id_text + " in the index");
    const int64_t n = index.remove_paths(it.paths);
    send_json(res, {{"id", id}, {"removed_paths", n}, {"generation", index.info().generation}});
  }

  void patch_meta(const std::string& id_text, const std::string& body, httplib::Response& res) {
    require_writable();
    const int64_t id = parse_id(id_text);
    const json patch = parse_json_object(body, opt.max_json_bytes);
    std::lock_guard<std::mutex> lock(index_mu);
    refresh_locked();
    CatalogItem it;
    if (!index.find_id(id, &it)) throw HttpError(404, "no item " + id_text + " in the index");
    index.set_item_metadata(id, patch.dump(), true);
    send_json(res, {{"id", id}, {"meta", json::parse(index.metadata(it.paths.front()))}, {"generation", index.info().generation}});
  }

  // ---- handlers ---------------------------------------------------------------------------

  void info(httplib::Response& res) {
    IndexInfo i;
    {
      std::lock_guard<std::mutex> lock(index_mu);
      refresh_locked();
      i = index.info();
    }
    const ModelInfo& mi = model->info();
    json j;
    j["version"] = CLIPKIT_VERSION_STRING;
    j["index"] = {{"dir", i.dir},           {"kind", i.kind},   {"structure", i.structure},
                  {"trained", i.trained},   {"dim", i.dim},     {"items", i.items},
                  {"files", i.files},       {"generation", i.generation}, {"created", i.created},
                  {"model_path", i.model_path}, {"model_fingerprint", i.model_fingerprint}};
    j["model"] = {{"path", mi.path},
                  {"format", mi.format},
                  {"arch", mi.arch.kind},
                  {"embed_dim", mi.arch.embed_dim},
                  {"image_resolution", mi.arch.image_resolution},
                  {"fingerprint", mi.fingerprint}};
    j["limits"] = {{"max_k", opt.max_k},
                   {"max_upload_bytes", opt.max_upload_bytes},
                   {"max_json_bytes", opt.max_json_bytes},
                   {"max_upload_pixels", opt.max_upload_pixels},
                   {"decode_memory_bytes", opt.decode_memory_bytes}};
    j["templates"] = builtin_template_set_names();
    send_json(res, j);
  }

  void item(const std::string& id_text, httplib::Response& res) {
    const int64_t id = parse_id(id_text);
    CatalogItem it;
    std::string meta = "{}";
    {
      std::lock_guard<std::mutex> lock(index_mu);
      refresh_locked();
      if (!index.find_id(id, &it)) throw HttpError(404, "no item " + id_text + " in the index");
      if (!it.paths.empty()) meta = index.metadata(it.paths.front());
    }
    std::vector<double> mtimes;
    for (auto ns : it.mtimes_ns) mtimes.push_back(static_cast<double>(ns) / 1e9);
    json j = {{"id", it.id},         {"sha256", it.sha256}, {"size", it.size},     {"width", it.width},
              {"height", it.height}, {"added", it.added},   {"paths", it.paths},   {"mtimes", mtimes},
              {"tags", it.tags},     {"image", "/api/items/" + std::to_string(it.id) + "/image"}, {"meta", json::parse(meta)}};
    send_json(res, j);
  }

  // Why the indexed `path` (modification time `mtime_ns`) of `it` cannot be served now, or an
  // open descriptor of it in *fd. The file must resolve into a folder that held indexed files
  // when the server started (not into the index), be opened with no link on the way, and still
  // hold the indexed bytes: same size, and same modification time or else same SHA-256.
  std::string open_indexed(const CatalogItem& it, const std::string& path, int64_t mtime_ns, const std::unordered_set<std::string>& served,
                           std::shared_ptr<FileHandle>* fd) const {
    const std::string resolved = real_path(path);
    if (resolved.empty()) return errno == ENOENT || errno == ENOTDIR ? "missing" : std::string("unreadable: ") + std::strerror(errno);
    if (!served.count(parent_folder(resolved))) return "outside the indexed folders";
    if (!index_folder.empty() && resolved.compare(0, index_folder.size() + 1, index_folder + "/") == 0)
      return "outside the indexed folders (inside the index)";
    const int opened = open_without_links(resolved);
    const int open_error = errno;
    auto f = std::make_shared<FileHandle>(opened);
    if (f->fd < 0)
      return open_error == ELOOP || open_error == ENOTDIR || open_error == ENOENT
                 ? "changed since it was indexed (the path now leads elsewhere)"
                 : std::string("unreadable: ") + std::strerror(open_error);
    struct stat st {};
    if (::fstat(f->fd, &st) != 0 || !S_ISREG(st.st_mode)) return "not a regular file";
    if (st.st_size != it.size)
      return "changed since it was indexed (" + std::to_string(st.st_size) + " bytes, indexed " + std::to_string(it.size) + ")";
    const int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
    if (mtime != mtime_ns && sha256_of(f->fd, static_cast<uint64_t>(it.size)) != it.sha256)
      return "changed since it was indexed (other bytes)";
    *fd = std::move(f);
    return "";
  }

  // The item `id_text` (after catching up with other writers) and the folders its files may be
  // served from.
  CatalogItem find_item(const std::string& id_text, std::shared_ptr<const std::unordered_set<std::string>>* folders) {
    const int64_t id = parse_id(id_text);
    CatalogItem it;
    std::lock_guard<std::mutex> lock(index_mu);
    refresh_locked();
    if (!index.find_id(id, &it)) throw HttpError(404, "no item " + id_text + " in the index");
    if (folders_dirty) {
      // Folders of items added since the start (by this server or another process).
      served_folders = resolve_folders();
      folders_dirty = false;
    }
    *folders = served_folders;
    return it;
  }

  // The first of the item's catalog paths that can still be served (open_indexed) from `folders`,
  // else an HttpError: 404 when all its files are gone, 410 when some changed.
  std::shared_ptr<FileHandle> open_servable(const CatalogItem& it, const std::string& id_text,
                                            const std::unordered_set<std::string>& folders) const {
    std::string problems;
    bool all_missing = true;
    std::shared_ptr<FileHandle> file;
    for (size_t i = 0; i < it.paths.size() && !file; ++i) {
      const std::string why = open_indexed(it, it.paths[i], i < it.mtimes_ns.size() ? it.mtimes_ns[i] : 0, folders, &file);
      if (why.empty()) break;
      if (why != "missing") all_missing = false;
      problems += (problems.empty() ? "" : "; ") + it.paths[i] + ": " + why;
    }
    if (!file) throw HttpError(all_missing ? 404 : 410, "item " + id_text + ": none of its files can be served (" + problems + ")");
    return file;
  }

  // GET /api/items/{id}/thumb: made from the file the image route would serve (same checks), then
  // kept in the index folder under the content's SHA-256.
  void item_thumb(const std::string& id_text, httplib::Response& res) {
    std::shared_ptr<const std::unordered_set<std::string>> folders;
    const CatalogItem it = find_item(id_text, &folders);
    std::string bytes;
    if (!thumbs.load(it.sha256, kThumbnailSide, &bytes)) {
      if (static_cast<uint64_t>(it.size) > kMaxThumbnailSourceBytes)
        throw HttpError(413, "item " + id_text + ": its file of " + std::to_string(it.size >> 20) + " MiB is too large to make a thumbnail of");
      const std::shared_ptr<FileHandle> file = open_servable(it, id_text, *folders);
      std::string data(static_cast<size_t>(it.size), '\0');
      size_t done = 0;
      while (done < data.size()) {
        const ssize_t r = ::pread(file->fd, data.data() + done, data.size() - done, static_cast<off_t>(done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) throw HttpError(410, "item " + id_text + ": its file shrank while it was read");
        done += static_cast<size_t>(r);
      }
      DecodeOptions d;
      d.apply_exif_orientation = true;  // a thumbnail is looked at: show it upright
      bytes = with_decode_budget("item " + id_text, [&] {
        return vision::encode_thumbnail(
            decode_image_memory(reinterpret_cast<const uint8_t*>(data.data()), data.size(), "item " + id_text, d),
            kThumbnailSide);
      });
      thumbs.store(it.sha256, kThumbnailSide, bytes);
    }
    res.set_header("Cache-Control", "private, max-age=3600");
    res.set_content(std::move(bytes), "image/webp");
  }

  // POST /api/near-duplicates {"ids": [...], "threshold": 0.95}: the ids grouped, in their order,
  // each joining the first group whose first item's stored vector has a cosine >= threshold with
  // its own. Answers {"groups": [[id, ...], ...]}.
  void near_duplicates(const std::string& body, httplib::Response& res) {
    if (body.size() > opt.max_json_bytes)
      throw HttpError(413, "query body is larger than " + std::to_string(opt.max_json_bytes) + " bytes");
    json j;
    try {
      j = json::parse(body);
    } catch (const json::exception& e) {
      throw HttpError(400, std::string("malformed JSON: ") + e.what());
    }
    if (!j.is_object() || !j.contains("ids") || !j["ids"].is_array()) throw HttpError(400, "the body must be {\"ids\": [item ids], \"threshold\": t}");
    double threshold = 0.95;
    for (const auto& [key, v] : j.items()) {
      if (key == "threshold") {
        if (!v.is_number() || !(v.get<double>() >= -1.0 && v.get<double>() <= 1.0)) throw HttpError(400, "\"threshold\" must be a number in -1..1");
        threshold = v.get<double>();
      } else if (key != "ids") {
        throw HttpError(400, "unknown field \"" + key + "\" (known: ids, threshold)");
      }
    }
    if (j["ids"].size() > static_cast<size_t>(opt.max_k) * 2)
      throw HttpError(400, "at most " + std::to_string(opt.max_k * 2) + " ids at once");
    std::vector<int64_t> ids;
    std::vector<std::vector<float>> vecs;
    {
      std::lock_guard<std::mutex> lock(index_mu);
      refresh_locked();
      for (const auto& v : j["ids"]) {
        if (!v.is_number_integer()) throw HttpError(400, "\"ids\" must hold item ids");
        CatalogItem it;
        const int64_t id = v.get<int64_t>();
        if (!index.find_id(id, &it)) throw HttpError(404, "no item " + std::to_string(id) + " in the index");
        ids.push_back(id);
        vecs.push_back(index.vector(id));
      }
    }
    std::vector<size_t> leaders;
    json groups = json::array();
    for (size_t i = 0; i < ids.size(); ++i) {
      size_t g = 0;
      for (; g < leaders.size(); ++g) {
        const auto& a = vecs[leaders[g]];
        const auto& b = vecs[i];
        double dot = 0;
        for (size_t d = 0; d < a.size() && d < b.size(); ++d) dot += static_cast<double>(a[d]) * b[d];
        if (dot >= threshold) break;
      }
      if (g == leaders.size()) {
        leaders.push_back(i);
        groups.push_back(json::array());
      }
      groups[g].push_back(ids[i]);
    }
    send_json(res, {{"groups", groups}});
  }

  void item_image(const httplib::Request& req, const std::string& id_text, httplib::Response& res) {
    std::shared_ptr<const std::unordered_set<std::string>> folders;
    const CatalogItem it = find_item(id_text, &folders);
    const std::shared_ptr<FileHandle> file = open_servable(it, id_text, *folders);

    const uint64_t size = static_cast<uint64_t>(it.size);
    char head[16] = {};
    const ssize_t got = ::pread(file->fd, head, sizeof head, 0);
    res.set_header("Cache-Control", "private, max-age=60");
    res.set_header("Accept-Ranges", "bytes");
    ByteRange range;
    if (req.has_header("Range") && !req.has_header("If-Range")) range = parse_range(req.get_header_value("Range"), size);
    if (range.kind == ByteRange::Unsatisfiable) {
      res.set_header("Content-Range", "bytes */" + std::to_string(size));
      throw HttpError(416, "the range is outside the file of " + std::to_string(size) + " bytes");
    }
    uint64_t offset = 0, length = size;
    if (range.kind == ByteRange::Part) {
      offset = range.first;
      length = range.last - range.first + 1;
      res.status = 206;
      res.set_header("Content-Range", "bytes " + std::to_string(range.first) + "-" + std::to_string(range.last) + "/" + std::to_string(size));
    }
    res.set_content_provider(static_cast<size_t>(length), sniff_image_type(head, got > 0 ? static_cast<size_t>(got) : 0),
                             [file, offset, length](size_t at, size_t want, httplib::DataSink& sink) {
                               char buf[64 * 1024];
                               if (at >= length) return false;
                               const size_t n = static_cast<size_t>(std::min<uint64_t>({want, sizeof buf, length - at}));
                               ssize_t r;
                               do r = ::pread(file->fd, buf, n, static_cast<off_t>(offset + at));
                               while (r < 0 && errno == EINTR);
                               if (r <= 0) return false;  // the file shrank: the connection is closed
                               return sink.write(buf, static_cast<size_t>(r));
                             });
  }

  // Runs a handler, turning every failure into a JSON error with its status.
  template <class F>
  void guarded(httplib::Response& res, F&& f) {
    try {
      f();
    } catch (const HttpError& e) {
      if (e.status == 503) res.set_header("Retry-After", "1");
      send_error(res, e.status, e.what());
    } catch (const Error& e) {
      send_error(res, status_for(e.code()), e.what());
    } catch (const std::bad_alloc&) {
      send_error(res, 500, "out of memory");
    } catch (const std::exception& e) {
      send_error(res, 500, std::string("internal error: ") + e.what());
    }
  }

  void log_request(const httplib::Request& req, const httplib::Response& res) {
    if (!opt.log) return;
    std::string line = utc_now() + " " + (req.remote_addr.empty() ? "-" : req.remote_addr) + " " + loggable(req.method, 16) + " " +
                       loggable(req.target.empty() ? req.path : req.target) + " " + std::to_string(res.status);
    const std::string len = res.get_header_value("Content-Length");
    line += " " + (len.empty() ? std::to_string(res.body.size()) : len) + "B";
    {
      char ms[32];
      std::snprintf(ms, sizeof ms, " %.1fms",
                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - HttpServer::request_start(req)).count());
      line += ms;
    }
    if (res.status >= 400 && !res.body.empty() && res.body.size() < 4096) {
      try {
        const json j = json::parse(res.body);
        if (j.is_object() && j.contains("error") && j["error"].is_string()) line += " (" + loggable(j["error"].get<std::string>(), 600) + ")";
      } catch (const json::exception&) {
      }
    }
    try {
      opt.log(line);
    } catch (...) {
      // a failing log sink must not take the server down
    }
  }

  // Checks every request must pass before it is routed: one Content-Length at most, a Host that
  // names this server (DNS rebinding), the bearer token when one is set. 0 when admitted, else
  // the status of the JSON error written to `res`.
  int admission(const httplib::Request& req, httplib::Response& res) const {
    const auto refuse = [&](int status, const std::string& message) {
      res.set_header("Connection", "close");  // a body that was not read cannot be skipped reliably
      send_error(res, status, message);
      return status;
    };
    const size_t lengths = req.get_header_value_count("Content-Length");
    if (lengths > 1) return refuse(400, "the request has " + std::to_string(lengths) + " Content-Length headers");
    if (req.get_header_value_count("Host") != 1 || req.get_header_value("Host").empty())
      return refuse(400, "the request needs exactly one Host header");
    const std::string host = req.get_header_value("Host");
    const std::string name = host_name(host);
    if (name.empty() || (!is_loopback_name(name) && !allowed_hosts.count(name)))
      return refuse(403, "Host '" + loggable(host, 100) + "' is not a name of this server (start it with --allowed-host NAME to accept one)");
    if (!opt.token.empty()) {
      const std::string auth = req.get_header_value_count("Authorization") == 1 ? req.get_header_value("Authorization") : "";
      if (auth.size() < 7 || lower(auth.substr(0, 7)) != "bearer ") {
        res.set_header("WWW-Authenticate", "Bearer realm=\"clipkit\"");
        return refuse(401, "this server needs an Authorization: Bearer token");
      }
      size_t b = 7;
      while (b < auth.size() && auth[b] == ' ') ++b;
      if (!same_secret(auth.substr(b), opt.token)) return refuse(403, "wrong bearer token");
    }
    return 0;
  }

  void setup_routes() {
    using httplib::Request;
    using httplib::Response;
    server::TransportLimits limits;
    limits.compute_threads = std::max(1, opt.http_threads);
    limits.max_connections = static_cast<size_t>(opt.max_connections);
    limits.header_timeout = std::chrono::milliseconds(opt.header_timeout_ms);
    limits.body_timeout = std::chrono::milliseconds(opt.body_timeout_ms);
    limits.body_memory_bytes = opt.body_memory_bytes;
    http.set_limits(limits);
    http.set_payload_max_length(opt.max_upload_bytes);
    http.set_default_headers({{"X-Content-Type-Options", "nosniff"}});
    http.set_logger([this](const Request& req, const Response& res) { log_request(req, res); });
    http.set_pre_routing_handler([this](const Request& req, Response& res) {
      // Ranges are honoured by the image route alone, and there one at a time (parse_range).
      const_cast<Request&>(req).ranges.clear();
      if (admission(req, res) != 0) return httplib::Server::HandlerResponse::Handled;
      // Bodies are bounded through their Content-Length (the transport refuses a larger one with
      // 413 before storing anything); a body without one could not be bounded.
      if ((req.method == "POST" || req.method == "PUT" || req.method == "PATCH") &&
          (!req.has_header("Content-Length") || req.has_header("Transfer-Encoding"))) {
        res.set_header("Connection", "close");
        send_error(res, 411, "request bodies need a Content-Length (chunked uploads are not accepted)");
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    // A client that waits for "100 Continue" learns about a too large body before sending it.
    http.set_expect_100_continue_handler([this](const Request& req, Response& res) {
      if (const int refused = admission(req, res)) return refused;
      if (req.get_header_value_count("Content-Length") &&
          std::strtoull(req.get_header_value("Content-Length").c_str(), nullptr, 10) > opt.max_upload_bytes) {
        send_error(res, 413, "request body is larger than the limit of " + std::to_string(opt.max_upload_bytes) + " bytes");
        return 413;
      }
      return 100;
    });
    http.set_error_handler([this](const Request& req, Response& res) {
      if (!res.body.empty() || res.has_header("Content-Length")) return;
      std::string msg = status_text(res.status);
      if (res.status == 404) msg = "no such route: " + loggable(req.method, 16) + " " + loggable(req.path, 200);
      if (res.status == 413) msg = "request body is larger than the limit of " + std::to_string(opt.max_upload_bytes) + " bytes";
      send_error(res, res.status, msg);
    });
    http.set_exception_handler([](const Request&, Response& res, std::exception_ptr ep) {
      std::string msg = "internal error";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        msg += std::string(": ") + e.what();
      } catch (...) {
      }
      send_error(res, 500, msg);
    });

    auto page = [](const Request& req, Response& res) {
      server::WebAsset a;
      if (!server::find_web_asset(req.path, &a)) {
        send_error(res, 404, "no such page: " + loggable(req.path, 200));
        return;
      }
      res.set_header("Cache-Control", "no-cache");
      if (req.path == "/" || req.path == "/index.html")
        res.set_header("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'");
      res.set_content(std::string(a.content), a.mime_type);
    };
    http.Get("/", page);
    http.Get("/index.html", page);
    http.Get("/app.js", page);
    http.Get("/style.css", page);

    http.Get("/api/info", [this](const Request&, Response& res) { guarded(res, [&] { info(res); }); });
    http.Get("/api/search", [this](const Request& req, Response& res) {
      guarded(res, [&] {
        const auto t0 = std::chrono::steady_clock::now();
        const Parsed p = parse_params(req.params);
        send_hits(res, search(make_query(p, nullptr), p.request.options), p.request.options.k, t0);
      });
    });
    http.Post("/api/search", [this](const Request& req, Response& res) {
      guarded(res, [&] {
        const auto t0 = std::chrono::steady_clock::now();
        if (!req.params.empty()) throw HttpError(400, "POST /api/search takes its parameters in the JSON body, not in the URL");
        const Parsed p = parse_body(req.body);
        send_hits(res, search(make_query(p, nullptr), p.request.options), p.request.options.k, t0);
      });
    });
    http.Post("/api/search/image", [this](const Request& req, Response& res) {
      guarded(res, [&] {
        const auto t0 = std::chrono::steady_clock::now();
        const Parsed p = parse_params(req.params);
        const std::string* bytes = &req.body;
        if (req.is_multipart_form_data()) {
          // The field named "image", else the first part that is a file.
          auto f = req.files.find("image");
          if (f == req.files.end())
            f = std::find_if(req.files.begin(), req.files.end(), [](const auto& kv) { return !kv.second.filename.empty(); });
          if (f == req.files.end()) throw HttpError(400, "the form holds no file (send it in a field named \"image\")");
          bytes = &f->second.content;
        }
        const std::vector<float> v = embed_upload(*bytes);
        send_hits(res, search(make_query(p, &v), p.request.options), p.request.options.k, t0);
      });
    });
    http.Get(R"(/api/similar/([^/]+))", [this](const Request& req, Response& res) {
      guarded(res, [&] {
        const auto t0 = std::chrono::steady_clock::now();
        const int64_t id = parse_id(req.matches[1]);
        Parsed p = parse_params(req.params);
        if (!p.request.likes.empty() || !p.request.texts.empty() || !p.request.minus.empty() || !p.request.expression.empty())
          throw HttpError(400, "/api/similar/{id} takes no query terms; use POST /api/search to combine");
        {
          std::lock_guard<std::mutex> lock(index_mu);
          CatalogItem it;
          if (!index.find_id(id, &it)) throw HttpError(404, "no item " + std::to_string(id) + " in the index");
        }
        p.request.likes.push_back("#" + std::to_string(id));
        send_hits(res, search(make_query(p, nullptr), p.request.options), p.request.options.k, t0);
      });
    });
    http.Get(R"(/api/items/([^/]+))", [this](const Request& req, Response& res) { guarded(res, [&] { item(req.matches[1], res); }); });
    http.Post("/api/recommend", [this](const Request& req, Response& res) {
      guarded(res, [&] {
        const auto t0 = std::chrono::steady_clock::now();
        if (!req.params.empty()) throw HttpError(400, "POST /api/recommend takes its parameters in the JSON body, not in the URL");
        recommend(req.body, res, t0);
      });
    });
    http.Get("/api/fields", [this](const Request&, Response& res) { guarded(res, [&] { fields(res); }); });
    http.Post("/api/items", [this](const Request& req, Response& res) { guarded(res, [&] { add_item(req.body, res); }); });
    http.Delete(R"(/api/items/([^/]+))",
                [this](const Request& req, Response& res) { guarded(res, [&] { delete_item(req.matches[1], res); }); });
    http.Patch(R"(/api/items/([^/]+)/meta)",
               [this](const Request& req, Response& res) { guarded(res, [&] { patch_meta(req.matches[1], req.body, res); }); });
    http.Get(R"(/api/items/([^/]+)/thumb)", [this](const Request& req, Response& res) { guarded(res, [&] { item_thumb(req.matches[1], res); }); });
    http.Post("/api/near-duplicates", [this](const Request& req, Response& res) { guarded(res, [&] { near_duplicates(req.body, res); }); });
    http.Get(R"(/api/items/([^/]+)/image)",
             [this](const Request& req, Response& res) { guarded(res, [&] { item_image(req, req.matches[1], res); }); });
  }
};

SearchServer::SearchServer(Index index, std::shared_ptr<const Model> model, ServerOptions options) {
  if (!model) throw Error(ErrorCode::InvalidArgument, "the server needs the index's model");
  index.check_model(*model);
  if (options.port < 0 || options.port > 65535) throw Error(ErrorCode::InvalidArgument, "port must be in 0..65535, got " + std::to_string(options.port));
  if (options.http_threads <= 0) throw Error(ErrorCode::InvalidArgument, "http_threads must be positive");
  if (options.max_k <= 0) throw Error(ErrorCode::InvalidArgument, "max_k must be positive");
  if (options.max_upload_bytes == 0) throw Error(ErrorCode::InvalidArgument, "max_upload_bytes must be positive");
  if (options.max_upload_pixels == 0) throw Error(ErrorCode::InvalidArgument, "max_upload_pixels must be positive");
  if (options.decode_memory_bytes == 0) throw Error(ErrorCode::InvalidArgument, "decode_memory_bytes must be positive");
  if (options.max_connections <= 0) throw Error(ErrorCode::InvalidArgument, "max_connections must be positive");
  if (options.header_timeout_ms <= 0 || options.body_timeout_ms <= 0)
    throw Error(ErrorCode::InvalidArgument, "header_timeout_ms and body_timeout_ms must be positive");
  if (options.body_memory_bytes == 0) throw Error(ErrorCode::InvalidArgument, "body_memory_bytes must be positive");
  if (options.writable && options.token.empty())
    throw Error(ErrorCode::InvalidArgument, "a writable server needs a bearer token (--token-file)");
  impl_ = std::make_unique<Impl>(std::move(index), std::move(model), std::move(options));
  impl_->setup_routes();
}

SearchServer::~SearchServer() {
  stop();
  if (impl_ && !impl_->http.is_running()) impl_->http.close_listener();
}

int SearchServer::bind() {
  Impl& m = *impl_;
  if (m.bound_port >= 0) return m.bound_port;
  if (m.opt.port == 0) {
    const int p = m.http.bind_to_any_port(m.opt.host);
    if (p <= 0) throw Error(ErrorCode::Io, "cannot listen on " + m.opt.host + " (no free port, or the address is not local)");
    m.bound_port = p;
  } else {
    if (!m.http.bind_to_port(m.opt.host, m.opt.port))
      throw Error(ErrorCode::Io, "cannot listen on " + m.opt.host + ":" + std::to_string(m.opt.port) +
                                     " (the port is in use, or the address is not local)");
    m.bound_port = m.opt.port;
  }
  return m.bound_port;
}

void SearchServer::run() {
  Impl& m = *impl_;
  bind();
  m.run_started = true;
  if (!m.stopping) m.http.listen_after_bind();
  m.http.close_listener();  // when stopped before it started serving
  m.run_finished = true;
}

void SearchServer::stop() {
  if (!impl_) return;
  Impl& m = *impl_;
  m.stopping = true;
  // run() may be between its start and the moment the transport accepts: wait for either.
  if (m.run_started)
    while (!m.http.is_running() && !m.run_finished) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  m.http.stop();
}

bool SearchServer::wait_until_running() const {
  const Impl& m = *impl_;
  while (!m.http.is_running()) {
    if (m.run_finished || m.stopping) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

int SearchServer::port() const { return impl_->bound_port; }

}  // namespace clipkit
