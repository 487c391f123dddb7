// The text tower (clip.model.CLIP.encode_text): token + positional embedding, causal residual
// blocks, ln_final, pooling at the first argmax id (the end-of-text token), text_projection.
#pragma once
#include "model/encoder.h"
#include "model/transformer.h"

namespace clipkit {

class TextTransformer final : public TextEncoder {
 public:
  TextTransformer(const Checkpoint& ckpt, const Architecture& arch, const ModelOptions& options);

  // Runs each text only up to the longest end-of-text position of its chunk: with the causal mask,
  // positions after the pooled one cannot change it. Texts are grouped by that length, and the
  // last block computes only the pooled rows.
  void encode(const int32_t* ids, int64_t batch, int64_t context, float* out, DebugTrace* trace) const override;
  // The same computation over all `context` positions, in input order (the reference's way).
  void encode_full(const int32_t* ids, int64_t batch, int64_t context, float* out, DebugTrace* trace) const;

  int64_t parameter_count() const override;
  int64_t weight_bytes() const override;

 private:
  // ids: [batch, length]; pool: pooled position per text (< length); out: [batch, embed_dim].
  // all_rows: run every position through every block (the reference computation, needed for a
  // trace); otherwise the last block only computes the pooled rows (Transformer::forward_rows).
  void run(const int32_t* ids, int64_t batch, int64_t length, const int64_t* pool, float* out, DebugTrace* trace,
           bool all_rows) const;
  // Checks ids and returns the first argmax position of each row.
  std::vector<int64_t> pool_positions(const int32_t* ids, int64_t batch, int64_t context) const;

  int64_t width_, embed_dim_, context_length_, vocab_size_;
  Checkpoint::SharedTable token_embedding_;  // a lookup table: used in place when the file stores F32 or F16
  std::vector<float> positional_embedding_;
  Transformer transformer_;
  LayerNormParams ln_final_;
  Linear projection_;
};

}  // namespace clipkit
