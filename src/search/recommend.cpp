// clipkit::Index::recommend: items ranked from positive and negative examples (strategies
// "average" and "best-score", optional maximal marginal relevance). Formulas in docs/search.md.
#include "search/index_impl.h"
#include "kernels/gemm.h"

#include <omp.h>

#include <queue>

namespace clipkit {

namespace {

float logistic(float x) { return static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(x)))); }

// The 8-bit copy of the flat store that holds every vector of `m` (Flat, HNSW), or null when there
// is none or the CPU lacks the instructions that make it fast.
// `ondisk`: the vectors are in an on-disk build's file (no flat store); `version`: the catalog
// generation fidx reflects. Sets *xb to the store's rows (row i is the copy's row i).
std::shared_ptr<const search::QuantizedRows> quantized_store(const faiss::IndexIDMap2* fidx, bool ondisk, int64_t version,
                                                             int dim, search::QuantizedCache& cache, const float** xb) {
  if (!search::quantized_scan_available() || ondisk || !fidx) return nullptr;
  const faiss::IndexFlat* store = dynamic_cast<const faiss::IndexFlat*>(fidx->index);
  if (!store)
    if (const auto* h = dynamic_cast<const faiss::IndexHNSW*>(fidx->index)) store = dynamic_cast<const faiss::IndexFlat*>(h->storage);
  if (!store || store->metric_type != faiss::METRIC_INNER_PRODUCT || store->ntotal != fidx->ntotal ||
      static_cast<int64_t>(fidx->id_map.size()) != store->ntotal)
    return nullptr;
  static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t), "faiss ids are 64-bit");
  *xb = store->get_xb();
  return cache.get(fidx, version, store->get_xb(), store->ntotal, dim, reinterpret_cast<const int64_t*>(fidx->id_map.data()));
}

// A row of the 8-bit scan: bounds on its score (lower −∞ when it may be a near-duplicate).
struct Bounded {
  float lower, upper;
  int64_t row;
};

