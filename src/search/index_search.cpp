// clipkit::Index search: nearest neighbours with tag and path filters, text/image queries, near-duplicate groups.
#include "search/index_impl.h"

#include <deque>

namespace clipkit {

std::vector<std::pair<float, int64_t>> Index::Impl::ranked(const float* q, int64_t want, const Allowed* allowed,
                                                           const std::unordered_set<int64_t>& excluded, int ef_search, int nprobe,
                                                           int64_t exact_scan_max, bool rerank) {
  return with_delta(q, want, allowed, excluded,
                    ranked_structure(q, want, allowed, excluded, ef_search, nprobe, exact_scan_max, rerank));
}

std::vector<std::pair<float, int64_t>> Index::Impl::with_delta(const float* q, int64_t want, const Allowed* allowed,
                                                               const std::unordered_set<int64_t>& excluded,
                                                               std::vector<std::pair<float, int64_t>> cand) {
  // The vectors added since the structure was last merged, scored exactly (an exact scan of the
  // passing items may have scored them already: those stay once).
  const Delta& d = *cur().delta;
  if (d.size() == 0 || want <= 0) return cand;
  std::unordered_set<int64_t> have;
  for (const auto& c : cand) have.insert(c.second);
  d.for_blocks([&](int64_t n, const float* rows, const int64_t* ids) {
    for (int64_t i = 0; i < n; ++i)
      if (!have.count(ids[i]) && !excluded.count(ids[i]) && (!allowed || allowed->count(ids[i])))
        cand.emplace_back(dot(q, rows + i * dim, dim), ids[i]);
  });
  auto better = [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; };
  std::stable_sort(cand.begin(), cand.end(), better);
  if (static_cast<int64_t>(cand.size()) > want) cand.resize(static_cast<size_t>(want));
  return cand;
}

std::vector<std::pair<float, int64_t>> Index::Impl::ranked_structure(const float* q, int64_t want, const Allowed* allowed,
                                                                     const std::unordered_set<int64_t>& excluded, int ef_search,
                                                                     int nprobe, int64_t exact_scan_max, bool rerank) {
  std::vector<std::pair<float, int64_t>> cand;
  const int64_t ntotal = fidx->ntotal;
  if (ntotal == 0 || want <= 0) return cand;
  auto better = [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; };
  const bool exact = factory == "Flat";
  if (allowed && (exact || static_cast<int64_t>(allowed->size()) <= exact_scan_max)) {
    // Exact scan of the passing items, read where they are stored (no copy). Single-precision
    // products are within eps of the exact ones; only the items that can reach the best `want`
    // by them are scored again exactly, which gives the result of scoring all of them exactly.
    std::vector<float> buf;
    std::deque<std::vector<float>> fetched;  // vectors read from the catalog (stable addresses)
    std::vector<const float*> rows;
    std::vector<int64_t> all_ids;
    rows.reserve(allowed->size());
    all_ids.reserve(allowed->size());
    for (const auto& [id, path] : *allowed) {
      if (excluded.count(id)) continue;
      const float* v = exact_vector(id, buf);
      if (!v) continue;
      if (v == buf.data()) {
        fetched.push_back(buf);
        v = fetched.back().data();
      }
      rows.push_back(v);
      all_ids.push_back(id);
    }
    std::vector<float> approx(rows.size());
    search::score_rows(q, rows.data(), static_cast<int64_t>(rows.size()), dim, approx.data());
    const double unit = std::ldexp(1.0, -24);
    const float eps = static_cast<float>(2 * dim * unit / (1 - dim * unit) + 1e-6);
    float floor = -std::numeric_limits<float>::infinity();
    if (static_cast<int64_t>(approx.size()) > want) {
      std::vector<float> top(approx);
      std::nth_element(top.begin(), top.begin() + (want - 1), top.end(), std::greater<float>());
      floor = top[static_cast<size_t>(want - 1)] - 2 * eps;
    }
    for (size_t i = 0; i < approx.size(); ++i)
      if (approx[i] >= floor) cand.emplace_back(dot(q, rows[i], dim), all_ids[i]);
    const size_t n = std::min<size_t>(cand.size(), static_cast<size_t>(want));
    std::partial_sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(n), cand.end(), better);
    cand.resize(n);
    return cand;
  }
  int64_t fetch = want + static_cast<int64_t>(excluded.size() + tombstones.size());
  // A large passing set on a structure that takes faiss's ID selector (IVF): the structure scans
  // only the passing vectors, and a search that still finds too few probes more lists.
  std::optional<faiss::IDSelectorBatch> selector;
  if (allowed && search::takes_selector(*fidx)) {
    std::vector<faiss::Index::idx_t> stored;
    stored.reserve(allowed->size());
    const bool by_position = !fidx->id_map.empty();
    for (const auto& a : *allowed) {
      if (!by_position) {
        stored.push_back(a.first);
      } else if (const auto it = fidx->rev_map.find(a.first); it != fidx->rev_map.end()) {
        stored.push_back(it->second);
      }
    }
    selector.emplace(stored.size(), stored.data());
  } else if (allowed) {
    fetch = std::max<int64_t>(fetch * 4, 64);
  }
  if (!exact && rerank) fetch = std::max<int64_t>(fetch, 4 * want);  // re-ranked exactly below
  const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(fidx->index);
  int probe = nprobe;
  for (;;) {
    const int64_t kk = std::min(fetch, ntotal);
    std::vector<float> dist(static_cast<size_t>(kk));
    std::vector<faiss::Index::idx_t> lab(static_cast<size_t>(kk));
    const auto* flat = exact ? dynamic_cast<const faiss::IndexFlat*>(fidx->index) : nullptr;
    if (flat && flat->metric_type == faiss::METRIC_INNER_PRODUCT && flat->ntotal == ntotal &&
        static_cast<int64_t>(fidx->id_map.size()) == ntotal) {
      // Exact: clipkit's own scan (search/flat_scan.h), several times faster than faiss's
      // one-query path on a portable faiss build.
      std::vector<int64_t> pos(static_cast<size_t>(kk));
      const int64_t got = search::flat_top_k(flat->get_xb(), ntotal, dim, q, kk, dist.data(), pos.data());
      for (int64_t i = 0; i < kk; ++i)
        lab[static_cast<size_t>(i)] = i < got ? fidx->id_map[static_cast<size_t>(pos[static_cast<size_t>(i)])] : -1;
    } else {
      try {
        search::search_one(*fidx, q, kk, ef_search, probe, selector ? &*selector : nullptr, dist.data(), lab.data());
      } catch (const faiss::FaissException& e) {
        throw Error(ErrorCode::Internal, "faiss search failed: " + first_line(e.what()));
      }
    }
    cand.clear();
    int64_t returned = 0;
    std::vector<float> buf;
    for (int64_t i = 0; i < kk; ++i) {
      const int64_t id = lab[static_cast<size_t>(i)];
      if (id < 0) continue;
      ++returned;
      if (excluded.count(id) || tombstones.count(id) || (allowed && !allowed->count(id))) continue;
      float sc = dist[static_cast<size_t>(i)];
      if (!exact && rerank) {
        const float* v = exact_vector(id, buf);
        if (!v) continue;
        sc = dot(q, v, dim);
      }
      cand.emplace_back(sc, id);
    }
    std::stable_sort(cand.begin(), cand.end(), better);
    if (selector && ivf) {
      // Every passing vector in the probed lists was seen: too few means probing more lists.
      const int64_t lists = static_cast<int64_t>(ivf->nlist);
      const int64_t probed = probe > 0 ? probe : std::max<int64_t>(8, lists / 16);
      if (static_cast<int64_t>(cand.size()) >= want) break;
      if (returned < kk) {
        if (probed >= lists) break;
        probe = static_cast<int>(std::min<int64_t>(lists, probed * 4));
      } else {
        if (kk >= ntotal) break;
        fetch *= 4;
      }
      continue;
    }
    const bool exhausted = kk >= ntotal || returned < kk;
    if (static_cast<int64_t>(cand.size()) >= want || exhausted) break;
    fetch *= 4;
  }
  if (static_cast<int64_t>(cand.size()) > want) cand.resize(static_cast<size_t>(want));
  return cand;
}

