// clipkit::Index::recommend: items ranked from positive and negative examples (strategies
// "average" and "best-score", optional maximal marginal relevance). Formulas in docs/search.md.
#include "search/index_impl.h"
#include "kernels/gemm.h"

namespace clipkit {

namespace {

float logistic(float x) { return static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(x)))); }

}  // namespace

RecommendOptions::Strategy parse_strategy(const std::string& name) {
  if (name == "average") return RecommendOptions::Strategy::Average;
  if (name == "best-score") return RecommendOptions::Strategy::BestScore;
  throw Error(ErrorCode::InvalidArgument, "unknown strategy '" + name + "' (average or best-score)");
}

std::vector<SearchHit> Index::recommend(const RecommendOptions& o, const Model* model) {
  Impl& m = *impl_;
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Read);
  const int dim = m.dim;
  const int k = o.search.k;
  if (k <= 0) throw Error(ErrorCode::InvalidArgument, "k must be positive, got " + std::to_string(k));
  if (o.positive.empty() && o.negative.empty()) throw Error(ErrorCode::InvalidArgument, "give at least one positive or negative example");
  if (!(o.diversity >= 0 && o.diversity <= 1))
    throw Error(ErrorCode::InvalidArgument, "diversity must be in [0, 1], got " + std::to_string(o.diversity));
  if (!(o.duplicate_threshold > -1 && o.duplicate_threshold <= 1))
    throw Error(ErrorCode::InvalidArgument, "duplicate threshold must be in (-1, 1]");

  // Examples as unit vectors; indexed items are excluded from the results.
  std::unordered_set<int64_t> excluded(o.search.exclude_ids.begin(), o.search.exclude_ids.end());
  auto embed = [&](const QueryTerm& t) {
    if (t.kind == QueryTerm::Kind::Item) {
      CatalogItem it;
      std::string v = t.value;
      if (!v.empty() && v[0] == '#') v = v.substr(1);
      bool found = find_path(t.value, &it);
      if (!found && !v.empty() && v.size() < 19 && std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); }))
        found = find_id(std::stoll(v), &it);
      if (!found) throw Error(ErrorCode::NotFound, "'" + t.value + "' is neither an indexed path nor an item id of " + m.dir);
      excluded.insert(it.id);
    }
    Query q;
    QueryTerm u = t;
    u.weight = 1.0f;
    q.terms.push_back(std::move(u));
    return embed_query(q, model);
  };
  std::vector<std::vector<float>> pos, neg, examples;
  for (const auto& t : o.positive) pos.push_back(embed(t));
  for (const auto& t : o.negative) neg.push_back(embed(t));
  examples = pos;
  examples.insert(examples.end(), neg.begin(), neg.end());
  auto near_duplicate = [&](const float* v) {
    for (const auto& e : examples)
      if (dot(v, e.data(), dim) >= o.duplicate_threshold) return true;
    return false;
  };

  const std::optional<Impl::Allowed> allowed = m.allowed_for(o.search);
  const Impl::Allowed* allow = allowed ? &*allowed : nullptr;
  // How many ranked candidates the selection needs (more when diversifying).
  const int64_t pool = o.diversity > 0 ? std::max<int64_t>(4LL * k, 50) : k;
  const float min_score = o.search.min_score;
  struct Cand {
    float score;
    int64_t id;
  };
  std::vector<Cand> cands;
  std::vector<float> buf;

  if (o.strategy == RecommendOptions::Strategy::Average) {
    // q = 2·mean(pos) − mean(neg); mean(pos) alone, or −mean(neg) alone.
    std::vector<double> q(static_cast<size_t>(dim), 0.0);
    const double wp = neg.empty() ? 1.0 : 2.0;
    for (const auto& p : pos)
      for (int i = 0; i < dim; ++i) q[static_cast<size_t>(i)] += wp * p[static_cast<size_t>(i)] / static_cast<double>(pos.size());
    for (const auto& n : neg)
      for (int i = 0; i < dim; ++i) q[static_cast<size_t>(i)] -= n[static_cast<size_t>(i)] / static_cast<double>(neg.size());
    double n2 = 0;
    for (double x : q) n2 += x * x;
    const double norm = std::sqrt(n2);
    if (!(norm > 1e-6)) throw Error(ErrorCode::InvalidArgument, "the examples cancel out (the average query is a zero vector)");
    std::vector<float> qn(static_cast<size_t>(dim));
    for (int i = 0; i < dim; ++i) qn[static_cast<size_t>(i)] = static_cast<float>(q[static_cast<size_t>(i)] / norm);
    // Widen until enough candidates survive the near-duplicate rule.
    for (int64_t want = pool + static_cast<int64_t>(examples.size());; want *= 4) {
      const auto r = m.ranked(qn.data(), want, allow, excluded, o.search.ef_search, o.search.nprobe, o.search.exact_scan_max);
      cands.clear();
      for (const auto& [cos, id] : r) {
        const float* v = m.exact_vector(id, buf);
        if (!v || near_duplicate(v)) continue;
        cands.push_back({static_cast<float>(cos * norm), id});
      }
      if (static_cast<int64_t>(cands.size()) >= pool || static_cast<int64_t>(r.size()) < want) break;
    }
  } else {
    auto score = [&](const float* v, float* max_pos) {
      float mp = -std::numeric_limits<float>::infinity(), mn = mp;
      for (const auto& p : pos) mp = std::max(mp, dot(v, p.data(), dim));
      for (const auto& n : neg) mn = std::max(mn, dot(v, n.data(), dim));
      *max_pos = mp;
      return mp > mn ? logistic(mp) : -logistic(mn);
    };
    auto better = [](const Cand& a, const Cand& b) { return a.score != b.score ? a.score > b.score : a.id < b.id; };
    auto consider = [&](int64_t id, const float* v) {
      if (excluded.count(id) || near_duplicate(v)) return;
      float mp;
      cands.push_back({score(v, &mp), id});
    };
    const int64_t ntotal = m.fidx->ntotal;
    const bool exact_kind = m.factory == "Flat";
    bool done = false;
    if (!pos.empty() && !exact_kind && !(allow && static_cast<int64_t>(allow->size()) <= o.search.exact_scan_max) && ntotal > o.search.exact_scan_max) {
      // Threshold search: every item whose best positive cosine exceeds T (the largest cosine a
      // positive's list was cut at) is in the union of the lists, and outranks every item
      // outside them as soon as its score is positive.
      for (int64_t depth = pool * 4 + static_cast<int64_t>(examples.size()); depth < ntotal / 2; depth *= 4) {
        float t = -std::numeric_limits<float>::infinity();
        std::unordered_set<int64_t> seen;
        cands.clear();
        for (const auto& p : pos) {
          const auto r = m.ranked(p.data(), depth, allow, excluded, o.search.ef_search, o.search.nprobe, o.search.exact_scan_max);
          if (static_cast<int64_t>(r.size()) == depth) t = std::max(t, r.back().first);
          for (const auto& [cos, id] : r)
            if (seen.insert(id).second) {
              const float* v = m.exact_vector(id, buf);
              if (v) consider(id, v);
            }
        }
        std::vector<Cand> sure;
        for (const auto& c : cands) {
          float mp;
          const float* v = m.exact_vector(c.id, buf);
          if (c.score > 0 && v && (score(v, &mp), mp > t)) sure.push_back(c);
        }
        if (static_cast<int64_t>(sure.size()) >= pool) {
          cands = std::move(sure);
          done = true;
          break;
        }
      }
    }
    if (!done) {
      // Exact scan of every (passing) item. One GEMM per block of items gives every example
      // cosine in single precision; from those, bounds on each item's exact score (the cosines
      // are within `eps` of the exact ones). Only the items whose upper bound reaches the pool's
      // worst lower bound among surely eligible items can be in the pool: they are scored again
      // exactly, as above, so the result is that of scoring every item exactly.
      cands.clear();
      const int64_t ne = static_cast<int64_t>(examples.size()), np = static_cast<int64_t>(pos.size());
      std::vector<float> ex(static_cast<size_t>(ne * dim));
      for (int64_t e = 0; e < ne; ++e) std::copy(examples[static_cast<size_t>(e)].begin(), examples[static_cast<size_t>(e)].end(), ex.begin() + e * dim);
      const double unit = std::ldexp(1.0, -24);
      const float eps = static_cast<float>(2 * dim * unit / (1 - dim * unit) + 1e-6);
      const float inf = std::numeric_limits<float>::infinity();
      auto bound = [&](float mp, float mn) { return mp > mn ? logistic(mp) : -logistic(mn); };
      struct Approx {
        float lower, upper;
        int64_t id;
      };
      std::vector<Approx> approx;
      std::vector<float> sims;
      auto block = [&](int64_t n, const float* rows, const faiss::Index::idx_t* ids) {
        if (n <= 0) return;
        sims.resize(static_cast<size_t>(ne * n));
        sgemm(false, true, ne, n, dim, 1.0f, ex.data(), dim, rows, dim, 0.0f, sims.data(), n);
        for (int64_t i = 0; i < n; ++i) {
          if (excluded.count(ids[i]) || m.tombstones.count(ids[i])) continue;
          float mp = -inf, mn = -inf, most = -inf;
          for (int64_t e = 0; e < ne; ++e) {
            const float c = sims[static_cast<size_t>(e * n + i)];
            (e < np ? mp : mn) = std::max(e < np ? mp : mn, c);
            most = std::max(most, c);
          }
          const bool surely_kept = most < o.duplicate_threshold - eps;
          approx.push_back({surely_kept ? bound(mp - eps, mn + eps) : -inf, bound(mp + eps, mn - eps), ids[i]});
        }
      };
      const faiss::IndexFlat* store = dynamic_cast<const faiss::IndexFlat*>(m.fidx->index);
      if (!store)
        if (const auto* h = dynamic_cast<const faiss::IndexHNSW*>(m.fidx->index)) store = dynamic_cast<const faiss::IndexFlat*>(h->storage);
      const int64_t kBlock = 4096;
      if (allow) {
        std::vector<float> rows;
        std::vector<faiss::Index::idx_t> ids;
        auto flush = [&] {
          block(static_cast<int64_t>(ids.size()), rows.data(), ids.data());
          rows.clear();
          ids.clear();
        };
        for (const auto& [id, path] : *allow) {
          const float* v = m.exact_vector(id, buf);
          if (!v) continue;
          rows.insert(rows.end(), v, v + dim);
          ids.push_back(id);
          if (static_cast<int64_t>(ids.size()) == kBlock) flush();
        }
        flush();
      } else if (store && store->ntotal == m.fidx->ntotal && static_cast<int64_t>(m.fidx->id_map.size()) == store->ntotal) {
        for (int64_t b = 0; b < store->ntotal; b += kBlock)
          block(std::min(kBlock, store->ntotal - b), store->get_xb() + b * dim, m.fidx->id_map.data() + b);
        m.cur().delta->for_blocks(block);  // added since the structure was last merged
      } else {
        m.for_vectors("", 0, block, kBlock);
      }
      float floor = -inf;
      if (static_cast<int64_t>(approx.size()) >= pool) {
        std::vector<float> lows;
        lows.reserve(approx.size());
        for (const auto& a : approx) lows.push_back(a.lower);
        std::nth_element(lows.begin(), lows.begin() + (pool - 1), lows.end(), std::greater<float>());
        floor = lows[static_cast<size_t>(pool - 1)];
      }
      for (const auto& a : approx) {
        if (a.upper < floor) continue;
        const float* v = m.exact_vector(a.id, buf);
        if (v) consider(a.id, v);
      }
    }
    const size_t n = std::min<size_t>(cands.size(), static_cast<size_t>(pool));
    std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(n), cands.end(), better);
    cands.resize(n);
  }

  cands.erase(std::remove_if(cands.begin(), cands.end(), [&](const Cand& c) { return c.score < min_score; }), cands.end());
  std::vector<std::pair<float, int64_t>> order;
  if (o.diversity > 0) {
    // Maximal marginal relevance: repeatedly take argmax (1−λ)·score − λ·max cos(candidate, taken).
    const double lambda = o.diversity;
    std::vector<std::vector<float>> vecs;
    for (const auto& c : cands) {
      const float* v = m.exact_vector(c.id, buf);
      if (!v) throw Error(ErrorCode::Internal, "item " + std::to_string(c.id) + " lost its vector during the query");
      vecs.emplace_back(v, v + dim);
    }
    std::vector<float> max_sim(cands.size(), -std::numeric_limits<float>::infinity());
    std::vector<bool> taken(cands.size(), false);
    while (static_cast<int>(order.size()) < k && order.size() < cands.size()) {
      size_t best = cands.size();
      double best_v = -std::numeric_limits<double>::infinity();
      for (size_t i = 0; i < cands.size(); ++i) {
        if (taken[i]) continue;
        const double red = order.empty() ? 0.0 : max_sim[i];
        const double v = (1 - lambda) * cands[i].score - lambda * red;
        if (v > best_v) best_v = v, best = i;
      }
      taken[best] = true;
      order.emplace_back(cands[best].score, cands[best].id);
      for (size_t i = 0; i < cands.size(); ++i)
        if (!taken[i]) max_sim[i] = std::max(max_sim[i], dot(vecs[i].data(), vecs[best].data(), dim));
    }
  } else {
    for (const auto& c : cands) order.emplace_back(c.score, c.id);
  }
  return m.make_hits(order, allow, k, -std::numeric_limits<float>::infinity());
}

}  // namespace clipkit
