// Multi-head scaled dot-product attention on the packed output of an in_proj layer, as
// torch.nn.MultiheadAttention computes it: per head, softmax(q·kᵀ / sqrt(d) [+ causal mask]) · v.
#pragma once
#include <cstdint>

namespace clipkit {

// qkv: [batch * seq, 3 * width] row-major, each row holding q (width), k (width), v (width);
// head h uses columns [h*d, (h+1)*d) of each, d = width / heads.
// out: [batch * seq, width], heads concatenated (the input of out_proj).
// causal: position i attends to positions j <= i only (CLIP's text mask).
// The q·kᵀ and p·v products are GEMMs per (batch, head); pairs run in parallel.
// dequant (optional): qkv holds an int8 in_proj's raw product (Linear::forward_quantized_raw); each
// value is read as int8_dequantize_row makes it (fma(x - zero_shift[c], row_scale[r], bias[c])),
// bit for bit the values the layer's own epilogue would have written, without that pass over the
// whole matrix.
// With col_scale (the layer's weight scales), qkv holds its sums instead
// (Linear::forward_quantized_sum), read with int8_dequantize_row's col_scale: the same values.
struct QkvDequant {
  const float* row_scale = nullptr;   // [batch * seq]
  const float* zero_shift = nullptr;  // [3 * width]
  const float* bias = nullptr;        // [3 * width], or null
  const float* col_scale = nullptr;   // [3 * width], or null (qkv is the raw product)
};
void multi_head_attention(const float* qkv, int64_t batch, int64_t seq, int64_t width, int64_t heads, bool causal,
                          float* out, const QkvDequant* dequant = nullptr);

// The same attention with its output rows quantised for an int8 layer as quantize_rows_u8_offset
// does (kernels/int8.h: q [batch * seq, width] bytes, scale [batch * seq]), bit for bit, without
// the float output in memory: each item's rows are quantised as soon as its heads are done.
void multi_head_attention_quantized(const float* qkv, int64_t batch, int64_t seq, int64_t width, int64_t heads,
                                    bool causal, const QkvDequant* dequant, uint8_t* q, float* scale);

// The same attention for one query row per batch item: row query_pos[b] of item b attends to
// positions [0, query_pos[b]] (causal) or all `seq` positions. out: [batch, width]. Used by the
// text tower's last block, whose only output that matters is the pooled end-of-text row.
void multi_head_attention_rows(const float* qkv, int64_t batch, int64_t seq, int64_t width, int64_t heads,
                               bool causal, const int64_t* query_pos, float* out);

// The same with the query rows held apart from the keys and values (a last block that projects
// q for the kept rows only): item b's query row is q[b · ldq, + width), the keys and values of its
// positions are rows b · seq .. b · seq + seq - 1 of kv, k in columns [0, width) and v in
// [width, 2 · width) (row stride ldkv). dequant (optional): kv holds an int8 layer's raw product;
// row_scale [batch * seq], zero_shift and bias [2 * width] (k's then v's), read as for
// multi_head_attention. out: [batch, width].
void multi_head_attention_query_rows(const float* q, int64_t ldq, const float* kv, int64_t ldkv, int64_t batch,
                                     int64_t seq, int64_t width, int64_t heads, bool causal, const int64_t* query_pos,
                                     float* out, const QkvDequant* dequant = nullptr);

// Plain scalar reference (double accumulation), same layout.
void multi_head_attention_reference(const float* qkv, int64_t batch, int64_t seq, int64_t width, int64_t heads,
                                    bool causal, float* out);

}  // namespace clipkit