std::optional<Index::Impl::Allowed> Index::Impl::allowed_for(const SearchOptions& o) {
  std::string prefix = o.filter.path_prefix;
  if (!prefix.empty()) {
    const bool dir_prefix = prefix.back() == '/';
    prefix = normalize_path(prefix);
    if (dir_prefix && prefix != "/") prefix += '/';
  }
  std::unique_ptr<search::WhereNode> where;
  if (!o.where.empty()) where = search::parse_where(o.where);
  if (prefix.empty() && o.filter.tags.empty() && !where) return std::nullopt;
  const Snapshot& s = viewed();
  // The base view without the rows changed since it was built, and those rows as they are now.
  std::vector<const search::MetaRow*> newer;
  for (const auto& [path, row] : s.overlay->rows)
    if (row) newer.push_back(row.get());
  if (where) s.view->check_types(*where, o.where, &newer);
  Allowed out = s.view->passing(where.get(), prefix, o.filter.tags, &s.overlay->paths);
  for (const search::MetaRow* r : newer) {
    if (!search::MetaView::row_passes(*r, where.get(), prefix, o.filter.tags)) continue;
    const auto [it, fresh] = out.emplace(r->item, &r->path);
    if (!fresh && r->path < *it->second) it->second = &r->path;
  }
  return out;
}

