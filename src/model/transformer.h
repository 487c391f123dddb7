// The pre-LN residual attention blocks shared by the ViT image tower and the text tower
// (clip.model.Transformer): x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "clipkit/model.h"
#include "io/checkpoint.h"
#include "kernels/linear.h"

namespace clipkit {

// float32 copies of a LayerNorm's parameters, shape-checked.
struct LayerNormParams {
  std::vector<float> weight, bias;
  LayerNormParams() = default;
  LayerNormParams(const Checkpoint& ckpt, const std::string& prefix, int64_t width);  // prefix + "weight"/"bias"
  void apply(const float* x, int64_t rows, float* y) const;                         // eps 1e-5
  // apply, then the int8 row quantisation of the result (kernels/layernorm.h).
  void apply_quantized(const float* x, int64_t rows, uint8_t* q, float* scale) const;
  int64_t parameter_count() const { return static_cast<int64_t>(weight.size() + bias.size()); }
};

// Linear layer from checkpoint tensors `prefix + "weight"` [out, in] and `prefix + "bias"` [out].
// A weight stored int8 (`clipkit convert --dtype int8`) gives an int8 layer as stored when `format`
// is Int8; a weight stored in the kernels' layout (`clipkit convert`) is used in place when its
// element type is `format`'s and its layout this CPU's (otherwise packed again from its values).
Linear load_linear(const Checkpoint& ckpt, const std::string& weight_name, const std::string& bias_name, int64_t in,
                   int64_t out, WeightFormat format);
// The same for rows [row0, row0 + rows) of a weight of any shape whose first axis is the output
// (a patch convolution: its other axes flatten to `in`), with the bias given.
Linear load_linear_rows(const Checkpoint& ckpt, const std::string& weight_name, const Shape& shape, int64_t row0,
                        int64_t rows, std::vector<float> bias, WeightFormat format);

// One layer from weights stacked by rows: `prefix + "weight"` [out_each, in] and `prefix + "bias"`
// [out_each] for each prefix (attention's query, key and value as one layer), the layer
// load_linear would make of their concatenation. Weights stored in the kernels' layout whose
// pieces lie one after the other in the file (as `clipkit convert` writes them) are used in place
// as one weight; otherwise the parts are gathered and packed.
Linear load_linear_stacked(const Checkpoint& ckpt, const std::vector<std::string>& prefixes, int64_t in,
                           int64_t out_each, WeightFormat format);

// What `clipkit convert` stores: every layer loaded through these functions, with the tensor and
// rows it came from. A sink set here (by the thread that then loads a model; layers may be loaded
// on several threads) collects them; nullptr stops collecting.
struct LoadedLayer {
  std::string tensor;
  int64_t row0 = 0;
  Linear layer;
  // The tensor's rows are the layer's rows [layer_row0, layer_row0 + rows) (load_linear_stacked);
  // rows 0: the layer is the tensor's rows [row0, row0 + out) alone.
  int64_t layer_row0 = 0, rows = 0;
};
void set_loaded_layer_sink(std::vector<LoadedLayer>* sink);

WeightFormat weight_format_from(const ModelOptions& options);

// The same layer as two: output channels [0, split) and [split, out), each what load_linear
// would make of those rows of the weight (int8: the same per-channel integers and scales).
std::pair<Linear, Linear> load_linear_split(const Checkpoint& ckpt, const std::string& weight_name,
                                            const std::string& bias_name, int64_t in, int64_t out, int64_t split,
                                            WeightFormat format);

// Memory held by a loaded Linear layer: packed weights, bias and (int8) per-channel tables.
int64_t linear_bytes(const Linear& l);

// Stores batch item 0's activation under `key` (no-op when trace is null).
void trace_store(DebugTrace* trace, const std::string& key, const float* data, int64_t n);

class Transformer {
 public:
  Transformer() = default;
  // prefix: "visual.transformer." or "transformer."; blocks are prefix + "resblocks.{i}.".
  Transformer(const Checkpoint& ckpt, const std::string& prefix, int64_t width, int layers, int heads, Activation act,
              WeightFormat format);

  // x: [batch * seq, width], updated in place. With a trace, batch item 0's residual stream after
  // block i is stored under trace_prefix + "block{i}".
  void forward(float* x, int64_t batch, int64_t seq, bool causal, DebugTrace* trace,
               const std::string& trace_prefix) const;

  // The same, when only one row per batch item is wanted at the output (the text tower's pooled
  // end-of-text token, the image tower's class token): every block but the last runs on all rows;
  // the last computes keys and values for all rows but queries, attention, out_proj and the MLP
  // only for rows keep[b]. The result rows go to out [batch, width] (x is used as scratch). No trace.
  void forward_rows(float* x, int64_t batch, int64_t seq, bool causal, const int64_t* keep, float* out) const;

  int64_t width() const { return width_; }
  int64_t parameter_count() const;
  int64_t weight_bytes() const;  // packed Linear weights + f32 biases and layernorms

 private:
  // Returns true when it leaves the int8 ln_1 rows of block `count` in the work buffers.
  bool run_blocks(float* x, int64_t batch, int64_t seq, bool causal, size_t count, DebugTrace* trace,
                  const std::string& trace_prefix) const;
  struct Block {
    LayerNormParams ln_1, ln_2;
    // in_proj, or in the last block its q rows and its k, v rows as two layers (q_proj, kv_proj):
    // forward_rows projects keys and values for every row but queries for the kept rows only.
    Linear in_proj, q_proj, kv_proj, out_proj, c_fc, c_proj;
    bool split() const { return q_proj.out_features() > 0; }
  };
  int64_t width_ = 0;
  int heads_ = 0;
  int64_t mlp_width_ = 0;
  Activation act_ = Activation::QuickGelu;
  std::vector<Block> blocks_;
};

}  // namespace clipkit
