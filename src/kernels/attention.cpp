#include "kernels/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "clipkit/error.h"
#include "kernels/attention_fused.h"
#include "kernels/gemm.h"
#include "kernels/int8.h"
#include "kernels/softmax.h"

namespace clipkit {

namespace {

void check_args(int64_t width, int64_t heads) {
  if (heads <= 0 || width <= 0 || width % heads != 0)
    throw Error(ErrorCode::Shape, "attention width " + std::to_string(width) + " is not divisible by " +
                                      std::to_string(heads) + " heads");
}

// Per-head size, qkv row stride, 1/sqrt(d) and (batch, head) pair count, after checking the shape.
struct Geometry {
  int64_t d, ld, pairs;
  float scale;
  Geometry(int64_t batch, int64_t width, int64_t heads)
      : d((check_args(width, heads), width / heads)),
        ld(3 * width),
        pairs(batch * heads),
        scale(static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)))) {}
};

}  // namespace

namespace {

// Per-thread work memory of the pair loop.
struct PairScratch {
  std::vector<float> scores, inv_sum, plain;
};

// The dequantisation terms of one (item, head) pair: rows from row0, the head's columns from
// col0. dq's columns hold matrices first .. 2 of (q, k, v) side by side, width each: first = 0
// for a packed in_proj product, 1 for keys and values alone.
PairDequant pair_dequant(const QkvDequant& dq, int64_t row0, int64_t col0, int64_t width, int first) {
  PairDequant pd;
  pd.row_scale = dq.row_scale + row0;
  for (int m = first; m < 3; ++m) {
    pd.zero_shift[m] = dq.zero_shift + (m - first) * width + col0;
    pd.bias[m] = dq.bias ? dq.bias + (m - first) * width + col0 : nullptr;
    pd.col_scale[m] = dq.col_scale ? dq.col_scale + (m - first) * width + col0 : nullptr;
  }
  return pd;
}

// Rows ahead whose q, k and v pieces the dequantising copy below prefetches.
constexpr int64_t kPrefetchRows = 6;

// The cache lines of one row's q, k and v pieces (d floats each, width floats apart).
inline void prefetch_row_pieces(const float* row, int64_t width, int64_t d) {
  for (int m = 0; m < 3; ++m)
    for (int64_t c = 0; c < d; c += 16) __builtin_prefetch(row + m * width + c, 0, 3);
}

// One (item, head) pair p: softmax(q·kᵀ·scale [+ causal mask]) · v, its seq output rows of d
// values written at o with row stride ldo.
void attention_pair(const float* qkv, const Geometry& g, int64_t seq, int64_t width, int64_t heads, bool causal,
                    bool fused, const QkvDequant* dequant, int64_t p, float* o, int64_t ldo, PairScratch& sc) {
  const int64_t d = g.d;
  const int64_t b = p / heads, h = p % heads;
  int64_t ld = g.ld;
  const float* q = qkv + b * seq * ld + h * d;
  const float* k = q + width;
  const float* v = q + 2 * width;
  const PairDequant pd = dequant ? pair_dequant(*dequant, b * seq, h * d, width, 0) : PairDequant{};
  if (fused && attention_pair_fused(q, k, v, ld, seq, causal, g.scale, o, ldo, dequant ? &pd : nullptr)) return;
  if (dequant) {  // this pair's q, k and v as the epilogue would have written them, rows of 3·d
    sc.plain.resize(static_cast<size_t>(seq * 3 * d));
    for (int64_t i = 0; i < seq; ++i) {
      // The head's pieces of a row lie 3·width floats apart, a page or more: the hardware prefetch
      // does not follow that stride, so the rows a few ahead are asked for here.
      if (i + kPrefetchRows < seq) prefetch_row_pieces(q + (i + kPrefetchRows) * ld, width, d);
      for (int m = 0; m < 3; ++m)
        int8_dequantize_row(q + i * ld + m * width, pd.zero_shift[m], pd.bias[m], pd.row_scale[i], d,
                            sc.plain.data() + i * 3 * d + m * d, false, pd.col_scale[m]);
    }
    q = sc.plain.data();
    k = q + d;
    v = q + 2 * d;
    ld = 3 * d;
  }
  sc.scores.resize(static_cast<size_t>(seq * seq));
  sc.inv_sum.resize(static_cast<size_t>(seq));
  float* s = sc.scores.data();
  sgemm(false, true, seq, seq, d, g.scale, q, ld, k, ld, 0.0f, s, seq);
  // The softmax's division is applied to the d outputs of each row after the value product
  // rather than to its seq probabilities before it: one pass less over the score matrix.
  for (int64_t i = 0; i < seq; ++i) {
    float* row = s + i * seq;
    const int64_t valid = causal ? i + 1 : seq;
    sc.inv_sum[static_cast<size_t>(i)] = softmax_row_unnormalized(row, valid);
    for (int64_t j = valid; j < seq; ++j) row[j] = 0.0f;
  }
  sgemm(false, false, seq, d, seq, 1.0f, s, seq, v, ld, 0.0f, o, ldo);
  for (int64_t i = 0; i < seq; ++i) {
    float* orow = o + i * ldo;
    const float f = sc.inv_sum[static_cast<size_t>(i)];
    for (int64_t c = 0; c < d; ++c) orow[c] *= f;
  }
}

void check_dequant(const QkvDequant* dequant) {
  if (dequant && (!dequant->row_scale || !dequant->zero_shift))
    throw Error(ErrorCode::InvalidArgument, "attention: dequantisation without row scales or zero shifts");
}

}  // namespace

