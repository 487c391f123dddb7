// clipkit::Index metadata: per-path JSON objects in the catalog (table path_meta), read with hits
// and by filters, written in one transaction per call.
#include "search/index_impl.h"

namespace clipkit {

namespace {

// Applies `entries` (path -> new object, or nullopt to delete) in one committed generation.
template <class M>
int64_t write_meta(M& m, const std::vector<std::pair<std::string, std::optional<std::string>>>& entries) {
  if (entries.empty()) return 0;
  const int64_t gen = m.generation() + 1;
  Transaction tx(m.db);
  Stmt up(m.db, "INSERT INTO path_meta(path, meta) VALUES(?1, ?2) ON CONFLICT(path) DO UPDATE SET meta = excluded.meta");
  Stmt del(m.db, "DELETE FROM path_meta WHERE path = ?1");
  for (const auto& [path, value] : entries) {
    m.log_change(path, gen);
    if (value) {
      up.reset();
      up.bind(1, path).bind(2, *value).run();
    } else {
      del.reset();
      del.bind(1, path).run();
    }
  }
  m.set_meta("generation", std::to_string(gen));
  tx.commit();
  // Metadata does not touch faiss: the structure stays valid for the new generation.
  m.stage({}, {}, {}, gen);
  return static_cast<int64_t>(entries.size());
}

template <class M>
std::string indexed_path(M& m, const std::string& path) {
  const std::string np = normalize_path(path);
  Stmt s(m.db, "SELECT 1 FROM files WHERE path = ?1");
  s.bind(1, np);
  if (!s.step()) throw Error(ErrorCode::NotFound, "'" + path + "' is not an indexed path of " + m.dir);
  return np;
}

template <class M>
nlohmann::json current(M& m, const std::string& np) { return nlohmann::json::parse(m.path_meta(np)); }

}  // namespace

std::string Index::metadata(const std::string& path) const {
  Impl& m = *impl_;
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Read);
  return m.path_meta(indexed_path(m, path));
}

int64_t Index::set_metadata(const std::vector<std::pair<std::string, std::string>>& entries, bool merge) {
  Impl& m = *impl_;
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Write);
  Impl::WriteScope write(m);
  std::vector<std::pair<std::string, std::optional<std::string>>> out;
  for (const auto& [path, text] : entries) {
    const std::string np = indexed_path(m, path);
    nlohmann::json patch = search::parse_meta_object(text, "metadata of " + path);
    nlohmann::json value = patch;
    if (merge) {
      value = current(m, np);
      value.merge_patch(patch);
      search::check_meta_object(value, "metadata of " + path);
    } else {
      // null fields mean "absent" in a replacement too
      for (auto it = value.begin(); it != value.end();) it = it.value().is_null() ? value.erase(it) : std::next(it);
    }
    out.emplace_back(np, value.empty() ? std::nullopt : std::optional<std::string>(value.dump()));
  }
  return write_meta(m, out);
}

int64_t Index::set_item_metadata(int64_t id, const std::string& json_object, bool merge) {
  Impl& m = *impl_;
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Write);
  CatalogItem it;
  {
    Impl::WriteScope write(m);
    if (!m.get_item(id, &it)) throw Error(ErrorCode::NotFound, "no indexed item with id " + std::to_string(id) + " in " + m.dir);
  }
  std::vector<std::pair<std::string, std::string>> entries;
  for (const auto& p : it.paths) entries.emplace_back(p, json_object);
  return set_metadata(entries, merge);
}

int64_t Index::unset_metadata(const std::vector<std::string>& paths, const std::vector<std::string>& fields) {
  Impl& m = *impl_;
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Write);
  Impl::WriteScope write(m);
  std::vector<std::pair<std::string, std::optional<std::string>>> out;
  for (const auto& path : paths) {
    const std::string np = indexed_path(m, path);
    if (fields.empty()) {
      out.emplace_back(np, std::nullopt);
      continue;
    }
    nlohmann::json value = current(m, np);
    for (const auto& f : fields) value.erase(f);
    out.emplace_back(np, value.empty() ? std::nullopt : std::optional<std::string>(value.dump()));
  }
  return write_meta(m, out);
}

std::string Index::fields_summary() const {
  Impl& m = *impl_;
  {
    const Impl::CallLock lock(m, Impl::CallLock::Kind::Read);
    const index_internal::Snapshot& s = m.viewed();
    if (s.overlay->rows.empty()) return s.view->fields().dump();
  }
  // Rows changed since the view was built: merged into it first (with the reads paused).
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Exclusive);
  m.merge_pending();
  const index_internal::Snapshot& s = m.viewed();
  if (!s.overlay->rows.empty()) throw Error(ErrorCode::Internal, "the metadata view of index " + m.dir + " could not be brought up to date");
  return s.view->fields().dump();
}

std::string where_from_json(const std::string& json_text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception&) {
    throw Error(ErrorCode::InvalidArgument, "where: the JSON filter is not valid JSON");
  }
  return search::where_json_to_string(j);
}

}  // namespace clipkit
