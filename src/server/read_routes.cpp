// clipkit serve, the read API: searches (text, expression, weighted terms, uploaded image, similar
// items), recommendations, items, metadata fields, near-duplicate groups, the server's info.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>

#include <nlohmann/json.hpp>

#include "clipkit/image.h"
#include "clipkit/version.h"
#include "clipkit/zeroshot.h"
#include "server/api_requests.h"
#include "server/server_impl.h"

namespace clipkit {

namespace {
using namespace server;
}  // namespace

int SearchServer::Impl::cap_k(int64_t k) const {
  if (k <= 0) throw HttpError(400, "k must be positive, got " + std::to_string(k));
  return static_cast<int>(std::min<int64_t>(k, opt.max_k));
}

int SearchServer::Impl::check_offset(int64_t offset) const {
  if (offset < 0 || offset > opt.max_k)
    throw HttpError(400, "offset must be in 0.." + std::to_string(opt.max_k) + ", got " + std::to_string(offset));
  return static_cast<int>(offset);
}

void SearchServer::Impl::drop_first(std::vector<SearchHit>& hits, int offset) {
  hits.erase(hits.begin(), hits.begin() + std::min<size_t>(hits.size(), static_cast<size_t>(offset)));
  for (size_t i = 0; i < hits.size(); ++i) hits[i].rank = static_cast<int>(offset + i + 1);
}

// nprobe (IVF lists probed), ef_search (HNSW) and rerank (0/1): approximate search tuning.
void SearchServer::Impl::set_search_tuning(SearchOptions& o, const std::string& key, int64_t v) {
  if (key == "rerank") {
    if (v != 0 && v != 1) throw HttpError(400, "rerank must be 0 or 1");
    o.rerank = v == 1;
    return;
  }
  if (v < 0 || v > 1000000) throw HttpError(400, key + " must be between 0 (automatic) and 1000000, got " + std::to_string(v));
  (key == "nprobe" ? o.nprobe : o.ef_search) = static_cast<int>(v);
}

void SearchServer::Impl::set_templates(SearchRequest& r, const std::string& name) const {
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
SearchServer::Impl::Parsed SearchServer::Impl::parse_params(const httplib::Params& params) const {
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
    } else if (key == "offset") {
      p.offset = check_offset(parse_int(key, value));
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
                               "' (known: text, minus, like, query, templates, k, offset, min_score, path_prefix, tag, where, nprobe, ef_search, rerank)");
    }
  }
  for (const auto& t : r.texts)
    if (t.empty()) throw HttpError(400, "parameter text is empty");
  return p;
}

// POST /api/search: a JSON object.
SearchServer::Impl::Parsed SearchServer::Impl::parse_body(const std::string& body) const {
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
    } else if (key == "offset") {
      if (!v.is_number_integer()) throw HttpError(400, "\"offset\" must be an integer in 0.." + std::to_string(opt.max_k));
      p.offset = check_offset(v.get<int64_t>());
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
                               "\" (known: query, text, minus, like, terms, templates, k, offset, min_score, path_prefix, tags, where, exclude_items, nprobe, ef_search, rerank)");
    }
  }
  for (const auto& t : r.texts)
    if (t.empty()) throw HttpError(400, "empty text");
  return p;
}

// The Query of a parsed request; `upload` (when not null) is the uploaded image's embedding,
// placed where an --image term goes on the command line.
Query SearchServer::Impl::make_query(const Parsed& p, const std::vector<float>* upload) const {
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
bool SearchServer::Impl::resolve_item(const std::string& value, CatalogItem* it) {
  if (index.find_path(value, it)) return true;
  std::string v = value;
  if (!v.empty() && v[0] == '#') v = v.substr(1);
  if (v.empty() || v.size() > 18 || !std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); }))
    return false;
  return index.find_id(std::stoll(v), it);
}