// Scans every row of `qr` with the queries qs (the first `primary` of them for every block, the
// others only for the blocks that `block_upper` cannot rule out) and returns the rows whose upper
// bound reaches the `pool`-th best lower bound among the rows `eligible` accepts. Each thread
// keeps its own best lower bounds, so the floor it prunes with never exceeds the final one: every
// row that can be among the best `pool` is returned.
//   upper_of_max(most): when not null, a non-decreasing function that bounds the score of every
//     row of a block whose primary upper bounds are all at most `most`; the blocks are then
//     ruled out from QuantizedRows::max_upper alone (no intervals stored, and the function is
//     called only for a `most` above every one ruled out so far), and block_upper is not used;
//   block_upper(lo, hi, rows): otherwise, an upper bound on the score of the block's first `rows`
//     rows from the primary queries' intervals (lo[j·16 + r], hi[j·16 + r]);
//   row_bounds(lo, hi, r): {lower, upper} of row r from all queries' intervals.
template <class UpperOfMax, class BlockUpper, class RowBounds, class Eligible>
std::vector<Bounded> scan_quantized(const search::QuantizedRows& qr, const std::vector<const search::QuantizedRows::Query*>& qs,
                                    int primary, float slack, int64_t pool, const UpperOfMax* upper_of_max,
                                    BlockUpper block_upper, RowBounds row_bounds, Eligible eligible) {
  const int64_t blocks = qr.blocks(), n = qr.size();
  const int nq = static_cast<int>(qs.size());
  const int threads = std::max(1, omp_get_max_threads());
  std::vector<std::vector<Bounded>> found(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
  {
    std::vector<Bounded>& out = found[static_cast<size_t>(omp_get_thread_num())];
    std::vector<float> lo(static_cast<size_t>(nq) * 16), hi(lo.size());
    std::priority_queue<float, std::vector<float>, std::greater<float>> best;  // the best lower bounds, worst on top
    float floor = -std::numeric_limits<float>::infinity();
    // The largest `most` ruled out so far: any below it is too (the floor only rises).
    float ruled = -std::numeric_limits<float>::infinity();
#pragma omp for schedule(dynamic, 64)
    for (int64_t b = 0; b < blocks; ++b) {
      const int rows = static_cast<int>(std::min<int64_t>(16, n - b * 16));
      if (upper_of_max) {
        const float most = qr.max_upper(b, qs.data(), primary, slack);
        if (most <= ruled) continue;
        if ((*upper_of_max)(most) < floor) {
          ruled = most;
          continue;
        }
        qr.bounds(b, qs.data(), primary, slack, lo.data(), hi.data());
      } else {
        qr.bounds(b, qs.data(), primary, slack, lo.data(), hi.data());
        if (block_upper(lo.data(), hi.data(), rows) < floor) continue;
      }
      if (nq > primary) qr.bounds(b, qs.data() + primary, nq - primary, slack, lo.data() + 16 * primary, hi.data() + 16 * primary);
      for (int r = 0; r < rows; ++r) {
        const auto [low, up] = row_bounds(lo.data(), hi.data(), r);
        if (up < floor || up == -std::numeric_limits<float>::infinity()) continue;
        out.push_back({low, up, b * 16 + r});
        if (low > floor && eligible(b * 16 + r)) {
          best.push(low);
          if (static_cast<int64_t>(best.size()) > pool) best.pop();
          if (static_cast<int64_t>(best.size()) == pool) floor = best.top();
        }
      }
    }
  }
  std::vector<Bounded> all;
  for (auto& f : found) all.insert(all.end(), f.begin(), f.end());
  std::vector<float> lows;
  for (const auto& a : all)
    if (a.lower > -std::numeric_limits<float>::infinity() && eligible(a.row)) lows.push_back(a.lower);
  float floor = -std::numeric_limits<float>::infinity();
  if (static_cast<int64_t>(lows.size()) >= pool) {
    std::nth_element(lows.begin(), lows.begin() + (pool - 1), lows.end(), std::greater<float>());
    floor = lows[static_cast<size_t>(pool - 1)];
  }
  all.erase(std::remove_if(all.begin(), all.end(), [&](const Bounded& a) { return a.upper < floor; }), all.end());
  return all;
}

// The same selection again from single-precision products of the queries qf (nq × dim) and the
// rows found (search::score_rows_multi, read in place), whose error is at most `eps`: the bounds are
// much tighter than the 8-bit ones, so few rows are left to score exactly. `row_ptr(row)` must
// point at memory that stays put (the flat store's rows).
template <class RowBounds, class Eligible, class RowPtr>
std::vector<Bounded> refine_f32(const std::vector<Bounded>& found, const std::vector<float>& qf, int dim, float eps, int64_t pool,
                                RowBounds row_bounds, Eligible eligible, RowPtr row_ptr) {
  const int64_t n = static_cast<int64_t>(found.size()), nq = static_cast<int64_t>(qf.size()) / dim;
  const float inf = std::numeric_limits<float>::infinity();
  // Bounds from single-precision products for the rows `in`, and the pool-th best lower bound
  // among the eligible ones (−∞ when fewer).
  auto rebound = [&](const std::vector<Bounded>& in, std::vector<Bounded>& out) {
    const int64_t m = static_cast<int64_t>(in.size());
    std::vector<const float*> rows(static_cast<size_t>(m));
    std::vector<float> sims(static_cast<size_t>(nq * m));
    for (int64_t i = 0; i < m; ++i) rows[static_cast<size_t>(i)] = row_ptr(in[static_cast<size_t>(i)].row);
    search::score_rows_multi(qf.data(), static_cast<int>(nq), rows.data(), m, dim, sims.data());
    std::vector<float> lo(static_cast<size_t>(nq * 16)), hi(lo.size());
    std::vector<float> lows;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t e = 0; e < nq; ++e) {
        const float c = sims[static_cast<size_t>(e * m + i)];
        lo[static_cast<size_t>(16 * e)] = c - eps;
        hi[static_cast<size_t>(16 * e)] = c + eps;
      }
      const auto [low, up] = row_bounds(lo.data(), hi.data(), 0);
      const Bounded b{low, up, in[static_cast<size_t>(i)].row};
      if (up == -inf) continue;
      out.push_back(b);
      if (low > -inf && eligible(b.row)) lows.push_back(low);
    }
    if (static_cast<int64_t>(lows.size()) < pool) return -inf;
    std::nth_element(lows.begin(), lows.begin() + (pool - 1), lows.end(), std::greater<float>());
    return lows[static_cast<size_t>(pool - 1)];
  };
  std::vector<Bounded> out;
  if (n == 0) return out;
  // First the rows with the best 8-bit lower bounds: their tighter lower bounds raise the floor
  // that the others' 8-bit upper bounds must reach.
  std::vector<Bounded> likely;
  for (const auto& f : found)
    if (f.lower > -inf && eligible(f.row)) likely.push_back(f);
  const size_t top = std::min(likely.size(), static_cast<size_t>(4 * pool));
  std::nth_element(likely.begin(), likely.begin() + static_cast<std::ptrdiff_t>(top), likely.end(),
                   [](const Bounded& a, const Bounded& b) { return a.lower > b.lower; });
  likely.resize(top);
  std::vector<Bounded> scratch;
  const float first = rebound(likely, scratch);
  std::vector<Bounded> rest;
  for (const auto& f : found)
    if (f.upper >= first) rest.push_back(f);
  const float floor = rebound(rest, out);
  out.erase(std::remove_if(out.begin(), out.end(), [&](const Bounded& a) { return a.upper < floor; }), out.end());
  return out;
}

