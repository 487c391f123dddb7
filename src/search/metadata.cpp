// Item metadata: validation, the in-memory view the filters read, and the field summary.
#include "search/metadata.h"

#include <algorithm>
#include <map>

#include "clipkit/error.h"

namespace clipkit::search {

namespace {

enum TypeBit : unsigned { kNumber = 1, kString = 2, kBool = 4, kOther = 8 };

unsigned type_bit(const nlohmann::json& v) {
  if (v.is_number()) return kNumber;
  if (v.is_string()) return kString;
  if (v.is_boolean()) return kBool;
  return kOther;
}

std::string type_names(unsigned mask) {
  std::string out;
  auto add = [&](unsigned bit, const char* name) {
    if (mask & bit) out += (out.empty() ? "" : " or ") + std::string(name);
  };
  add(kNumber, "numbers");
  add(kString, "strings");
  add(kBool, "true/false");
  add(kOther, "objects");
  return out;
}

// Records the type of every value reachable through objects (lists contribute their elements).
void collect_types(const nlohmann::json& v, const std::string& prefix, std::unordered_map<std::string, unsigned>& out, int depth) {
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string name = prefix.empty() ? it.key() : prefix + "." + it.key();
    const nlohmann::json& x = it.value();
    if (x.is_null()) continue;
    unsigned& m = out[name];
    if (x.is_array()) {
      for (const auto& e : x) m |= type_bit(e);
    } else if (x.is_object()) {
      m |= kOther;
      if (depth < 4) collect_types(x, name, out, depth + 1);
    } else {
      m |= type_bit(x);
    }
  }
}

}  // namespace

void check_meta_object(const nlohmann::json& j, const std::string& what) {
  if (!j.is_object()) throw Error(ErrorCode::InvalidArgument, what + ": metadata must be a JSON object");
  if (j.contains("path")) throw Error(ErrorCode::InvalidArgument, what + ": \"path\" is not a metadata field (it names the file)");
  const size_t n = j.dump().size();
  if (n > kMaxMetaBytes)
    throw Error(ErrorCode::Limit, what + ": metadata of " + std::to_string(n) + " bytes is larger than the limit of " +
                                                std::to_string(kMaxMetaBytes) + " bytes");
}

nlohmann::json parse_meta_object(const std::string& text, const std::string& what) {
  if (text.size() > kMaxMetaBytes * 2)
    throw Error(ErrorCode::Limit, what + ": metadata of " + std::to_string(text.size()) + " bytes is larger than the limit of " +
                                                std::to_string(kMaxMetaBytes) + " bytes");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    std::string m = e.what();
    const auto b = m.find("] ");
    if (b != std::string::npos) m = m.substr(b + 2);
    throw Error(ErrorCode::InvalidArgument, what + ": malformed JSON: " + m);
  }
  check_meta_object(j, what);
  return j;
}

namespace {

MetaRow read_row(Db& db, int64_t item, const std::string& path, bool is_null, const std::string& text) {
  MetaRow r;
  r.item = item;
  r.path = path;
  r.meta = nlohmann::json::object();
  if (!is_null) {
    try {
      r.meta = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception&) {
      throw Error(ErrorCode::Format, "index catalog " + db.path() + ": the metadata of " + path + " is not valid JSON");
    }
    if (!r.meta.is_object()) r.meta = nlohmann::json::object();
  }
  return r;
}

}  // namespace

void MetaView::load(Db& db, bool has_meta_table, int64_t gen) {
  rows.clear();
  std::unordered_map<std::string, MetaRow*> at;
  {
    Stmt s(db, has_meta_table ? "SELECT f.item_id, f.path, m.meta FROM files f LEFT JOIN path_meta m ON m.path = f.path"
                              : "SELECT item_id, path, NULL FROM files");
    while (s.step()) {
      MetaRow r = read_row(db, s.i64(0), s.text(1), s.is_null(2), s.is_null(2) ? std::string() : s.text(2));
      auto it = rows.emplace(std::make_pair(r.item, r.path), std::move(r)).first;
      at.emplace(it->second.path, &it->second);
    }
  }
  Stmt t(db, "SELECT path, tag FROM tags ORDER BY path, tag");
  while (t.step()) {
    const auto it = at.find(t.text(0));
    if (it != at.end()) it->second->tags.push_back(t.text(1));
  }
  generation = gen;
}

