// Metadata filters: the `where` expression shared by `clipkit search --where`, the C++ API and the
// HTTP API (docs/search.md, "Filters").
//
//   category = "dress" and price < 50 and not exists sold_out
//   colors in ["red", "blue"] or (brand != "acme" and rating >= 4)
//
// A field names a key of the item's metadata object (dots reach into nested objects: size.eu).
// A field an item lacks matches nothing (except through `not`); a list-valued field matches `=`
// and `in` when any element does, and `!=` when no element equals the value.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace clipkit::search {

struct WhereNode {
  enum class Op { And, Or, Not, Exists, Eq, Ne, Lt, Le, Gt, Ge, In };
  Op op = Op::And;
  std::vector<std::string> field;        // the path of the field (split at dots)
  std::string field_text;                // as written
  size_t column = 0;                     // 1-based column of the field in the expression
  std::vector<nlohmann::json> values;    // the literal (one; several for `in`)
  std::vector<std::unique_ptr<WhereNode>> kids;
};

// Parses a where expression; throws Error(InvalidArgument) "where: WHAT at column N".
std::unique_ptr<WhereNode> parse_where(const std::string& expression);

// The JSON form ({"and": [...]}, {"or": [...]}, {"not": X}, {"field": F, "op": "=", "value": V},
// {"field": F, "in": [...]}, {"exists": F}) written as the string form.
std::string where_json_to_string(const nlohmann::json& j);

// Does `meta` (a JSON object) pass?
bool where_matches(const WhereNode& node, const nlohmann::json& meta);

// Calls f(node) for every comparison node (Eq..In, Exists).
void for_each_comparison(const WhereNode& node, const std::function<void(const WhereNode&)>& f);

}  // namespace clipkit::search
