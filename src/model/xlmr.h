// The XLM-RoBERTa text tower of multilingual CLIP models (Hugging Face XLMRobertaModel):
// word + token-type row 0 + position embeddings (ids from padding_idx + 1 = 2, padding at 1),
// embedding LayerNorm, BERT post-LayerNorm blocks with erf GELU, then the attention-masked mean
// of the last hidden states and a projection: M-CLIP's LinearTransformation (with bias) or
// open_clip's MLP head (Linear -> GELU -> Linear, no biases). All LayerNorm eps are 1e-5.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "clipkit/model.h"
#include "io/checkpoint.h"
#include "kernels/linear.h"
#include "model/transformer.h"

namespace clipkit {

struct XlmrSpec {
  std::string prefix;       // "transformer." (M-CLIP) or "text.transformer." (open_clip)
  std::string head_prefix;  // "LinearTransformation." or "text.proj."
  bool mlp_head = false;    // open_clip's two-layer head (head_prefix + "0." and "2.")
  // Which tokens are attended and pooled: every token of the text (M-CLIP: the tokenizer's
  // length-based mask, a literal <pad> included) or every id other than <pad> (open_clip).
  bool mask_pad_ids = false;
  // Sizes, from the tensors (xlmr_spec fills them).
  int64_t width = 0, layers = 0, heads = 0, intermediate = 0, vocab = 0, positions = 0, embed_dim = 0;
  // Ids a text may hold: the position table minus padding_idx + 1.
  int64_t max_tokens() const { return positions - 2; }
};

// True when the checkpoint holds an XLM-R encoder under `prefix` ("transformer.", "text.transformer.").
bool has_xlmr_tower(const Checkpoint& ckpt, const std::string& prefix);

// Reads the sizes from the tensors (heads = width / 64). Throws Error naming a missing or
// mis-shaped tensor.
XlmrSpec xlmr_spec(const Checkpoint& ckpt, const std::string& prefix, const std::string& head_prefix, bool mlp_head,
                   bool mask_pad_ids);

class XlmrTextTower {
 public:
  XlmrTextTower(const Checkpoint& ckpt, const XlmrSpec& spec, WeightFormat format);

  // rows: one id row per text, each 1 .. max_tokens ids (open_clip's trailing <pad> ids are
  // dropped first). out: [rows, embed_dim], unnormalised. Texts are packed without padding and
  // attention runs per text over its own tokens. Trace keys (text 0): "text0.embeddings",
  // "text0.layer{i}", "text0.pooled".
  void encode(const std::vector<std::vector<int32_t>>& rows, float* out, DebugTrace* trace) const;

  const XlmrSpec& spec() const { return spec_; }
  int64_t parameter_count() const;
  int64_t weight_bytes() const;

 private:
  struct Layer {
    Linear qkv, attn_out, inter, out;
    LayerNormParams ln_attn, ln_out;
  };
  void load_layer(const Checkpoint& ckpt, int64_t i, WeightFormat format);
  void run(const std::vector<const std::vector<int32_t>*>& rows, float* out, DebugTrace* trace) const;

  // Row `id` of the word embedding table as floats.
  const float* word_row(int32_t id, float* scratch) const;

  XlmrSpec spec_;
  // The word embedding table (a quarter to a half of XLM-R's weights): a float view of f32
  // storage, or an f16 file's rows kept as stored and widened on lookup (exact), so that loading
  // an f16 file never holds a float copy of it.
  Checkpoint::SharedF32 word_;
  const uint16_t* word_f16_ = nullptr;
  std::shared_ptr<const void> word_f16_owner_;
  std::vector<float> position_, token_type_;
  LayerNormParams ln_embed_;
  std::vector<Layer> layers_;
  Linear head0_, head1_;  // head1_ empty for M-CLIP's single layer
};

// The same computation in plain scalar code with double accumulation, straight from the
// checkpoint's tensors (for tests). Same trace keys.
void xlmr_reference_encode(const Checkpoint& ckpt, const XlmrSpec& spec, const std::vector<std::vector<int32_t>>& rows,
                           float* out, DebugTrace* trace);

// The mask of a row: 1 where the token is attended and pooled.
std::vector<uint8_t> xlmr_mask(const std::vector<int32_t>& row, bool mask_pad_ids);
// Hugging Face create_position_ids_from_input_ids: cumsum(ids != 1) * (ids != 1) + 1.
std::vector<int32_t> xlmr_positions(const std::vector<int32_t>& row);

}  // namespace clipkit