std::vector<SearchHit> SearchServer::Impl::search(Query q, SearchOptions o) {
  {
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
  // Text and vector terms only now (see the top of the file).
  const std::vector<float> v = embed_query(q);
  return index.search_vector(v, o);
}

// The hits ranked offset+1 .. offset+k of the search for offset+k results: with an exact index,
// consecutive pages are consecutive slices of one ranking.
std::vector<SearchHit> SearchServer::Impl::search_page(Query q, SearchOptions o, int offset) {
  o.k += offset;
  std::vector<SearchHit> hits = search(std::move(q), std::move(o));
  drop_first(hits, offset);
  return hits;
}

void SearchServer::Impl::send_hits(httplib::Response& res, const std::vector<SearchHit>& hits, int k, std::chrono::steady_clock::time_point t0) {
  send_hits_json(res, hits_json(hits), k, t0);
}

std::string SearchServer::Impl::hits_json(const std::vector<SearchHit>& hits) {
  json out = json::array();
  for (const auto& h : hits) out.push_back(search_hit_json(h));
  return dump(out);
}

// {"k": k, "results": [...], "took_ms": t}, as send_json writes an object (keys in order).
void SearchServer::Impl::send_hits_json(httplib::Response& res, const std::string& results, int k, std::chrono::steady_clock::time_point t0) {
  const double took = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const std::string took_text = dump(json(took));
  std::string body;
  body.reserve(results.size() + took_text.size() + 40);
  body.append("{\"k\":").append(std::to_string(k)).append(",\"results\":").append(results).append(",\"took_ms\":").append(took_text).append("}");
  res.status = 200;
  res.set_content(std::move(body), "application/json; charset=utf-8");
}

int64_t SearchServer::Impl::answer_generation() {
  int64_t gen;
  {
    gen = index.generation();
  }
  std::lock_guard<std::mutex> lock(answers_mu);
  if (gen > answers_generation) {
    answers.clear();
    answers_generation = gen;
  }
  return gen;
}

std::shared_ptr<const std::string> SearchServer::Impl::cached_answer(int64_t generation, const std::string& key) {
  std::lock_guard<std::mutex> lock(answers_mu);
  if (generation != answers_generation) return nullptr;
  std::shared_ptr<const std::string> out;
  return answers.get(key, &out) ? out : nullptr;
}

void SearchServer::Impl::cache_answer(int64_t generation, const std::string& key, std::shared_ptr<const std::string> body) {
  std::lock_guard<std::mutex> lock(answers_mu);
  if (generation != answers_generation) return;  // the catalog moved on meanwhile
  const size_t bytes = body->size();
  answers.put(key, std::move(body), bytes);
}

// The query vector of `q` (text and vector terms); those of text-only queries are kept, by their
// terms and templates (the same terms always give the same vector: the model is fixed).
std::vector<float> SearchServer::Impl::embed_query(const Query& q) const {
  std::string key;
  for (const auto& t : q.terms) {
    if (t.kind != QueryTerm::Kind::Text) return index.embed_query(q, model.get());
    char w[32];
    std::snprintf(w, sizeof w, "%a", static_cast<double>(t.weight));
    key.append(w).append(1, '\0').append(std::to_string(t.value.size())).append(1, ':').append(t.value);
  }
  key.append(1, '\1');
  for (const auto& tmpl : q.templates) key.append(std::to_string(tmpl.size())).append(1, ':').append(tmpl);
  std::shared_ptr<const std::vector<float>> v;
  if (text_vectors.get(key, &v)) return *v;
  auto made = std::make_shared<const std::vector<float>>(index.embed_query(q, model.get()));
  text_vectors.put(key, made, made->size() * sizeof(float));
  return *made;
}

std::vector<float> SearchServer::Impl::embed_upload(const std::string& bytes) const {
  if (bytes.empty()) throw HttpError(400, "no image: send the image as the request body or as a multipart/form-data file");
  // The same bytes always give the same embedding (and passed the same checks before).
  const std::string key = content_sha256(bytes.data(), bytes.size());
  std::shared_ptr<const std::vector<float>> cached;
  if (upload_vectors.get(key, &cached)) return *cached;
  DecodeOptions d;
  d.max_pixels = opt.max_upload_pixels;
  const std::vector<float> px = with_decode_budget("the uploaded image", [&] {
    const Image img = decode_image_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "uploaded image", d);
    return preprocess(img, model->preprocess_config());
  });
  const Embeddings e = model->encode_images(px.data(), 1, true);
  if (e.rows != 1 || e.dim != index.dim()) throw Error(ErrorCode::Shape, "the model returned a wrong-sized image embedding");
  auto made = std::make_shared<const std::vector<float>>(e.row(0), e.row(0) + e.dim);
  upload_vectors.put(key, made, made->size() * sizeof(float));
  return *made;
}

void SearchServer::Impl::recommend(const std::string& body, httplib::Response& res, std::chrono::steady_clock::time_point t0) {
  RecommendBody b = parse_recommend_body(parse_json_object(body, opt.max_json_bytes), opt.max_k, index.dim());
  RecommendOptions& o = b.options;
  const int k = o.search.k;
  o.search.k = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(k) + b.offset, opt.max_k + static_cast<int64_t>(b.offset)));
  // Items become their stored vectors (and are excluded) first; texts and uploads are embedded
  // after (see the top of the file).
  {
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
    hits = index.recommend(o, nullptr);
  }
  drop_first(hits, b.offset);
  send_hits(res, hits, k, t0);
}

