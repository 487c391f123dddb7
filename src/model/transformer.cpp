#include "model/transformer.h"

#include <algorithm>

#include "clipkit/error.h"
#include "kernels/attention.h"
#include "kernels/layernorm.h"

namespace clipkit {

LayerNormParams::LayerNormParams(const Checkpoint& ckpt, const std::string& prefix, int64_t width)
    : weight(ckpt.f32(prefix + "weight", {width})), bias(ckpt.f32(prefix + "bias", {width})) {}

void LayerNormParams::apply(const float* x, int64_t rows, float* y) const {
  layernorm(x, rows, static_cast<int64_t>(weight.size()), weight.data(), bias.data(), 1e-5f, y);
}

Linear load_linear(const Checkpoint& ckpt, const std::string& weight_name, const std::string& bias_name, int64_t in,
                   int64_t out, WeightFormat format) {
  const Checkpoint::F32Span w = ckpt.f32_span(weight_name, {out, in});
  std::vector<float> b;
  if (!bias_name.empty()) b = ckpt.f32(bias_name, {out});
  Linear l(w.data, std::move(b), in, out, format);
  ckpt.release_pages(weight_name);  // the layer holds its own packed copy now
  return l;
}

WeightFormat weight_format_from(const ModelOptions& options) {
  if (options.dtype == "f32" || options.dtype.empty()) return WeightFormat::F32;
  if (options.dtype == "f16") return WeightFormat::F16;
  if (options.dtype == "int8") return WeightFormat::Int8;
  throw Error(ErrorCode::InvalidArgument, "unknown compute dtype '" + options.dtype + "' (expected f32, f16 or int8)");
}

void trace_store(DebugTrace* trace, const std::string& key, const float* data, int64_t n) {
  if (!trace) return;
  (*trace)[key].assign(data, data + n);
}

Transformer::Transformer(const Checkpoint& ckpt, const std::string& prefix, int64_t width, int layers, int heads,
                         Activation act, WeightFormat format)
    : width_(width), heads_(heads), act_(act) {
  if (layers <= 0) throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': '" + prefix + "' has no blocks");
  const std::string first = prefix + "resblocks.0.mlp.c_fc.weight";
  const Tensor& fc = ckpt.get(first);
  if (fc.shape.size() != 2 || fc.shape[1] != width || fc.shape[0] <= 0)
    throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': tensor '" + first + "' has shape " +
                                      shape_str(fc.shape) + ", expected [hidden, " + std::to_string(width) + "]");
  mlp_width_ = fc.shape[0];
  blocks_.resize(static_cast<size_t>(layers));
  for (int i = 0; i < layers; ++i) {
    const std::string p = prefix + "resblocks." + std::to_string(i) + ".";
    Block& b = blocks_[static_cast<size_t>(i)];
    b.ln_1 = LayerNormParams(ckpt, p + "ln_1.", width);
    b.ln_2 = LayerNormParams(ckpt, p + "ln_2.", width);
    b.in_proj = load_linear(ckpt, p + "attn.in_proj_weight", p + "attn.in_proj_bias", width, 3 * width, format);
    b.out_proj = load_linear(ckpt, p + "attn.out_proj.weight", p + "attn.out_proj.bias", width, width, format);
    b.c_fc = load_linear(ckpt, p + "mlp.c_fc.weight", p + "mlp.c_fc.bias", width, mlp_width_, format);
    b.c_proj = load_linear(ckpt, p + "mlp.c_proj.weight", p + "mlp.c_proj.bias", mlp_width_, width, format);
  }
}

int64_t Transformer::parameter_count() const {
  int64_t n = 0;
  for (const auto& b : blocks_)
    n += b.ln_1.parameter_count() + b.ln_2.parameter_count() + b.in_proj.parameter_count() +
         b.out_proj.parameter_count() + b.c_fc.parameter_count() + b.c_proj.parameter_count();
  return n;
}

void Transformer::forward(float* x, int64_t batch, int64_t seq, bool causal, DebugTrace* trace,
                          const std::string& trace_prefix) const {
  const int64_t rows = batch * seq;
  if (rows == 0) return;
  // Grow-only per-thread work buffers: no allocation (and no page faults) per call once warm.
  thread_local std::vector<float> h_buf, qkv_buf, hidden_buf;
  auto grow = [](std::vector<float>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    return v.data();
  };
  float* h = grow(h_buf, rows * width_);
  float* qkv = grow(qkv_buf, rows * 3 * width_);
  float* hidden = grow(hidden_buf, rows * mlp_width_);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const Block& b = blocks_[i];
    b.ln_1.apply(x, rows, h);
    b.in_proj.forward(h, rows, qkv);
    multi_head_attention(qkv, batch, seq, width_, heads_, causal, h);
    b.out_proj.forward_accumulate(h, rows, x);
    b.ln_2.apply(x, rows, h);
    b.c_fc.forward(h, rows, hidden, act_);
    b.c_proj.forward_accumulate(hidden, rows, x);
    trace_store(trace, trace_prefix + "block" + std::to_string(i), x, seq * width_);
  }
}

}  // namespace clipkit
