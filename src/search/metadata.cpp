// Item metadata: validation, the in-memory view the filters read, and the field summary.
#include "search/metadata.h"

#include <algorithm>
#include <iterator>
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
  reindex();
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
    if (k != key_of.end()) {
      const auto old = rows.find(k->second);
      unindex_row(old->second);
      rows.erase(old);
    }
    f.reset();
    f.bind(1, p);
    if (!f.step()) continue;  // removed
    MetaRow r = read_row(db, f.i64(0), p, f.is_null(1), f.is_null(1) ? std::string() : f.text(1));
    t.reset();
    t.bind(1, p);
    while (t.step()) r.tags.push_back(t.text(0));
    const auto key = std::make_pair(r.item, r.path);
    if (rows.count(key)) continue;  // listed twice
    index_row(rows.emplace(key, std::move(r)).first->second);
  }
  tidy_index();
  generation = gen;
  return true;
}

bool MetaView::row_passes(const MetaRow& r, const WhereNode* where, const std::string& path_prefix, const std::vector<std::string>& tags) {
  if (!path_prefix.empty() && r.path.compare(0, path_prefix.size(), path_prefix) != 0) return false;
  for (const auto& tag : tags)
    if (!std::binary_search(r.tags.begin(), r.tags.end(), tag)) return false;
  return !where || where_matches(*where, r.meta);
}

std::optional<MetaRow> MetaView::read_path(Db& db, bool has_meta_table, const std::string& path) {
  Stmt f(db, has_meta_table ? "SELECT f.item_id, m.meta FROM files f LEFT JOIN path_meta m ON m.path = f.path WHERE f.path = ?1"
                            : "SELECT item_id, NULL FROM files WHERE path = ?1");
  f.bind(1, path);
  if (!f.step()) return std::nullopt;
  MetaRow r = read_row(db, f.i64(0), path, f.is_null(1), f.is_null(1) ? std::string() : f.text(1));
  Stmt t(db, "SELECT tag FROM tags WHERE path = ?1 ORDER BY tag");
  t.bind(1, path);
  while (t.step()) r.tags.push_back(t.text(0));
  return r;
}

std::unordered_map<int64_t, const std::string*> MetaView::passing(const WhereNode* where, const std::string& path_prefix,
                                                           const std::vector<std::string>& tags,
                                                           const std::unordered_set<std::string>* skip) const {
  std::unordered_map<int64_t, const std::string*> out;
  if (skip && skip->empty()) skip = nullptr;
  auto passes = [&](const MetaRow& r) {
    if (skip && skip->count(r.path)) return false;
    return row_passes(r, where, path_prefix, tags);
  };
  const std::optional<std::vector<uint32_t>> cand = where ? candidates(*where) : std::nullopt;
  if (cand) {
    // Only the rows the field index names; an item keeps its first passing path in path order.
    out.reserve(cand->size());
    for (uint32_t slot : *cand) {
      const MetaRow* r = slots_[slot];
      if (!r || !passes(*r)) continue;
      const auto [it, fresh] = out.emplace(r->item, &r->path);
      if (!fresh && r->path < *it->second) it->second = &r->path;
    }
    return out;
  }
  for (const auto& [key, r] : rows) {
    if (out.count(r.item)) continue;
    if (passes(r)) out.emplace(r.item, &r.path);
  }
  return out;
}

