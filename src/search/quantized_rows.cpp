#include "search/quantized_rows.h"

// GCC 12 warns about the deliberately undefined vectors inside its own AVX-512 headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu.h"

namespace clipkit::search {

namespace {

// The float nearest v that is not below it.
float round_up(double v) {
  float f = static_cast<float>(v);
  if (static_cast<double>(f) < v) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

// Scale, codes (xi) and the two norms of one vector.
struct Coded {
  float scale = 0, err = 0, norm = 0;
};

Coded code_row(const float* x, int dim, int8_t* out) {
  float most = 0;
  for (int j = 0; j < dim; ++j) most = std::max(most, std::fabs(x[j]));
  Coded c;
  c.scale = most > 0 ? most / 127.0f : 0.0f;
  double e2 = 0, n2 = 0;
  for (int j = 0; j < dim; ++j) {
    int v = 0;
    if (c.scale > 0) v = static_cast<int>(std::nearbyint(static_cast<double>(x[j]) / c.scale));
    v = std::clamp(v, -127, 127);
    out[j] = static_cast<int8_t>(v);
    const double d = static_cast<double>(x[j]) - static_cast<double>(c.scale) * v;
    e2 += d * d;
    n2 += static_cast<double>(x[j]) * x[j];
  }
  c.err = round_up(std::sqrt(e2));
  c.norm = round_up(std::sqrt(n2));
  return c;
}

// Rounding of the float arithmetic in `bounds` for unit vectors (a few units in the last place
// of values below 2), with a wide margin.
constexpr float kArithmeticSlack = 2e-6f;

// The 16 rows' intervals for NQ queries: centre c[j] and radius d[j] for query j.
template <int NQ>
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) inline void intervals_vnni(
    const uint8_t* blk, int groups, const QuantizedRows::Query* const* qs, const float* scale, const float* err,
    const float* norm, float slack, __m512* c, __m512* d) {
  __m512i acc[NQ];
  const int32_t* g[NQ];
  for (int j = 0; j < NQ; ++j) {
    acc[j] = _mm512_setzero_si512();
    g[j] = qs[j]->groups.data();
  }
  for (int k = 0; k < groups; ++k) {
    const __m512i x = _mm512_loadu_si512(blk + 64 * static_cast<int64_t>(k));
    for (int j = 0; j < NQ; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], x, _mm512_set1_epi32(g[j][k]));
  }
  const __m512 s = _mm512_loadu_ps(scale), e = _mm512_loadu_ps(err), n = _mm512_loadu_ps(norm);
  for (int j = 0; j < NQ; ++j) {
    const QuantizedRows::Query& q = *qs[j];
    const __m512i dot = _mm512_sub_epi32(acc[j], _mm512_set1_epi32(q.bias));
    c[j] = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(s, _mm512_set1_ps(q.scale)));
    d[j] = _mm512_fmadd_ps(_mm512_set1_ps(q.norm_q), e, _mm512_fmadd_ps(_mm512_set1_ps(q.err_q), n, _mm512_set1_ps(slack)));
  }
}

template <int NQ>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void bounds_vnni(const uint8_t* blk, int groups,
                                                                      const QuantizedRows::Query* const* qs,
                                                                      const float* scale, const float* err,
                                                                      const float* norm, float slack, float* lo,
                                                                      float* hi) {
  __m512 c[NQ], d[NQ];
  intervals_vnni<NQ>(blk, groups, qs, scale, err, norm, slack, c, d);
  for (int j = 0; j < NQ; ++j) {
    _mm512_storeu_ps(lo + 16 * j, _mm512_sub_ps(c[j], d[j]));
    _mm512_storeu_ps(hi + 16 * j, _mm512_add_ps(c[j], d[j]));
  }
}

// max over j < NQ and r < 16 of the hi that bounds_vnni<NQ> would store.
template <int NQ>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) float max_upper_vnni(const uint8_t* blk, int groups,
                                                                           const QuantizedRows::Query* const* qs,
                                                                           const float* scale, const float* err,
                                                                           const float* norm, float slack) {
  __m512 c[NQ], d[NQ];
  intervals_vnni<NQ>(blk, groups, qs, scale, err, norm, slack, c, d);
  __m512 most = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int j = 0; j < NQ; ++j) most = _mm512_max_ps(most, _mm512_add_ps(c[j], d[j]));
  return _mm512_reduce_max_ps(most);
}

using MaxUpperFn = float (*)(const uint8_t*, int, const QuantizedRows::Query* const*, const float*, const float*,
                             const float*, float);
