// Item metadata: one JSON object per indexed path, stored in the catalog table `path_meta`, and
// the in-memory view of it that filters and the field summary read (rebuilt when the catalog
// generation moves).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "search/filter.h"
#include "search/sqlite.h"

namespace clipkit::search {

// Largest metadata object accepted for one path (serialised JSON).
inline constexpr size_t kMaxMetaBytes = 64 * 1024;

// Parses and checks one metadata object (a JSON object, at most kMaxMetaBytes once serialised,
// no "path" key). `what` names its origin in errors. Throws Error(InvalidArgument).
nlohmann::json parse_meta_object(const std::string& text, const std::string& what);
void check_meta_object(const nlohmann::json& j, const std::string& what);

struct MetaRow {
  int64_t item = 0;
  std::string path;
  nlohmann::json meta;            // an object ({} when none)
  std::vector<std::string> tags;  // sorted
};

// Every indexed path with its item, metadata and tags, as of one catalog generation.
class MetaView {
 public:
  int64_t generation = -1;
  std::map<std::pair<int64_t, std::string>, MetaRow> rows;  // by (item, path)

  // Reads everything.
  void load(Db& db, bool has_meta_table, int64_t gen);
  // Re-reads only the paths the catalog's change log (table path_changes) lists after
  // `generation`; false when the log does not reach back that far (then load()).
  bool update(Db& db, int64_t gen);

  // Items with a path that passes every given filter, each with its first passing path. `where`
  // may be null; path_prefix as SearchFilter::path_prefix (normalised); tags all required.
  std::unordered_map<int64_t, std::string> passing(const WhereNode* where, const std::string& path_prefix,
                                                   const std::vector<std::string>& tags) const;

  // Throws Error(InvalidArgument) when a comparison puts a literal against a field whose stored
  // values all have another type (e.g. price < "cheap" while every price is a number).
  void check_types(const WhereNode& where, const std::string& expression) const;

  // The field summary (GET /api/fields): {"fields": [{"name", "types", "count", "min", "max", "values"}]}.
  nlohmann::json fields(size_t max_values = 50) const;
};

}  // namespace clipkit::search