namespace {

// One read transaction around a query's catalog lookups (when none is open): each statement would
// otherwise take and release the catalog's shared lock on its own.
class ReadScope {
 public:
  explicit ReadScope(Db& db) : db_(db), open_(sqlite3_get_autocommit(db.handle()) != 0) {
    if (open_) db_.exec("BEGIN");
  }
  ~ReadScope() {
    if (open_) sqlite3_exec(db_.handle(), "COMMIT", nullptr, nullptr, nullptr);
  }
  ReadScope(const ReadScope&) = delete;
  ReadScope& operator=(const ReadScope&) = delete;

 private:
  Db& db_;
  bool open_;
};

}  // namespace

std::vector<SearchHit> Index::Impl::make_hits(const std::vector<std::pair<float, int64_t>>& cand, const Allowed* allowed, int k,
                                              float min_score) {
  ReadScope read(db);
  std::vector<SearchHit> hits;
  for (const auto& [sc, id] : cand) {
    if (sc < min_score) break;
    CatalogItem it;
    if (!get_item(id, &it)) continue;
    SearchHit h;
    h.score = sc;
    if (allowed) {
      const auto a = allowed->find(id);
      h.path = a != allowed->end() ? *a->second : std::string();
    } else {
      h.path = it.paths.empty() ? std::string() : it.paths.front();
    }
    if (h.path.empty()) {
      h.meta = "{}";
    } else if (const search::MetaRow* r = allowed ? meta_row(cur(), id, h.path) : nullptr) {
      h.meta = r->meta.dump();  // the metadata the filter judged, even if a writer changed it since
    } else {
      h.meta = path_meta(h.path);
    }
    h.item = std::move(it);
    h.rank = static_cast<int>(hits.size() + 1);
    hits.push_back(std::move(h));
    if (static_cast<int>(hits.size()) >= k) break;
  }
  return hits;
}

std::vector<SearchHit> Index::search_vector(const std::vector<float>& query, const SearchOptions& options) {
  Impl& m = *impl_;
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Read);
  if (static_cast<int>(query.size()) != m.dim)
    throw Error(ErrorCode::Shape, "query vector has " + std::to_string(query.size()) + " values, index dim is " + std::to_string(m.dim));
  if (options.k <= 0) throw Error(ErrorCode::InvalidArgument, "k must be positive, got " + std::to_string(options.k));
  for (float x : query)
    if (!std::isfinite(x)) throw Error(ErrorCode::InvalidArgument, "query vector holds a value that is not finite");
  std::vector<float> q = query;
  normalize_vec(q.data(), m.dim);
  const std::optional<Impl::Allowed> allowed = m.allowed_for(options);
  const std::unordered_set<int64_t> excluded(options.exclude_ids.begin(), options.exclude_ids.end());
  const auto cand = m.ranked(q.data(), options.k, allowed ? &*allowed : nullptr, excluded, options.ef_search, options.nprobe,
                               options.exact_scan_max, options.rerank);
  return m.make_hits(cand, allowed ? &*allowed : nullptr, options.k, options.min_score);
}