void multi_head_attention(const float* qkv, int64_t batch, int64_t seq, int64_t width, int64_t heads, bool causal,
                          float* out, const QkvDequant* dequant) {
  if (batch <= 0 || seq <= 0) return check_args(width, heads);
  check_dequant(dequant);
  const Geometry g(batch, width, heads);
  const bool fused = attention_fused_supported(seq, g.d);
  // Small problems stay on the calling thread: a parallel region costs more than it saves there.
#pragma omp parallel if (g.pairs > 1 && g.pairs * seq * seq * g.d >= (1 << 18))
  {
    PairScratch sc;
#pragma omp for schedule(static)
    for (int64_t p = 0; p < g.pairs; ++p) {
      const int64_t b = p / heads, h = p % heads;
      attention_pair(qkv, g, seq, width, heads, causal, fused, dequant, p, out + b * seq * width + h * g.d, width, sc);
    }
  }
}

void multi_head_attention_quantized(const float* qkv, int64_t batch, int64_t seq, int64_t width, int64_t heads,
                                    bool causal, const QkvDequant* dequant, uint8_t* q, float* scale) {
  if (batch <= 0 || seq <= 0) return check_args(width, heads);
  check_dequant(dequant);
  const Geometry g(batch, width, heads);
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads > 1 && batch < 2 * threads) {
    // Too few items to share out whole: the pairs are shared instead, and the rows quantised after.
    thread_local std::vector<float> out;
    if (out.size() < static_cast<size_t>(batch * seq * width)) out.resize(static_cast<size_t>(batch * seq * width));
    multi_head_attention(qkv, batch, seq, width, heads, causal, out.data(), dequant);
    quantize_rows_u8_offset(out.data(), batch * seq, width, q, scale);
    return;
  }
  const bool fused = attention_fused_supported(seq, g.d);
  // Item by item: its heads' rows go to an L2-sized buffer and are quantised straight away.
#pragma omp parallel if (threads > 1 && g.pairs * seq * seq * g.d >= (1 << 18))
  {
    PairScratch sc;
    thread_local std::vector<float> item;  // kept per thread: no allocation per call once warm
    if (item.size() < static_cast<size_t>(seq * width)) item.resize(static_cast<size_t>(seq * width));
    float* rows = item.data();
#pragma omp for schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h)
        attention_pair(qkv, g, seq, width, heads, causal, fused, dequant, b * heads + h, rows + h * g.d, width, sc);
      quantize_rows_u8_offset(rows, seq, width, q + b * seq * width, scale + b * seq);
    }
  }
}

namespace {

// One query row against the keys and values of one (item, head) pair: out[0 .. d) =
// softmax(scale · q·kᵀ over the first `valid` positions) · v. k and v: rows of d values with
// stride ld. dq: k and v are an int8 layer's raw product, read as int8_dequantize_row makes it
// (its entries 1 and 2; row_scale per position).
void attend_one_row(const float* q, const float* k, const float* v, int64_t ld, int64_t valid, int64_t d, float scale,
                    const PairDequant* dq, std::vector<float>& scores, std::vector<float>& plain, float* out) {
  if (dq) {  // this pair's keys and values as the layer's epilogue would have written them
    plain.resize(static_cast<size_t>(2 * valid * d));
    float* kd = plain.data();
    float* vd = kd + valid * d;
    for (int64_t j = 0; j < valid; ++j) {
      int8_dequantize_row(k + j * ld, dq->zero_shift[1], dq->bias[1], dq->row_scale[j], d, kd + j * d, false,
                          dq->col_scale[1]);
      int8_dequantize_row(v + j * ld, dq->zero_shift[2], dq->bias[2], dq->row_scale[j], d, vd + j * d, false,
                          dq->col_scale[2]);
    }
    k = kd;
    v = vd;
    ld = d;
  }
  scores.resize(static_cast<size_t>(valid));
  float* s = scores.data();
  sgemm(false, true, 1, valid, d, scale, q, d, k, ld, 0.0f, s, valid);
  softmax_row(s, valid);
  sgemm(false, false, 1, d, valid, 1.0f, s, valid, v, ld, 0.0f, out, d);
}

void check_query_positions(int64_t batch, int64_t seq, const int64_t* query_pos) {
  for (int64_t b = 0; b < batch; ++b)
    if (query_pos[b] < 0 || query_pos[b] >= seq)
      throw Error(ErrorCode::Shape, "attention query position " + std::to_string(query_pos[b]) + " is outside [0, " +
                                        std::to_string(seq) + ")");
}

}  // namespace

