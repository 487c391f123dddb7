// Item metadata: one JSON object per indexed path, stored in the catalog table `path_meta`, and
// the in-memory view of it that filters and the field summary read (kept in step with the catalog
// generation). The view indexes every field: for each field path, the rows holding it and the
// rows by value (strings and booleans by value, numbers sorted), so that a selective filter
// visits only the rows its comparisons can match; those rows are then judged by the filter itself.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
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
  uint32_t slot = 0;              // its number in the field index
};

// Every indexed path with its item, metadata and tags, as of one catalog generation.
class MetaView {
 public:
  MetaView() = default;
  MetaView(const MetaView&) = delete;  // the field index points into `rows`
  MetaView& operator=(const MetaView&) = delete;

  int64_t generation = -1;
  std::map<std::pair<int64_t, std::string>, MetaRow> rows;  // by (item, path)

  // Reads everything.
  void load(Db& db, bool has_meta_table, int64_t gen);
  // Re-reads only the paths the catalog's change log (table path_changes) lists after
  // `generation`; false when the log does not reach back that far (then load()).
  bool update(Db& db, int64_t gen);

  // Items with a path that passes every given filter, each with its first passing path (pointing
  // into `rows`: valid while the view is unchanged). `where` may be null; path_prefix as
  // SearchFilter::path_prefix (normalised); tags all required. Paths in `skip` are left out (rows
  // that changed since the view's generation, judged from their newer version by the caller).
  std::unordered_map<int64_t, const std::string*> passing(const WhereNode* where, const std::string& path_prefix,
                                                   const std::vector<std::string>& tags,
                                                   const std::unordered_set<std::string>* skip = nullptr) const;
  // Whether one row passes the filters of passing().
  static bool row_passes(const MetaRow& r, const WhereNode* where, const std::string& path_prefix, const std::vector<std::string>& tags);

  // Throws Error(InvalidArgument) when a comparison puts a literal against a field whose stored
  // values all have another type (e.g. price < "cheap" while every price is a number). The
  // values of `extra` rows (newer than the view) count as stored too.
  void check_types(const WhereNode& where, const std::string& expression, const std::vector<const MetaRow*>* extra = nullptr) const;

  // The row of one path as the catalog holds it now (nullopt: the path is not indexed).
  static std::optional<MetaRow> read_path(Db& db, bool has_meta_table, const std::string& path);

  // The field summary (GET /api/fields): {"fields": [{"name", "type", "count", "min", "max", "values"}],
  // "tags": [{"tag", "count"}] (the max_values most frequent), "distinct_tags", "paths"}.
  nlohmann::json fields(size_t max_values = 50) const;

  // Rows (as index slots, ascending) that may pass `where`: a superset of those that do, or
  // nullopt when the field index cannot narrow it (e.g. `not`, `!=`). passing() reads it.
  std::optional<std::vector<uint32_t>> candidates(const WhereNode& where) const;

 private:
  struct Postings {
    std::vector<uint32_t> present;  // rows where the field holds a value other than null
    std::unordered_map<std::string, std::vector<uint32_t>> strings;
    std::vector<std::pair<double, uint32_t>> numbers;  // [0, numbers_sorted) sorted by value, the rest appended since
    size_t numbers_sorted = 0;
    std::vector<uint32_t> trues, falses;
  };
  struct TypeCount {
    int64_t rows = 0;       // rows where the field (dotted name) holds a value other than null
    int64_t bits[4] = {};   // rows per value type (numbers, strings, true/false, objects)
  };
  std::unordered_map<std::string, Postings> postings_;  // by field path, parts joined by '\x1f'
  std::unordered_map<std::string, TypeCount> types_;    // by dotted name
  std::vector<const MetaRow*> slots_;                   // null where a row was removed
  size_t removed_ = 0;

  void index_row(MetaRow& r);
  void unindex_row(const MetaRow& r);
  void reindex();
  void tidy_index();  // sorts appended numbers, renumbers after many removals
  void index_fields(const nlohmann::json& obj, std::string& key, size_t depth, uint32_t slot);
  void count_types(const nlohmann::json& meta, int sign);
};

}  // namespace clipkit::search
