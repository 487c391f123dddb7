// Search results on stdout, as `clipkit search` and `clipkit recommend` print them.
#pragma once
#include <string>
#include <vector>

#include "clipkit/index.h"

namespace clipkit::cli {

// format: table (aligned columns), json (one search_hit_json object per line) or csv.
void print_hits(const std::vector<SearchHit>& hits, const std::string& format);

}  // namespace clipkit::cli