// Rows (n × dim, unit vectors; `ids`) not in the 8-bit copy, the delta of items added since the
// structure was last merged: bounded from single-precision products with the queries qf like
// refine_f32's rows, and handed to `visit(id, row)` (which scores exactly) only when they may be
// kept and their upper bound reaches `floor`.
template <class RowBounds, class Visit>
void visit_bounded(int64_t n, const float* rows, const int64_t* ids, const std::vector<float>& qf, int dim, float eps,
                   float floor, RowBounds row_bounds, Visit visit) {
  if (n <= 0) return;
  const int nq = static_cast<int>(qf.size() / static_cast<size_t>(dim));
  std::vector<const float*> ptr(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ptr[static_cast<size_t>(i)] = rows + i * dim;
  std::vector<float> sims(static_cast<size_t>(nq * n));
  search::score_rows_multi(qf.data(), nq, ptr.data(), n, dim, sims.data());
  std::vector<float> lo(static_cast<size_t>(nq) * 16), hi(lo.size());
  for (int64_t i = 0; i < n; ++i) {
    for (int e = 0; e < nq; ++e) {
      const float c = sims[static_cast<size_t>(e * n + i)];
      lo[static_cast<size_t>(16 * e)] = c - eps;
      hi[static_cast<size_t>(16 * e)] = c + eps;
    }
    const float up = row_bounds(lo.data(), hi.data(), 0).second;
    if (up == -std::numeric_limits<float>::infinity() || up < floor) continue;
    visit(ids[i], ptr[static_cast<size_t>(i)]);
  }
}

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
  // Without diversity the 8-bit scans keep a few more: a read's catalog transaction may be newer
  // than its snapshot, so an item removed in between is in the snapshot's candidates but yields
  // no hit. (Diversity selects among exactly the best `pool`.)
  const int64_t pool8 = o.diversity > 0 ? pool : pool + 16;
  const float min_score = o.search.min_score;
  struct Cand {
    float score;
    int64_t id;
  };
  std::vector<Cand> cands;
  // The `keep`-th best score among cands (−∞ when fewer): a candidate scoring below it is not
  // among the best `keep`.
  auto pool_floor = [](const std::vector<Cand>& cs, int64_t keep) {
    if (static_cast<int64_t>(cs.size()) < keep || keep <= 0) return -std::numeric_limits<float>::infinity();
    std::vector<float> sc;
    sc.reserve(cs.size());
    for (const auto& c : cs) sc.push_back(c.score);
    std::nth_element(sc.begin(), sc.begin() + (keep - 1), sc.end(), std::greater<float>());
    return sc[static_cast<size_t>(keep - 1)];
  };
  std::vector<float> buf;
  const float* xb = nullptr;  // the flat store's rows, when the 8-bit copy is used
  // Single-precision products (and the exact ones rounded to float) are within this of the
  // exact products of unit vectors.
  const float f32_eps = static_cast<float>(2 * dim * std::ldexp(1.0, -24) / (1 - dim * std::ldexp(1.0, -24)) + 1e-6);

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
    const std::shared_ptr<const search::QuantizedRows> qrows = allow ? nullptr : quantized_store(m.fidx.get(), m.exact_vectors != nullptr, m.cur().generation, dim, m.quantized, &xb);
    const bool exact_kind = m.factory == "Flat";
    bool done = false;
    // Widen until enough candidates survive the near-duplicate rule (on a graph with the 8-bit
    // copy: up to 16 times the first list, then the exact 8-bit scan below).
    const int64_t first = pool + static_cast<int64_t>(examples.size());
    for (int64_t want = first; !(qrows && (exact_kind || want > 16 * first)); want *= 4) {
      const auto r = m.ranked(qn.data(), want, allow, excluded, o.search.ef_search, o.search.nprobe, o.search.exact_scan_max);
      cands.clear();
      for (const auto& [cos, id] : r) {
        const float* v = m.exact_vector(id, buf);
        if (!v || near_duplicate(v)) continue;
        cands.push_back({static_cast<float>(cos * norm), id});
      }
      if (static_cast<int64_t>(cands.size()) >= pool || static_cast<int64_t>(r.size()) < want) {
        done = true;
        break;
      }
    }
    if (!done) {
      // Every stored item scored from its 8-bit copy (search/quantized_rows.h): an interval on q·v
      // and on each example's cosine; only the items whose upper bound reaches the pool's worst
      // lower bound among surely kept items are scored again exactly.
      cands.clear();
      std::vector<search::QuantizedRows::Query> qq;
      qq.push_back(qrows->quantize(qn.data()));
      for (const auto& e : examples) qq.push_back(qrows->quantize(e.data()));
      std::vector<const search::QuantizedRows::Query*> qs;
      for (const auto& q1 : qq) qs.push_back(&q1);
      const int ne = static_cast<int>(examples.size());
      const float thr = o.duplicate_threshold;
      const float nf = static_cast<float>(norm), tiny = 1e-6f * (1 + nf);
      const auto upper_of_max = [&](float most) { return most * nf + tiny; };
      auto block_upper = [&](const float*, const float*, int) { return std::numeric_limits<float>::infinity(); };  // not used
      auto row_bounds = [&](const float* lo, const float* hi, int r) {
        bool kept = true;
        for (int e = 1; e <= ne; ++e) {
          if (lo[16 * e + r] >= thr) return std::pair<float, float>(-std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity());  // surely left out
          kept = kept && hi[16 * e + r] < thr;
        }
        return std::pair<float, float>(kept ? lo[r] * nf - tiny : -std::numeric_limits<float>::infinity(), hi[r] * nf + tiny);
      };
      const auto& ids = m.fidx->id_map;
      auto eligible = [&](int64_t row) {
        const int64_t id = ids[static_cast<size_t>(row)];
        return !excluded.count(id) && !m.tombstones.count(id);
      };
      std::vector<float> qf(qn);
      for (const auto& e : examples) qf.insert(qf.end(), e.begin(), e.end());
      auto row_ptr = [&](int64_t row) { return xb + row * dim; };
      const auto found = scan_quantized(*qrows, qs, 1, f32_eps, pool8, &upper_of_max, block_upper, row_bounds, eligible);
      for (const auto& c : refine_f32(found, qf, dim, f32_eps, pool8, row_bounds, eligible, row_ptr)) {
        const int64_t id = ids[static_cast<size_t>(c.row)];
        if (!eligible(c.row)) continue;
        const float* v = row_ptr(c.row);
        if (near_duplicate(v)) continue;
        cands.push_back({static_cast<float>(dot(qn.data(), v, dim) * norm), id});
      }
      // Items added since the structure was last merged are not in the 8-bit copy: scored exactly
      // when their bounds say they may reach the pool (its worst exact score so far).
      const float floor = pool_floor(cands, pool8);
      m.cur().delta->for_blocks([&](int64_t n, const float* rows, const int64_t* ids_) {
        visit_bounded(n, rows, ids_, qf, dim, f32_eps, floor, row_bounds, [&](int64_t id, const float* v) {
          if (excluded.count(id) || m.tombstones.count(id) || near_duplicate(v)) return;
          cands.push_back({static_cast<float>(dot(qn.data(), v, dim) * norm), id});
        });
      });
      auto better = [](const Cand& a, const Cand& b) { return a.score != b.score ? a.score > b.score : a.id < b.id; };
      const size_t n = std::min<size_t>(cands.size(), static_cast<size_t>(pool8));
      std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(n), cands.end(), better);
      cands.resize(n);
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
    const std::shared_ptr<const search::QuantizedRows> qrows = allow ? nullptr : quantized_store(m.fidx.get(), m.exact_vectors != nullptr, m.cur().generation, dim, m.quantized, &xb);
    bool done = false;
    if (qrows) {
      // Every stored item scored from its 8-bit copy (search/quantized_rows.h): intervals on its
      // cosine to each example, from the positives alone for a block first (σ(max_p hi) bounds
      // the score from above), all examples for the blocks that are not ruled out. The items
      // whose upper bound reaches the pool's worst lower bound among surely kept items are
      // scored again exactly, so the result is that of scoring every item exactly.
      std::vector<search::QuantizedRows::Query> qq;
      for (const auto& e : examples) qq.push_back(qrows->quantize(e.data()));
      std::vector<const search::QuantizedRows::Query*> qs;
      for (const auto& q1 : qq) qs.push_back(&q1);
      const int ne = static_cast<int>(examples.size()), np = static_cast<int>(pos.size());
      const float thr = o.duplicate_threshold, inf = std::numeric_limits<float>::infinity();
      auto bound = [&](float mp, float mn) { return mp > mn ? logistic(mp) : -logistic(mn); };
      // With positives: the score is at most σ(max_p hi) (from QuantizedRows::max_upper).
      const auto upper_of_max = [&](float most) { return logistic(most); };
      auto block_upper = [&](const float* lo, const float*, int rows) {
        float least = inf;  // negatives only: the score is −σ(max_n), at most −σ(max_n lo)
        for (int r = 0; r < rows; ++r) {
          float mn = -inf;
          for (int e = 0; e < ne; ++e) mn = std::max(mn, lo[16 * e + r]);
          least = std::min(least, mn);
        }
        return -logistic(least);
      };
      auto row_bounds = [&](const float* lo, const float* hi, int r) {
        float mp_lo = -inf, mp_hi = -inf, mn_lo = -inf, mn_hi = -inf, most = -inf;
        for (int e = 0; e < ne; ++e) {
          const float l = lo[16 * e + r], h = hi[16 * e + r];
          if (e < np) {
            mp_lo = std::max(mp_lo, l);
            mp_hi = std::max(mp_hi, h);
          } else {
            mn_lo = std::max(mn_lo, l);
            mn_hi = std::max(mn_hi, h);
          }
          most = std::max(most, h);
          if (l >= thr) return std::pair<float, float>(-inf, -inf);  // surely a near-duplicate: left out
        }
        return std::pair<float, float>(most < thr ? bound(mp_lo, mn_hi) : -inf, bound(mp_hi, mn_lo));
      };
      const auto& ids = m.fidx->id_map;
      auto eligible = [&](int64_t row) {
        const int64_t id = ids[static_cast<size_t>(row)];
        return !excluded.count(id) && !m.tombstones.count(id);
      };
      cands.clear();
      std::vector<float> qf;
      for (const auto& e : examples) qf.insert(qf.end(), e.begin(), e.end());
      auto row_ptr = [&](int64_t row) { return xb + row * dim; };
      const auto found = scan_quantized(*qrows, qs, np > 0 ? np : ne, f32_eps, pool8, np > 0 ? &upper_of_max : nullptr,
                                        block_upper, row_bounds, eligible);
      for (const auto& c : refine_f32(found, qf, dim, f32_eps, pool8, row_bounds, eligible, row_ptr)) {
        if (!eligible(c.row)) continue;
        consider(ids[static_cast<size_t>(c.row)], row_ptr(c.row));
      }
      // Items added since the structure was last merged are not in the 8-bit copy: scored exactly
      // when their bounds say they may reach the pool (its worst exact score so far).
      const float floor = pool_floor(cands, pool8);
      m.cur().delta->for_blocks([&](int64_t n, const float* rows, const int64_t* ids_) {
        visit_bounded(n, rows, ids_, qf, dim, f32_eps, floor, row_bounds, [&](int64_t id, const float* v) {
          if (!m.tombstones.count(id)) consider(id, v);
        });
      });
      done = true;
    }
    if (!done && !pos.empty() && !exact_kind && !(allow && static_cast<int64_t>(allow->size()) <= o.search.exact_scan_max) && ntotal > o.search.exact_scan_max) {
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