constexpr MaxUpperFn kMaxUpperVnni[] = {max_upper_vnni<1>, max_upper_vnni<2>, max_upper_vnni<3>, max_upper_vnni<4>,
                                        max_upper_vnni<5>, max_upper_vnni<6>, max_upper_vnni<7>, max_upper_vnni<8>};

using BoundsFn = void (*)(const uint8_t*, int, const QuantizedRows::Query* const*, const float*, const float*,
                          const float*, float, float*, float*);
constexpr BoundsFn kBoundsVnni[] = {bounds_vnni<1>, bounds_vnni<2>, bounds_vnni<3>, bounds_vnni<4>,
                                    bounds_vnni<5>, bounds_vnni<6>, bounds_vnni<7>, bounds_vnni<8>};

void bounds_scalar(const uint8_t* blk, int groups, const QuantizedRows::Query* const* qs, int nq, const float* scale,
                   const float* err, const float* norm, float slack, float* lo, float* hi) {
  for (int j = 0; j < nq; ++j) {
    const QuantizedRows::Query& q = *qs[j];
    for (int r = 0; r < QuantizedRows::kBlockRows; ++r) {
      int32_t acc = 0;
      for (int k = 0; k < groups; ++k) {
        const uint8_t* x = blk + 64 * static_cast<int64_t>(k) + 4 * r;
        const auto* qb = reinterpret_cast<const int8_t*>(&q.groups[static_cast<size_t>(k)]);
        for (int i = 0; i < 4; ++i) acc += static_cast<int32_t>(x[i]) * qb[i];
      }
      const float c = static_cast<float>(acc - q.bias) * (scale[r] * q.scale);
      const float d = q.norm_q * err[r] + (q.err_q * norm[r] + slack);
      lo[16 * j + r] = c - d;
      hi[16 * j + r] = c + d;
    }
  }
}

}  // namespace

bool quantized_scan_available() {
  static const bool has = __builtin_cpu_supports("avx512vnni");
  return has && cpu_has_avx512();
}

QuantizedRows::QuantizedRows(int dim)
    : dim_(dim), groups_((dim + 3) / 4), ids_(std::make_shared<const std::vector<int64_t>>()) {}

std::shared_ptr<const QuantizedRows> QuantizedRows::appended(const float* rows, int64_t n, const int64_t* ids) const {
  auto out = std::make_shared<QuantizedRows>(*this);
  auto all = std::make_shared<std::vector<int64_t>>(*ids_);
  all->insert(all->end(), ids, ids + n);
  out->ids_ = all;
  const int64_t chunk_rows = kChunkBlocks * kBlockRows;
  const size_t codes_per_chunk = static_cast<size_t>(kChunkBlocks) * static_cast<size_t>(groups_) * 64;
  auto new_chunk = [&] {
    auto c = std::make_shared<Chunk>();
    c->codes.assign(codes_per_chunk, 128);  // zero vectors until written
    c->scale.assign(static_cast<size_t>(chunk_rows), 0.0f);
    c->err.assign(static_cast<size_t>(chunk_rows), 0.0f);
    c->norm.assign(static_cast<size_t>(chunk_rows), 0.0f);
    return c;
  };
  // A partly filled last chunk is copied (the older version keeps reading its own).
  if (n > 0 && n_ % chunk_rows != 0) out->chunks_.back() = std::make_shared<Chunk>(*chunks_.back());
  const int64_t first_chunk = n_ / chunk_rows, last_chunk = (n_ + n - 1) / chunk_rows;
  while (n > 0 && static_cast<int64_t>(out->chunks_.size()) <= last_chunk) out->chunks_.push_back(new_chunk());
#pragma omp parallel for schedule(dynamic, 1) if (n * dim_ >= (1 << 22))
  for (int64_t c = first_chunk; c <= last_chunk; ++c) {
    if (n <= 0) continue;
    Chunk& ch = *out->chunks_[static_cast<size_t>(c)];
    std::vector<int8_t> code(static_cast<size_t>(groups_) * 4, 0);
    const int64_t from = std::max(n_, c * chunk_rows), to = std::min(n_ + n, (c + 1) * chunk_rows);
    for (int64_t row = from; row < to; ++row) {
      const Coded k = code_row(rows + (row - n_) * dim_, dim_, code.data());
      const int64_t in = row - c * chunk_rows, blk = in / kBlockRows, r = in % kBlockRows;
      uint8_t* b = ch.codes.data() + blk * groups_ * 64;
      for (int g = 0; g < groups_; ++g)
        for (int i = 0; i < 4; ++i) b[64 * g + 4 * r + i] = static_cast<uint8_t>(code[static_cast<size_t>(4 * g + i)] + 128);
      ch.scale[static_cast<size_t>(in)] = k.scale;
      ch.err[static_cast<size_t>(in)] = k.err;
      ch.norm[static_cast<size_t>(in)] = k.norm;
    }
  }
  out->n_ = n_ + n;
  return out;
}

