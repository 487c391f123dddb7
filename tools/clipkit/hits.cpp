// Search results on stdout (hits.h).
#include "clipkit/hits.h"

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "clipkit/options.h"
#include "clipkit/search_request.h"

namespace clipkit::cli {

void print_hits(const std::vector<SearchHit>& hits, const std::string& format) {
  if (format == "json") {
    for (const auto& h : hits) {
      const nlohmann::json j = search_hit_json(h);
      std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
    return;
  }
  if (format == "csv") {
    // the JSON's fields: size is the file size in bytes, width x height the image's pixels
    std::vector<std::vector<std::string>> rows = {{"rank", "score", "id", "path", "size", "width", "height"}};
    for (const auto& h : hits) {
      char score[32];
      std::snprintf(score, sizeof score, "%.6g", static_cast<double>(h.score));
      rows.push_back({std::to_string(h.rank), score, std::to_string(h.item.id), h.path, std::to_string(h.item.size),
                      std::to_string(h.item.width), std::to_string(h.item.height)});
    }
    print_csv(rows);
    return;
  }
  // size: the file size in bytes, as the JSON's "size"; pixels: width x height
  std::printf("%4s  %7s  %6s  %10s  %9s  %s\n", "rank", "score", "id", "size", "pixels", "path");
  for (const auto& h : hits) {
    char pixels[32];
    std::snprintf(pixels, sizeof pixels, "%dx%d", h.item.width, h.item.height);
    std::string extra;
    if (h.item.paths.size() > 1) extra = "  (+" + std::to_string(h.item.paths.size() - 1) + " duplicate path(s))";
    std::printf("%4d  %7.4f  %6lld  %10lld  %9s  %s%s\n", h.rank, static_cast<double>(h.score), static_cast<long long>(h.item.id),
                static_cast<long long>(h.item.size), pixels, h.path.c_str(), extra.c_str());
  }
}

}  // namespace clipkit::cli