std::vector<SearchHit> Index::search(const Query& query, const Model* model, const SearchOptions& options) {
  const Impl::CallLock lock(*impl_, Impl::CallLock::Kind::Read);
  SearchOptions o = options;
  if (query.exclude_items) {
    for (const auto& t : query.terms) {
      if (t.kind != QueryTerm::Kind::Item) continue;
      CatalogItem it;
      // resolved again in embed_query; cheap
      std::string v = t.value;
      if (!v.empty() && v[0] == '#') v = v.substr(1);
      bool found = find_path(t.value, &it);
      if (!found && !v.empty() && v.size() < 19 &&
          std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); }))
        found = find_id(std::stoll(v), &it);
      if (found) o.exclude_ids.push_back(it.id);
    }
  }
  return search_vector(embed_query(query, model), o);
}

std::vector<DedupGroup> Index::dedup(float threshold) {
  Impl& m = *impl_;
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Read);
  if (!(threshold > -1.0f && threshold <= 1.0f))
    throw Error(ErrorCode::InvalidArgument, "dedup threshold must be in (-1, 1], got " + std::to_string(threshold));
  faiss::IndexFlatIP flat(m.dim);
  std::vector<int64_t> ids;
  m.for_vectors("", 0, [&](int64_t n, const float* v, const faiss::Index::idx_t* id) {
    flat.add(n, v);
    ids.insert(ids.end(), id, id + n);
  });
  const int64_t n = static_cast<int64_t>(ids.size());
  std::vector<int64_t> parent(static_cast<size_t>(n));
  std::iota(parent.begin(), parent.end(), 0);
  std::function<int64_t(int64_t)> find = [&](int64_t x) {
    while (parent[static_cast<size_t>(x)] != x) x = parent[static_cast<size_t>(x)] = parent[static_cast<size_t>(parent[static_cast<size_t>(x)])];
    return x;
  };
  if (n > 0) {
    // Range search in blocks: IP > radius; nudge the radius so that score == threshold counts.
    const float radius = std::nextafter(threshold, -2.0f);
    const int64_t block = 1024;
    std::vector<float> q;
    for (int64_t b = 0; b < n; b += block) {
      const int64_t e = std::min(n, b + block);
      faiss::RangeSearchResult res(e - b);
      flat.range_search(e - b, flat.get_xb() + b * m.dim, radius, &res);
      for (int64_t i = 0; i < e - b; ++i)
        for (size_t j = res.lims[i]; j < res.lims[i + 1]; ++j) {
          const int64_t a = b + i, c = res.labels[j];
          if (c == a || res.distances[j] < threshold) continue;
          const int64_t ra = find(a), rc = find(c);
          if (ra != rc) parent[static_cast<size_t>(std::max(ra, rc))] = std::min(ra, rc);
        }
    }
  }
  std::map<int64_t, std::vector<int64_t>> comps;
  for (int64_t i = 0; i < n; ++i) comps[find(i)].push_back(i);
  std::vector<DedupGroup> out;
  for (auto& [root, members] : comps) {
    CatalogItem first;
    m.get_item(ids[static_cast<size_t>(members.front())], &first);
    if (members.size() < 2 && first.paths.size() < 2) continue;
    DedupGroup g;
    const float* rv = flat.get_xb() + members.front() * m.dim;
    for (int64_t idx : members) {
      CatalogItem it;
      m.get_item(ids[static_cast<size_t>(idx)], &it);
      g.ids.push_back(it.id);
      g.scores.push_back(idx == members.front() ? 1.0f : dot(rv, flat.get_xb() + idx * m.dim, m.dim));
      g.paths.push_back(it.paths);
    }
    out.push_back(std::move(g));
  }
  return out;
}


}  // namespace clipkit
