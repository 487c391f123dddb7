// Attention for one (item, head) pair of a short sequence in a single AVX-512 kernel: keys are
// transposed into an L1 block, the scores of a few query rows at a time stay in registers through
// the softmax, and the value product follows for those rows at once. Used by multi_head_attention
// for ViT-B/32's 50 tokens and the text tower's at most 77.
#pragma once
#include <cstdint>

namespace clipkit {

// Longest sequence the fused kernel takes: the scores of a query row must fit in 5 registers.
constexpr int64_t kFusedAttentionMaxSeq = 80;

// True when attention_pair_fused handles this shape on this CPU: AVX-512, head size 64 (every
// CLIP model's) and 1 <= seq <= kFusedAttentionMaxSeq.
bool attention_fused_supported(int64_t seq, int64_t head_dim);

// q, k and v left as an int8 in_proj's raw product: every value x of row i and column c (of the
// head's 64) is read as int8_dequantize_row (kernels/int8.h) makes it, fma(x - zero_shift[c],
// row_scale[i], bias[c]): the layer's own epilogue, bit for bit. Index 0, 1, 2: q, k, v; a bias
// may be null (none). With col_scale, x is the layer's sum and x · col_scale[c], rounded, is
// read in its place (int8_dequantize_row's col_scale).
struct PairDequant {
  const float* row_scale = nullptr;
  const float* zero_shift[3] = {nullptr, nullptr, nullptr};
  const float* bias[3] = {nullptr, nullptr, nullptr};
  const float* col_scale[3] = {nullptr, nullptr, nullptr};
};

// out[i, :] = softmax(scale · q[i, :]·kᵀ [masked to j <= i when causal]) · v for i < seq.
// q, k, v: rows of 64 values with stride ld; out: rows with stride ldo. dequant: see PairDequant
// (null: q, k and v are the values). Returns false when a score is NaN or infinite (the caller
// then uses the general path, whose results out is left to hold).
bool attention_pair_fused(const float* q, const float* k, const float* v, int64_t ld, int64_t seq, bool causal,
                          float scale, float* out, int64_t ldo, const PairDequant* dequant = nullptr);

}  // namespace clipkit