QuantizedRows::Query QuantizedRows::quantize(const float* q) const {
  std::vector<int8_t> code(static_cast<size_t>(groups_) * 4, 0);
  const Coded c = code_row(q, dim_, code.data());
  Query out;
  out.scale = c.scale;
  out.err_q = c.err;
  double n2 = 0;
  int32_t sum = 0;
  for (int j = 0; j < dim_; ++j) {
    const double v = static_cast<double>(c.scale) * code[static_cast<size_t>(j)];
    n2 += v * v;
    sum += code[static_cast<size_t>(j)];
  }
  out.norm_q = round_up(std::sqrt(n2));
  out.bias = 128 * sum;
  out.groups.resize(static_cast<size_t>(groups_));
  std::memcpy(out.groups.data(), code.data(), code.size());
  return out;
}

void QuantizedRows::bounds(int64_t b, const Query* const* qs, int nq, float slack, float* lo, float* hi) const {
  const int64_t chunk = b / kChunkBlocks, in = b % kChunkBlocks;
  const Chunk& c = *chunks_[static_cast<size_t>(chunk)];
  const uint8_t* blk = c.codes.data() + in * groups_ * 64;
  const size_t r0 = static_cast<size_t>(in * kBlockRows);
  slack += kArithmeticSlack;
  const bool vec = quantized_scan_available();
  for (int j = 0; j < nq; j += 8) {
    const int m = std::min(8, nq - j);
    if (vec) {
      kBoundsVnni[m - 1](blk, groups_, qs + j, c.scale.data() + r0, c.err.data() + r0, c.norm.data() + r0, slack,
                         lo + 16 * j, hi + 16 * j);
    } else {
      bounds_scalar(blk, groups_, qs + j, m, c.scale.data() + r0, c.err.data() + r0, c.norm.data() + r0, slack,
                    lo + 16 * j, hi + 16 * j);
    }
  }
}

float QuantizedRows::max_upper(int64_t b, const Query* const* qs, int nq, float slack) const {
  const int64_t chunk = b / kChunkBlocks, in = b % kChunkBlocks;
  const Chunk& c = *chunks_[static_cast<size_t>(chunk)];
  const uint8_t* blk = c.codes.data() + in * groups_ * 64;
  const size_t r0 = static_cast<size_t>(in * kBlockRows);
  float most = -std::numeric_limits<float>::infinity();
  if (!quantized_scan_available()) {
    std::vector<float> lo(static_cast<size_t>(nq) * kBlockRows), hi(lo.size());
    bounds(b, qs, nq, slack, lo.data(), hi.data());
    for (float h : hi) most = std::max(most, h);
    return most;
  }
  slack += kArithmeticSlack;
  for (int j = 0; j < nq; j += 8) {
    const int m = std::min(8, nq - j);
    most = std::max(most, kMaxUpperVnni[m - 1](blk, groups_, qs + j, c.scale.data() + r0, c.err.data() + r0,
                                               c.norm.data() + r0, slack));
  }
  return most;
}

int64_t QuantizedRows::bytes() const {
  int64_t total = static_cast<int64_t>(ids_->size() * sizeof(int64_t));
  for (const auto& c : chunks_)
    total += static_cast<int64_t>(c->codes.size() + 3 * c->scale.size() * sizeof(float));
  return total;
}

std::shared_ptr<const QuantizedRows> QuantizedCache::get(const void* owner, int64_t version, const float* xb, int64_t n,
                                                         int dim, const int64_t* ids) {
  const std::lock_guard<std::mutex> lock(mu_);
  if (rows_ && rows_->dim() == dim && rows_->size() == n && owner == owner_ && version == version_ &&
      (n == 0 || (rows_->ids().front() == ids[0] && rows_->ids().back() == ids[n - 1])))
    return rows_;
  // The same ids in the same places hold the same vectors (an item's id never changes meaning).
  const bool prefix = rows_ && rows_->dim() == dim && rows_->size() <= n &&
                      std::equal(rows_->ids().begin(), rows_->ids().end(), ids);
  const int64_t have = prefix ? rows_->size() : 0;
  if (!prefix) rows_ = std::make_shared<const QuantizedRows>(dim);
  if (n > have) rows_ = rows_->appended(xb + have * dim, n - have, ids + have);
  owner_ = owner;
  version_ = version;
  return rows_;
}

void QuantizedCache::clear() {
  const std::lock_guard<std::mutex> lock(mu_);
  rows_.reset();
  owner_ = nullptr;
  version_ = -1;
}

}  // namespace clipkit::search