void SearchServer::Impl::fields(httplib::Response& res) {
  std::string summary;
  {
    refresh_locked();
    summary = index.fields_summary();
  }
  send_json(res, json::parse(summary));
}

void SearchServer::Impl::info(httplib::Response& res) {
  IndexInfo i;
  {
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

void SearchServer::Impl::item(const std::string& id_text, httplib::Response& res) {
  const int64_t gen = answer_generation();
  const std::string key = "item " + id_text;
  std::shared_ptr<const std::string> body = cached_answer(gen, key);
  if (!body) {
    body = std::make_shared<const std::string>(item_body(id_text));
    cache_answer(gen, key, body);
  }
  res.status = 200;
  res.set_content(*body, "application/json; charset=utf-8");
}

// The JSON record of an item (after catching up with other writers).
std::string SearchServer::Impl::item_body(const std::string& id_text) {
  const int64_t id = parse_id(id_text);
  CatalogItem it;
  std::string meta = "{}";
  {
    refresh_locked();
    if (!index.find_id(id, &it)) throw HttpError(404, "no item " + id_text + " in the index");
    if (!it.paths.empty()) meta = index.metadata(it.paths.front());
  }
  std::vector<double> mtimes;
  for (auto ns : it.mtimes_ns) mtimes.push_back(static_cast<double>(ns) / 1e9);
  json j = {{"id", it.id},         {"sha256", it.sha256}, {"size", it.size},     {"width", it.width},
            {"height", it.height}, {"added", it.added},   {"paths", it.paths},   {"mtimes", mtimes},
            {"tags", it.tags},     {"image", "/api/items/" + std::to_string(it.id) + "/image"}, {"meta", json::parse(meta)}};
  return dump(j);
}

// POST /api/near-duplicates {"ids": [...], "threshold": 0.95}: the ids grouped, in their order,
// each joining the first group whose first item's stored vector has a cosine >= threshold with
// its own. Answers {"groups": [[id, ...], ...]}.
void SearchServer::Impl::near_duplicates(const std::string& body, httplib::Response& res) {
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



// ---- the routes ------------------------------------------------------------------------------
void SearchServer::Impl::add_read_routes() {
  using httplib::Request;
  using httplib::Response;
  http.Get("/api/info", [this](const Request&, Response& res) { guarded(res, [&] { info(res); }); });
  http.Get("/api/search", [this](const Request& req, Response& res) {
    guarded(res, [&] {
      const auto t0 = std::chrono::steady_clock::now();
      const Parsed p = parse_params(req.params);
      send_cached_hits(res, "search " + req.target, p.request.options.k, t0,
                       [&] { return search_page(make_query(p, nullptr), p.request.options, p.offset); });
    });
  });
  http.Post("/api/search", [this](const Request& req, Response& res) {
    guarded(res, [&] {
      const auto t0 = std::chrono::steady_clock::now();
      if (!req.params.empty()) throw HttpError(400, "POST /api/search takes its parameters in the JSON body, not in the URL");
      const Parsed p = parse_body(req.body);
      send_hits(res, search_page(make_query(p, nullptr), p.request.options, p.offset), p.request.options.k, t0);
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
      send_hits(res, search_page(make_query(p, &v), p.request.options, p.offset), p.request.options.k, t0);
    });
  });
  http.Get(R"(/api/similar/([^/]+))", [this](const Request& req, Response& res) {
    guarded(res, [&] {
      const auto t0 = std::chrono::steady_clock::now();
      const int64_t id = parse_id(req.matches[1]);
      Parsed p = parse_params(req.params);
      if (!p.request.likes.empty() || !p.request.texts.empty() || !p.request.minus.empty() || !p.request.expression.empty())
        throw HttpError(400, "/api/similar/{id} takes no query terms; use POST /api/search to combine");
      p.request.likes.push_back("#" + std::to_string(id));
      send_cached_hits(res, "similar " + req.target, p.request.options.k, t0, [&] {
        {
          CatalogItem it;
          if (!index.find_id(id, &it)) throw HttpError(404, "no item " + std::to_string(id) + " in the index");
        }
        return search_page(make_query(p, nullptr), p.request.options, p.offset);
      });
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
  http.Post("/api/near-duplicates", [this](const Request& req, Response& res) { guarded(res, [&] { near_duplicates(req.body, res); }); });
}

}  // namespace clipkit
