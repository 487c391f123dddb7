// Request bodies of the recommendation and write routes (docs/server.md): parsed and checked
// here, executed by the server against its index.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "clipkit/index.h"

namespace clipkit::server {

// A JSON object body, nested at most 16 levels, at most `max_bytes`; HttpError 400/413 otherwise.
nlohmann::json parse_json_object(const std::string& body, size_t max_bytes);

// Standard base64 (padding optional, whitespace ignored); HttpError 400 when malformed.
std::string base64_decode(const std::string& text, const std::string& what);

// One example of POST /api/recommend: an id (number), a string (indexed path, "#42", or
// "text:TEXT"), or {"vector": [...]}, {"text": "..."}, {"image": "<base64>"}.
struct Example {
  QueryTerm term;            // Item, Text or Vector
  std::string image_bytes;   // set for an uploaded image (term is filled by the server)
  bool is_image = false;
};

struct RecommendBody {
  std::vector<Example> positive, negative;
  RecommendOptions options;  // strategy, diversity, search.{k, where, filter, exclude_ids, min_score}
  int offset = 0;
};

RecommendBody parse_recommend_body(const nlohmann::json& j, int max_k, int dim);

// POST /api/items: {"path": "..."} or {"image": "<base64>", "name": "file.jpg"}, with optional
// "meta" (object) and "tags" (strings).
struct ItemBody {
  std::string path;
  std::string image_bytes;
  std::string name;
  std::string meta;  // JSON object text; empty when not given
  std::vector<std::string> tags;
};

ItemBody parse_item_body(const nlohmann::json& j);

// The `where` of a request: a string, or the JSON form (an object).
std::string where_of(const nlohmann::json& v);

}  // namespace clipkit::server
