// clipkit/search_request.h — a search as the command line and the HTTP server take it.
//
//   clipkit::SearchRequest r;
//   r.texts = {"a red bicycle"};
//   r.likes = {"#42"};
//   r.options.k = 10;
//   clipkit::Query q = clipkit::build_query(r);
//   for (const auto& hit : index.search(q, model.get(), r.options))
//     std::cout << clipkit::search_hit_json(hit).dump() << "\n";
//
// Shorthand terms (each weight 1, `minus` weight -1) are appended to the terms of the expression
// in this order: expression, texts, images, likes, minus.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "clipkit/index.h"

namespace clipkit {

struct SearchRequest {
  std::string expression;                // "image:a.jpg + 0.5*text:in red" (see parse_query)
  std::vector<std::string> texts;        // text terms, weight +1
  std::vector<std::string> images;       // image files, weight +1
  std::vector<std::string> likes;        // indexed paths or ids ("42", "#42"), weight +1
  std::vector<std::string> minus;        // text terms, weight -1
  std::string templates;                 // built-in template set or template file; empty = none
  SearchOptions options;                 // k, min_score, filters
};

// The Query of a request; its terms may be empty (the caller decides whether that is an error).
// Throws Error(InvalidArgument) for a malformed expression, Error(NotFound) for unknown templates.
Query build_query(const SearchRequest& request);

// One result as a JSON object (the line `clipkit search --format json` prints, the objects of the
// HTTP API): rank, id, path, score, paths, sha256, size, width, height, mtime (of `path`, unix
// seconds), added, tags, meta (the metadata object of `path`, {} when none).
nlohmann::json search_hit_json(const SearchHit& hit);

}  // namespace clipkit
