// Search requests shared by `clipkit search` and `clipkit serve`.
#include "clipkit/search_request.h"

#include <nlohmann/json.hpp>

#include "clipkit/zeroshot.h"

namespace clipkit {

Query build_query(const SearchRequest& r) {
  Query q;
  if (!r.expression.empty()) q = parse_query(r.expression);
  for (const auto& t : r.texts) q.terms.push_back({QueryTerm::Kind::Text, t, 1.0f, {}});
  for (const auto& f : r.images) q.terms.push_back({QueryTerm::Kind::Image, f, 1.0f, {}});
  for (const auto& l : r.likes) q.terms.push_back({QueryTerm::Kind::Item, l, 1.0f, {}});
  for (const auto& t : r.minus) q.terms.push_back({QueryTerm::Kind::Text, t, -1.0f, {}});
  if (!r.templates.empty()) q.templates = resolve_templates(r.templates);
  return q;
}

nlohmann::json search_hit_json(const SearchHit& h) {
  nlohmann::json j;
  j["rank"] = h.rank;
  j["id"] = h.item.id;
  j["path"] = h.path;
  j["score"] = h.score;
  j["paths"] = h.item.paths;
  j["sha256"] = h.item.sha256;
  j["size"] = h.item.size;
  j["width"] = h.item.width;
  j["height"] = h.item.height;
  for (size_t i = 0; i < h.item.paths.size() && i < h.item.mtimes_ns.size(); ++i)
    if (h.item.paths[i] == h.path) j["mtime"] = static_cast<double>(h.item.mtimes_ns[i]) / 1e9;
  j["added"] = h.item.added;
  j["tags"] = h.item.tags;
  try {
    j["meta"] = nlohmann::json::parse(h.meta.empty() ? std::string("{}") : h.meta);
  } catch (const nlohmann::json::exception&) {
    j["meta"] = nlohmann::json::object();
  }
  return j;
}

}  // namespace clipkit