bool MetaView::update(Db& db, int64_t gen) {
  if (generation < 0) return false;
  {
    Stmt since(db, "SELECT value FROM meta WHERE key = 'change_log_since'");
    if (!since.step()) return false;
    try {
      if (std::stoll(since.text(0)) > generation) return false;
    } catch (const std::logic_error&) {
      return false;
    }
  }
  std::vector<std::string> paths;
  {
    Stmt c(db, "SELECT DISTINCT path FROM path_changes WHERE gen > ?1 AND gen <= ?2");
    c.bind(1, generation).bind(2, gen);
    while (c.step()) paths.push_back(c.text(0));
  }
  if (paths.size() > rows.size() / 4 + 1000) return false;  // cheaper to read everything
  std::unordered_map<std::string, std::pair<int64_t, std::string>> key_of;
  std::unordered_map<std::string, bool> wanted;
  for (const auto& p : paths) wanted[p] = true;
  for (const auto& [key, row] : rows)
    if (wanted.count(key.second)) key_of[key.second] = key;
  Stmt f(db, "SELECT f.item_id, m.meta FROM files f LEFT JOIN path_meta m ON m.path = f.path WHERE f.path = ?1");
  Stmt t(db, "SELECT tag FROM tags WHERE path = ?1 ORDER BY tag");
  for (const auto& p : paths) {
    const auto k = key_of.find(p);
    if (k != key_of.end()) rows.erase(k->second);
    f.reset();
    f.bind(1, p);
    if (!f.step()) continue;  // removed
    MetaRow r = read_row(db, f.i64(0), p, f.is_null(1), f.is_null(1) ? std::string() : f.text(1));
    t.reset();
    t.bind(1, p);
    while (t.step()) r.tags.push_back(t.text(0));
    rows.emplace(std::make_pair(r.item, r.path), std::move(r));
  }
  generation = gen;
  return true;
}

std::unordered_map<int64_t, std::string> MetaView::passing(const WhereNode* where, const std::string& path_prefix,
                                                           const std::vector<std::string>& tags) const {
  std::unordered_map<int64_t, std::string> out;
  for (const auto& [key, r] : rows) {
    if (out.count(r.item)) continue;
    if (!path_prefix.empty() && r.path.compare(0, path_prefix.size(), path_prefix) != 0) continue;
    bool all = true;
    for (const auto& tag : tags)
      if (!std::binary_search(r.tags.begin(), r.tags.end(), tag)) {
        all = false;
        break;
      }
    if (!all) continue;
    if (where && !where_matches(*where, r.meta)) continue;
    out.emplace(r.item, r.path);
  }
  return out;
}

void MetaView::check_types(const WhereNode& where, const std::string& expression) const {
  std::unordered_map<std::string, unsigned> types;
  for (const auto& [key, r] : rows) collect_types(r.meta, "", types, 0);
  for_each_comparison(where, [&](const WhereNode& n) {
    if (n.values.empty()) return;
    const auto it = types.find(n.field_text);
    if (it == types.end()) return;  // an unknown field matches nothing; not an error
    unsigned lit = 0;
    for (const auto& v : n.values) lit |= type_bit(v);
    if ((it->second & lit) == 0)
      throw Error(ErrorCode::InvalidArgument, "where: type mismatch: field '" + n.field_text + "' holds " + type_names(it->second) +
                                                  ", compared with " + type_names(lit) + " at column " + std::to_string(n.column) +
                                                  " of '" + expression + "'");
  });
}

nlohmann::json MetaView::fields(size_t max_values) const {
  struct Stat {
    int64_t count = 0;
    bool number = false, string = false, boolean = false, list = false, object = false;
    double min = 0, max = 0;
    bool have_range = false;
    std::map<std::string, int64_t> values;
  };
  std::map<std::string, Stat> stats;
  auto scalar = [](Stat& s, const nlohmann::json& v) {
    if (v.is_number()) {
      const double d = v.get<double>();
      s.number = true;
      if (!s.have_range) s.min = s.max = d, s.have_range = true;
      s.min = std::min(s.min, d);
      s.max = std::max(s.max, d);
    } else if (v.is_string()) {
      s.string = true;
      ++s.values[v.get<std::string>()];
    } else if (v.is_boolean()) {
      s.boolean = true;
    } else if (!v.is_null()) {
      s.object = true;
    }
  };
  for (const auto& [key, r] : rows)
    for (auto it = r.meta.begin(); it != r.meta.end(); ++it) {
      if (it.value().is_null()) continue;
      Stat& s = stats[it.key()];
      ++s.count;
      if (it.value().is_array()) {
        s.list = true;
        for (const auto& e : it.value()) scalar(s, e);
      } else {
        scalar(s, it.value());
      }
    }
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [name, s] : stats) {
    nlohmann::json f;
    f["name"] = name;
    std::string type = s.list ? (s.string && !s.number && !s.boolean && !s.object ? "list of strings" : "list")
                       : s.number + s.string + s.boolean + s.object > 1 ? "mixed"
                       : s.number ? "number" : s.string ? "string" : s.boolean ? "bool" : "object";
    f["type"] = type;
    f["count"] = s.count;
    if (s.have_range) {
      f["min"] = s.min;
      f["max"] = s.max;
    }
    if (!s.values.empty()) {
      std::vector<std::pair<std::string, int64_t>> v(s.values.begin(), s.values.end());
      std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
      nlohmann::json vals = nlohmann::json::array();
      for (size_t i = 0; i < v.size() && i < max_values; ++i) vals.push_back({{"value", v[i].first}, {"count", v[i].second}});
      f["values"] = vals;
      f["distinct"] = static_cast<int64_t>(v.size());
    }
    out.push_back(std::move(f));
  }
  return {{"fields", out}, {"paths", static_cast<int64_t>(rows.size())}};
}

}  // namespace clipkit::search