void multi_head_attention_rows(const float* qkv, int64_t batch, int64_t seq, int64_t width, int64_t heads,
                               bool causal, const int64_t* query_pos, float* out) {
  if (batch <= 0 || seq <= 0) return check_args(width, heads);
  check_args(width, heads);
  check_query_positions(batch, seq, query_pos);
  // The query rows gathered; keys and values read where they are (columns width .. 3 · width).
  std::vector<float> queries(static_cast<size_t>(batch * width));
  for (int64_t b = 0; b < batch; ++b)
    std::copy_n(qkv + (b * seq + query_pos[b]) * 3 * width, width, queries.data() + b * width);
  multi_head_attention_query_rows(queries.data(), width, qkv + width, 3 * width, batch, seq, width, heads, causal,
                                  query_pos, out);
}

void multi_head_attention_query_rows(const float* q, int64_t ldq, const float* kv, int64_t ldkv, int64_t batch,
                                     int64_t seq, int64_t width, int64_t heads, bool causal, const int64_t* query_pos,
                                     float* out, const QkvDequant* dequant) {
  if (batch <= 0 || seq <= 0) return check_args(width, heads);
  check_dequant(dequant);
  const Geometry g(batch, width, heads);
  const int64_t d = g.d, pairs = g.pairs;
  if (ldq < width || ldkv < 2 * width)
    throw Error(ErrorCode::Shape, "attention: row strides " + std::to_string(ldq) + " (queries) and " +
                                      std::to_string(ldkv) + " (keys and values) are too small for width " +
                                      std::to_string(width));
  check_query_positions(batch, seq, query_pos);
#pragma omp parallel if (pairs > 1 && pairs * seq * d >= (1 << 18))
  {
    std::vector<float> scores, plain;
#pragma omp for schedule(static)
    for (int64_t p = 0; p < pairs; ++p) {
      const int64_t b = p / heads, h = p % heads;
      const int64_t i = query_pos[b];
      const float* k = kv + b * seq * ldkv + h * d;
      const PairDequant pd = dequant ? pair_dequant(*dequant, b * seq, h * d, width, 1) : PairDequant{};
      attend_one_row(q + b * ldq + h * d, k, k + width, ldkv, causal ? i + 1 : seq, d, g.scale,
                     dequant ? &pd : nullptr, scores, plain, out + b * width + h * d);
    }
  }
}

void multi_head_attention_reference(const float* qkv, int64_t batch, int64_t seq, int64_t width, int64_t heads,
                                    bool causal, float* out) {
  check_args(width, heads);
  const int64_t d = width / heads;
  const int64_t ld = 3 * width;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> p(static_cast<size_t>(seq));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < seq; ++i) {
        const float* q = qkv + (b * seq + i) * ld + h * d;
        const int64_t valid = causal ? i + 1 : seq;
        double mx = -INFINITY;
        for (int64_t j = 0; j < valid; ++j) {
          const float* k = qkv + (b * seq + j) * ld + width + h * d;
          double acc = 0.0;
          for (int64_t t = 0; t < d; ++t) acc += static_cast<double>(q[t]) * k[t];
          p[j] = acc * scale;
          mx = p[j] > mx ? p[j] : mx;
        }
        double sum = 0.0;
        for (int64_t j = 0; j < valid; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        for (int64_t t = 0; t < d; ++t) {
          double acc = 0.0;
          for (int64_t j = 0; j < valid; ++j) acc += p[j] / sum * qkv[(b * seq + j) * ld + 2 * width + h * d + t];
          out[(b * seq + i) * width + h * d + t] = static_cast<float>(acc);
        }
      }
}

}  // namespace clipkit