void MetaView::check_types(const WhereNode& where, const std::string& expression, const std::vector<const MetaRow*>* extra) const {
  std::unordered_map<std::string, unsigned> newer;
  if (extra)
    for (const MetaRow* r : *extra) collect_types(r->meta, "", newer, 0);
  for_each_comparison(where, [&](const WhereNode& n) {
    if (n.values.empty()) return;
    const auto it = types_.find(n.field_text);
    const auto nt = newer.find(n.field_text);
    unsigned held = nt != newer.end() ? nt->second : 0;
    if ((it == types_.end() || it->second.rows == 0) && held == 0) return;  // an unknown field matches nothing; not an error
    if (it != types_.end())
      for (int b = 0; b < 4; ++b)
        if (it->second.bits[b] > 0) held |= 1u << b;
    unsigned lit = 0;
    for (const auto& v : n.values) lit |= type_bit(v);
    if ((held & lit) == 0)
      throw Error(ErrorCode::InvalidArgument, "where: type mismatch: field '" + n.field_text + "' holds " + type_names(held) +
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
  // Tags, the most frequent first (then by name), with the number of paths carrying each.
  std::map<std::string, int64_t> tag_counts;
  for (const auto& [key, r] : rows)
    for (const std::string& t : r.tags) ++tag_counts[t];
  std::vector<std::pair<std::string, int64_t>> tv(tag_counts.begin(), tag_counts.end());
  std::stable_sort(tv.begin(), tv.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  nlohmann::json tags = nlohmann::json::array();
  for (size_t i = 0; i < tv.size() && i < max_values; ++i) tags.push_back({{"tag", tv[i].first}, {"count", tv[i].second}});
  return {{"fields", out},
          {"tags", tags},
          {"distinct_tags", static_cast<int64_t>(tv.size())},
          {"paths", static_cast<int64_t>(rows.size())}};
}

// ---- the field index ----

namespace {

constexpr size_t kIndexDepth = 8;         // field paths deeper than this are not indexed
constexpr size_t kUnsortedNumbers = 4096;  // appended numbers scanned one by one before a sort

void add_slot(std::vector<uint32_t>& v, uint32_t slot) {
  if (v.empty() || v.back() != slot) v.push_back(slot);
}

std::string field_key(const std::vector<std::string>& field) {
  std::string k;
  for (size_t i = 0; i < field.size(); ++i) k += (i ? "\x1f" : "") + field[i];
  return k;
}

std::vector<uint32_t> sorted_unique(std::vector<uint32_t> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

}  // namespace

void MetaView::index_fields(const nlohmann::json& obj, std::string& key, size_t depth, uint32_t slot) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const nlohmann::json& x = it.value();
    if (x.is_null()) continue;  // a null field is an absent one (filter.h)
    const size_t len = key.size();
    if (depth > 0) key += '\x1f';
    key += it.key();
    Postings& p = postings_[key];
    add_slot(p.present, slot);
    auto scalar = [&](const nlohmann::json& v) {
      if (v.is_number()) {
        p.numbers.emplace_back(v.get<double>(), slot);
      } else if (v.is_string()) {
        add_slot(p.strings[v.get_ref<const std::string&>()], slot);
      } else if (v.is_boolean()) {
        add_slot(v.get<bool>() ? p.trues : p.falses, slot);
      }
    };
    if (x.is_array()) {
      for (const auto& e : x) scalar(e);
    } else if (x.is_object()) {
      if (depth + 1 < kIndexDepth) index_fields(x, key, depth + 1, slot);
    } else {
      scalar(x);
    }
    key.resize(len);
  }
}

void MetaView::count_types(const nlohmann::json& meta, int sign) {
  std::unordered_map<std::string, unsigned> types;
  collect_types(meta, "", types, 0);
  for (const auto& [name, mask] : types) {
    TypeCount& c = types_[name];
    c.rows += sign;
    for (int b = 0; b < 4; ++b)
      if (mask & (1u << b)) c.bits[b] += sign;
  }
}

void MetaView::index_row(MetaRow& r) {
  r.slot = static_cast<uint32_t>(slots_.size());
  slots_.push_back(&r);
  std::string key;
  index_fields(r.meta, key, 0, r.slot);
  count_types(r.meta, +1);
}

void MetaView::unindex_row(const MetaRow& r) {
  // Its postings stay until the next renumbering; a removed slot is skipped.
  slots_[r.slot] = nullptr;
  ++removed_;
  count_types(r.meta, -1);
}

void MetaView::reindex() {
  postings_.clear();
  types_.clear();
  slots_.clear();
  removed_ = 0;
  slots_.reserve(rows.size());
  for (auto& [key, r] : rows) index_row(r);
  tidy_index();
}

void MetaView::tidy_index() {
  if (removed_ > kUnsortedNumbers && removed_ > slots_.size() / 4) {
    reindex();
    return;
  }
  for (auto& [key, p] : postings_)
    if (p.numbers.size() - p.numbers_sorted > kUnsortedNumbers || (p.numbers_sorted == 0 && !p.numbers.empty())) {
      std::sort(p.numbers.begin(), p.numbers.end());
      p.numbers_sorted = p.numbers.size();
    }
}

std::optional<std::vector<uint32_t>> MetaView::candidates(const WhereNode& n) const {
  using Op = WhereNode::Op;
  switch (n.op) {
    case Op::And: {
      std::optional<std::vector<uint32_t>> acc;
      for (const auto& k : n.kids) {
        auto c = candidates(*k);
        if (!c) continue;
        if (!acc) {
          acc = std::move(c);
        } else {
          std::vector<uint32_t> both;
          std::set_intersection(acc->begin(), acc->end(), c->begin(), c->end(), std::back_inserter(both));
          acc = std::move(both);
        }
        if (acc->empty()) break;
      }
      return acc;
    }
    case Op::Or: {
      std::vector<uint32_t> acc;
      for (const auto& k : n.kids) {
        auto c = candidates(*k);
        if (!c) return std::nullopt;
        std::vector<uint32_t> either;
        std::set_union(acc.begin(), acc.end(), c->begin(), c->end(), std::back_inserter(either));
        acc = std::move(either);
      }
      return acc;
    }
    case Op::Not:
    case Op::Ne: return std::nullopt;  // matches rows without a value: not narrowed
    default: break;
  }
  if (n.field.size() > kIndexDepth) return std::nullopt;
  const auto pit = postings_.find(field_key(n.field));
  if (pit == postings_.end()) return std::vector<uint32_t>();  // no row holds the field
  const Postings& p = pit->second;
  if (n.op == Op::Exists) return p.present;
  std::vector<uint32_t> out;
  const auto sorted_end = p.numbers.begin() + static_cast<std::ptrdiff_t>(p.numbers_sorted);
  auto numbers_where = [&](auto&& keep, auto first, auto last) {
    for (auto it = first; it != last; ++it) out.push_back(it->second);
    for (auto it = sorted_end; it != p.numbers.end(); ++it)
      if (keep(it->first)) out.push_back(it->second);
  };
  auto lower = [&](double y) {
    return std::lower_bound(p.numbers.begin(), sorted_end, y, [](const auto& e, double v) { return e.first < v; });
  };
  auto upper = [&](double y) {
    return std::upper_bound(p.numbers.begin(), sorted_end, y, [](double v, const auto& e) { return v < e.first; });
  };
  auto equal_to = [&](const nlohmann::json& lit) {
    if (lit.is_number()) {
      const double y = lit.get<double>();
      numbers_where([&](double x) { return x == y; }, lower(y), upper(y));
    } else if (lit.is_string()) {
      const auto s = p.strings.find(lit.get_ref<const std::string&>());
      if (s != p.strings.end()) out.insert(out.end(), s->second.begin(), s->second.end());
    } else if (lit.is_boolean()) {
      const auto& v = lit.get<bool>() ? p.trues : p.falses;
      out.insert(out.end(), v.begin(), v.end());
    }
  };
  if (n.op == Op::Eq || n.op == Op::In) {
    for (const auto& lit : n.values) equal_to(lit);
    return sorted_unique(std::move(out));
  }
  const nlohmann::json& lit = n.values.at(0);
  if (lit.is_number()) {
    const double y = lit.get<double>();
    switch (n.op) {
      case Op::Lt: numbers_where([&](double x) { return x < y; }, p.numbers.begin(), lower(y)); break;
      case Op::Le: numbers_where([&](double x) { return x <= y; }, p.numbers.begin(), upper(y)); break;
      case Op::Gt: numbers_where([&](double x) { return x > y; }, upper(y), sorted_end); break;
      default: numbers_where([&](double x) { return x >= y; }, lower(y), sorted_end); break;
    }
  } else if (lit.is_string()) {
    const std::string& y = lit.get_ref<const std::string&>();
    for (const auto& [x, slots] : p.strings) {
      const int c = x.compare(y);
      const bool keep = n.op == Op::Lt ? c < 0 : n.op == Op::Le ? c <= 0 : n.op == Op::Gt ? c > 0 : c >= 0;
      if (keep) out.insert(out.end(), slots.begin(), slots.end());
    }
  }  // other literals order against nothing
  return sorted_unique(std::move(out));
}

}  // namespace clipkit::search
