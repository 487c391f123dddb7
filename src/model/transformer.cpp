#include "model/transformer.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <tuple>

#include "clipkit/error.h"
#include "core/packed_weight.h"
#include "kernels/attention.h"
#include "kernels/int8.h"
#include "kernels/layernorm.h"
#include "kernels/work_memory.h"

namespace clipkit {

LayerNormParams::LayerNormParams(const Checkpoint& ckpt, const std::string& prefix, int64_t width)
    : weight(ckpt.f32(prefix + "weight", {width})), bias(ckpt.f32(prefix + "bias", {width})) {}

void LayerNormParams::apply(const float* x, int64_t rows, float* y) const {
  layernorm(x, rows, static_cast<int64_t>(weight.size()), weight.data(), bias.data(), 1e-5f, y);
}

void LayerNormParams::apply_quantized(const float* x, int64_t rows, uint8_t* q, float* scale) const {
  layernorm_quantize_u8(x, rows, static_cast<int64_t>(weight.size()), weight.data(), bias.data(), 1e-5f, q, scale);
}

namespace {

std::mutex g_sink_mutex;
std::vector<LoadedLayer>* g_sink = nullptr;

void record(const std::string& tensor, int64_t row0, const Linear& layer, int64_t layer_row0 = 0, int64_t rows = 0) {
  std::lock_guard<std::mutex> lock(g_sink_mutex);
  if (g_sink) g_sink->push_back({tensor, row0, layer, layer_row0, rows});
}

// Layers may load on several threads at once.
void count_repacked(const Checkpoint& ckpt) {
  std::lock_guard<std::mutex> lock(g_sink_mutex);
  ++ckpt.packed_repacked;
}

bool packed_matches(const PackedWeight& w, WeightFormat format) {
  switch (format) {
    case WeightFormat::F32: return w.dtype == DType::F32;
    case WeightFormat::F16: return w.dtype == DType::F16;
    case WeightFormat::Int8: return w.dtype == DType::I8;
  }
  return false;
}

}  // namespace

void set_loaded_layer_sink(std::vector<LoadedLayer>* sink) {
  std::lock_guard<std::mutex> lock(g_sink_mutex);
  g_sink = sink;
}

Linear load_linear_rows(const Checkpoint& ckpt, const std::string& weight_name, const Shape& shape, int64_t row0,
                        int64_t rows, std::vector<float> bias, WeightFormat format) {
  const Tensor& t = ckpt.get(weight_name);
  if (t.shape != shape)
    throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': tensor '" + weight_name + "' has shape " +
                                      shape_str(t.shape) + ", expected " + shape_str(shape));
  if (shape.empty() || row0 < 0 || rows < 1 || row0 + rows > shape[0])
    throw Error(ErrorCode::Internal, "rows " + std::to_string(row0) + "+" + std::to_string(rows) + " of tensor '" +
                                         weight_name + "'");
  const int64_t in = shape_numel(shape) / shape[0];
  Linear l;
  if (t.packed && packed_matches(*t.packed, format)) {
    // Stored in the kernels' layout by `clipkit convert`: used in place where it is this CPU's.
    bool in_place = false;
    l = Linear::from_packed(*t.packed, row0, rows, std::move(bias), format,
                            t.row_scale ? t.row_scale->data() + row0 : nullptr, &in_place);
    if (!in_place) count_repacked(ckpt);
  } else if (format == WeightFormat::Int8 && t.is_quantized_int8() && !t.packed) {
    // Stored int8 (`clipkit convert --dtype int8`): the integers and scales are used as they are.
    l = Linear::from_int8(static_cast<const int8_t*>(t.data) + row0 * in, t.row_scale->data() + row0, std::move(bias),
                          in, rows);
  } else {
    const Checkpoint::F32Span w = ckpt.f32_span(weight_name, shape);
    l = Linear(w.data + row0 * in, std::move(bias), in, rows, format);
  }
  record(weight_name, row0, l);
  return l;
}

Linear load_linear(const Checkpoint& ckpt, const std::string& weight_name, const std::string& bias_name, int64_t in,
                   int64_t out, WeightFormat format) {
  std::vector<float> b;
  if (!bias_name.empty()) b = ckpt.f32(bias_name, {out});
  Linear l = load_linear_rows(ckpt, weight_name, {out, in}, 0, out, std::move(b), format);
  ckpt.release_pages(weight_name);  // the layer holds its own packed copy now
  return l;
}

Linear load_linear_stacked(const Checkpoint& ckpt, const std::vector<std::string>& prefixes, int64_t in,
                           int64_t out_each, WeightFormat format) {
  const int64_t parts = static_cast<int64_t>(prefixes.size()), out = parts * out_each;
  if (parts < 1) throw Error(ErrorCode::Internal, "a stacked linear layer of no weights");
  std::vector<float> bias(static_cast<size_t>(out));
  std::vector<const Tensor*> weights;
  bool packed = true, stored_int8 = true;
  for (int64_t i = 0; i < parts; ++i) {
    const std::string& p = prefixes[static_cast<size_t>(i)];
    const std::vector<float> b = ckpt.f32(p + "bias", {out_each});
    std::copy(b.begin(), b.end(), bias.begin() + i * out_each);
    const Tensor& t = ckpt.get(p + "weight");
    if (t.shape != Shape{out_each, in})
      throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': tensor '" + p + "weight' has shape " +
                                        shape_str(t.shape) + ", expected " + shape_str(Shape{out_each, in}));
    packed = packed && t.packed && packed_matches(*t.packed, format) && (format != WeightFormat::Int8 || t.row_scale);
    stored_int8 = stored_int8 && t.is_quantized_int8() && !t.packed;
    weights.push_back(&t);
  }
  std::vector<float> scales;
  if (format == WeightFormat::Int8 && (packed || stored_int8))
    for (const Tensor* t : weights) scales.insert(scales.end(), t->row_scale->begin(), t->row_scale->end());
  Linear l;
  if (packed) {
    std::vector<const PackedWeight*> pw;
    for (const Tensor* t : weights) pw.push_back(t->packed.get());
    bool in_place = false;
    l = Linear::from_packed(PackedWeight::stack(pw), 0, out, std::move(bias), format,
                            scales.empty() ? nullptr : scales.data(), &in_place);
    if (!in_place) count_repacked(ckpt);
  } else if (format == WeightFormat::Int8 && stored_int8) {
    std::vector<int8_t> q(static_cast<size_t>(out * in));
    for (int64_t i = 0; i < parts; ++i)
      std::memcpy(q.data() + i * out_each * in, weights[static_cast<size_t>(i)]->data, static_cast<size_t>(out_each * in));
    l = Linear::from_int8(q.data(), scales.data(), std::move(bias), in, out);
  } else {
    // Uninitialised: every value is written before the layer reads it.
    std::unique_ptr<float[]> w(new float[static_cast<size_t>(out * in)]);
    for (int64_t i = 0; i < parts; ++i) {
      const std::string name = prefixes[static_cast<size_t>(i)] + "weight";
      {
        const Checkpoint::F32Span s = ckpt.f32_span(name, {out_each, in});
        std::copy_n(s.data, out_each * in, w.get() + i * out_each * in);
      }
      ckpt.release_pages(name);
    }
    l = Linear(w.get(), std::move(bias), in, out, format);
  }
  for (int64_t i = 0; i < parts; ++i) record(prefixes[static_cast<size_t>(i)] + "weight", 0, l, i * out_each, out_each);
  return l;
}

std::pair<Linear, Linear> load_linear_split(const Checkpoint& ckpt, const std::string& weight_name,
                                            const std::string& bias_name, int64_t in, int64_t out, int64_t split,
                                            WeightFormat format) {
  if (split <= 0 || split >= out)
    throw Error(ErrorCode::Internal, "tensor '" + weight_name + "' split at " + std::to_string(split) + " of " +
                                         std::to_string(out) + " rows");
  std::vector<float> b0, b1;
  if (!bias_name.empty()) {
    const std::vector<float> b = ckpt.f32(bias_name, {out});
    b0.assign(b.begin(), b.begin() + split);
    b1.assign(b.begin() + split, b.end());
  }
  std::pair<Linear, Linear> parts;
  parts.first = load_linear_rows(ckpt, weight_name, {out, in}, 0, split, std::move(b0), format);
  parts.second = load_linear_rows(ckpt, weight_name, {out, in}, split, out - split, std::move(b1), format);
  ckpt.release_pages(weight_name);
  return parts;
}

WeightFormat weight_format_from(const ModelOptions& options) {
  if (options.dtype == "f32" || options.dtype.empty()) return WeightFormat::F32;
  if (options.dtype == "f16") return WeightFormat::F16;
  if (options.dtype == "int8") return WeightFormat::Int8;
  throw Error(ErrorCode::InvalidArgument, "unknown compute dtype '" + options.dtype + "' (expected f32, f16 or int8)");
}

namespace {

// Grow-only per-thread work buffers for the blocks: no allocation (and no page faults) per call
// once warm. A call that needed more than kKeepFloats gives its buffers back afterwards, so that
// many threads (a server's) do not each keep the largest batch they ever saw.
//
// `wide` holds in_proj's product [rows, 3 · width] until the attention has read it, then c_fc's
// [rows, mlp] (f32) or c_fc's float product before its quantisation (int8): one buffer instead of
// two. Every batch's weights stream from memory through a last-level cache that holds far less
// than them (about 4–16 MB for a process on a 2-core cloud Xeon), so every buffer
// fewer left in the cache counts: 4.5 % more int8 ViT-B/32 images/s at batch 16 and 6.7 % at
// 32, 1.4–2.1 % in f32 (paired, in one process).
struct Workspace {
  WorkVector<float> h, wide;
  // Int8 blocks: rows quantised by their producer (layer norm, c_fc) for the next layer.
  WorkVector<uint8_t> q;
  WorkVector<float> q_scale;
};

constexpr size_t kKeepFloats = size_t{32} << 20;  // 128 MiB per thread (ViT-B/16 at batch 16 needs 78)
// Int8 blocks put out_proj's and c_proj's raw products into in_proj's buffer from this sequence
// length on (short prompts keep them in h: paired, the buffer swap measured about 1 % slower there).
constexpr int64_t kRawInWideMinSeq = 32;

void trim(Workspace& ws) {
  if (ws.h.size() + ws.wide.size() + ws.q.size() / 4 <= kKeepFloats) return;
  ws = Workspace();
}

template <class V>
void grow(V& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

// int8: the float MLP rows are never stored (c_fc hands c_proj quantised rows), the bytes are.
Workspace& workspace(int64_t rows, int64_t width, const Linear& c_fc) {
  thread_local Workspace ws;
  const int64_t mlp_width = c_fc.out_features();
  grow(ws.h, rows * width);
  if (c_fc.format() == WeightFormat::Int8) {
    grow(ws.wide, std::max(rows * 3 * width, c_fc.to_quantized_scratch_floats(rows)));
    grow(ws.q, rows * (width + mlp_width));
    grow(ws.q_scale, 2 * rows);
  } else {
    grow(ws.wide, rows * std::max(3 * width, mlp_width));
  }
  return ws;
}

// ln → linear: for int8 the layer norm writes the quantised rows the layer needs (no float rows).
void norm_then_linear(const LayerNormParams& ln, const Linear& l, const float* x, int64_t rows, Workspace& ws,
                      float* y, Activation act) {
  if (l.format() == WeightFormat::Int8) {
    ln.apply_quantized(x, rows, ws.q.data(), ws.q_scale.data());
    l.forward_quantized(ws.q.data(), ws.q_scale.data(), rows, y, act);
    return;
  }
  ln.apply(x, rows, ws.h.data());
  l.forward(ws.h.data(), rows, y, act);
}

// ln_2 → c_fc → c_proj, added to the residual rows x.
void mlp(const LayerNormParams& ln_2, const Linear& c_fc, const Linear& c_proj, Activation act, float* x, int64_t rows,
         Workspace& ws) {
  const int64_t width = c_fc.in_features();
  if (c_fc.format() == WeightFormat::Int8) {
    // ln_2 → u8 rows → c_fc → u8 rows → c_proj: the float rows of neither layer's input are stored.
    uint8_t* q_in = ws.q.data();
    uint8_t* q_hidden = ws.q.data() + rows * width;
    float* s_in = ws.q_scale.data();
    float* s_hidden = ws.q_scale.data() + rows;
    ln_2.apply_quantized(x, rows, q_in, s_in);
    c_fc.forward_quantized_to_quantized(q_in, s_in, rows, q_hidden, s_hidden, act, ws.wide.data());
    c_proj.forward_quantized_accumulate(q_hidden, s_hidden, rows, x);
    return;
  }
  ln_2.apply(x, rows, ws.h.data());
  c_fc.forward(ws.h.data(), rows, ws.wide.data(), act);
  c_proj.forward_accumulate(ws.wide.data(), rows, x);
}

// x[r, :] += the int8 epilogue of l's sums t[r, :] (Linear::forward_quantized_sum; t_scale: its
// input rows' scales), the value forward_quantized_accumulate adds; then, when ln is given,
// LayerNorm and the int8 quantisation of those rows into q / scale, row by row while each is in
// L1: bit-identical to the epilogue pass followed by ln->apply_quantized, in one pass over the
// rows instead of two.
void residual_then_norm(const float* t, const float* t_scale, const Linear& l, float* x, int64_t rows,
                        const LayerNormParams* ln, uint8_t* q, float* scale) {
  const int64_t dim = l.out_features();
  const float* zs = l.zero_shift();
  const float* bias = l.bias();
  const float* ws = l.weight_scale();
#pragma omp parallel if (rows * dim >= (1 << 16))
  {
    std::vector<float> row(static_cast<size_t>(dim));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* xr = x + r * dim;
      int8_dequantize_row(t + r * dim, zs, bias, t_scale[r], dim, xr, /*accumulate=*/true, ws);
      if (ln)
        scale[r] = layernorm_quantize_row_u8(xr, dim, ln->weight.data(), ln->bias.data(), 1e-5f, row.data(),
                                             q + r * dim);
    }
  }
}

// y [rows, first + second outputs] = the two layers' outputs side by side, as the single layer
// they were split from gives them: run(layer, out) makes a layer's [rows, its outputs].
template <class Run>
void side_by_side(const Linear& first, const Linear& second, int64_t rows, float* y, Run run) {
  const int64_t n0 = first.out_features(), n1 = second.out_features();
  std::vector<float> a(static_cast<size_t>(rows * n0)), b(static_cast<size_t>(rows * n1));
  run(first, a.data());
  run(second, b.data());
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(a.data() + r * n0, n0, y + r * (n0 + n1));
    std::copy_n(b.data() + r * n1, n1, y + r * (n0 + n1) + n0);
  }
}

}  // namespace

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
    if (i + 1 < layers)
      b.in_proj = load_linear(ckpt, p + "attn.in_proj_weight", p + "attn.in_proj_bias", width, 3 * width, format);
    else
      std::tie(b.q_proj, b.kv_proj) =
          load_linear_split(ckpt, p + "attn.in_proj_weight", p + "attn.in_proj_bias", width, 3 * width, width, format);
    b.out_proj = load_linear(ckpt, p + "attn.out_proj.weight", p + "attn.out_proj.bias", width, width, format);
    b.c_fc = load_linear(ckpt, p + "mlp.c_fc.weight", p + "mlp.c_fc.bias", width, mlp_width_, format);
    b.c_proj = load_linear(ckpt, p + "mlp.c_proj.weight", p + "mlp.c_proj.bias", mlp_width_, width, format);
  }
}

int64_t linear_bytes(const Linear& l) {
  // Packed weights, plus the f32 bias (and, for int8, per-channel scale and zero shift).
  const int64_t extra = l.format() == WeightFormat::Int8 ? 3 : 1;
  return l.weight_bytes() + extra * l.out_features() * static_cast<int64_t>(sizeof(float));
}

int64_t Transformer::weight_bytes() const {
  int64_t n = 0;
  for (const auto& b : blocks_)
    for (const Linear* l : {&b.in_proj, &b.q_proj, &b.kv_proj, &b.out_proj, &b.c_fc, &b.c_proj}) n += linear_bytes(*l);
  for (const auto& b : blocks_) n += (b.ln_1.parameter_count() + b.ln_2.parameter_count()) * 4;
  return n;
}

int64_t Transformer::parameter_count() const {
  int64_t n = 0;
  for (const auto& b : blocks_)
    n += b.ln_1.parameter_count() + b.ln_2.parameter_count() + b.in_proj.parameter_count() +
         b.q_proj.parameter_count() + b.kv_proj.parameter_count() + b.out_proj.parameter_count() +
         b.c_fc.parameter_count() + b.c_proj.parameter_count();
  return n;
}

void Transformer::forward(float* x, int64_t batch, int64_t seq, bool causal, DebugTrace* trace,
                          const std::string& trace_prefix) const {
  if (batch * seq == 0) return;
  run_blocks(x, batch, seq, causal, blocks_.size(), trace, trace_prefix);
}

void Transformer::forward_rows(float* x, int64_t batch, int64_t seq, bool causal, const int64_t* keep,
                               float* out) const {
  if (batch * seq == 0) return;
  for (int64_t b = 0; b < batch; ++b)
    if (keep[b] < 0 || keep[b] >= seq)
      throw Error(ErrorCode::Shape, "kept row " + std::to_string(keep[b]) + " is outside [0, " + std::to_string(seq) + ")");
  const bool ln1_ready = run_blocks(x, batch, seq, causal, blocks_.size() - 1, nullptr, "");
  const Block& b = blocks_.back();
  const int64_t rows = batch * seq, w = width_;
  Workspace& ws = workspace(rows, w, b.c_fc);
  const bool int8 = b.kv_proj.format() == WeightFormat::Int8;
  // h: the kept rows' queries, then their attention output, then (f32) ln_1's rows
  grow(ws.h, 2 * batch * w + (int8 ? 0 : rows * w));
  float* queries = ws.h.data();
  float* attn = queries + batch * w;
  float* kv = ws.wide.data();  // [rows, 2 · width]: keys and values of every row
  if (int8) {
    // ln_1's rows are quantised once; k and v stay the raw product, dequantised by the attention
    // as it reads them; the queries are projected for the kept rows alone.
    uint8_t* q = ws.q.data();
    float* s = ws.q_scale.data();
    if (!ln1_ready) b.ln_1.apply_quantized(x, rows, q, s);
    b.kv_proj.forward_quantized_sum(q, rows, kv);
    uint8_t* q_kept = q + rows * w;
    float* s_kept = s + rows;
    for (int64_t i = 0; i < batch; ++i) {
      std::copy_n(q + (i * seq + keep[i]) * w, w, q_kept + i * w);
      s_kept[i] = s[i * seq + keep[i]];
    }
    b.q_proj.forward_quantized(q_kept, s_kept, batch, queries);
    const QkvDequant dq{s, b.kv_proj.zero_shift(), b.kv_proj.bias(), b.kv_proj.weight_scale()};
    multi_head_attention_query_rows(queries, w, kv, 2 * w, batch, seq, w, heads_, causal, keep, attn, &dq);
  } else {
    float* h = attn + batch * w;
    b.ln_1.apply(x, rows, h);
    b.kv_proj.forward(h, rows, kv);
    float* kept = kv + rows * 2 * w;  // wide holds rows · 3 · width floats at least
    for (int64_t i = 0; i < batch; ++i) std::copy_n(h + (i * seq + keep[i]) * w, w, kept + i * w);
    b.q_proj.forward(kept, batch, queries);
    multi_head_attention_query_rows(queries, w, kv, 2 * w, batch, seq, w, heads_, causal, keep, attn);
  }
  for (int64_t i = 0; i < batch; ++i) std::copy_n(x + (i * seq + keep[i]) * w, w, out + i * w);
  b.out_proj.forward_accumulate(attn, batch, out);
  mlp(b.ln_2, b.c_fc, b.c_proj, act_, out, batch, ws);
  trim(ws);
}

bool Transformer::run_blocks(float* x, int64_t batch, int64_t seq, bool causal, size_t count, DebugTrace* trace,
                             const std::string& trace_prefix) const {
  const int64_t rows = batch * seq;
  Workspace& ws = workspace(rows, width_, blocks_[0].c_fc);
  float* h = ws.h.data();
  float* qkv = ws.wide.data();
  bool ln1_ready = false;  // int8: ws.q / ws.q_scale already hold this block's ln_1 rows
  for (size_t i = 0; i < count; ++i) {
    const Block& b = blocks_[i];
    if (b.out_proj.format() == WeightFormat::Int8) {
      // Every int8 epilogue is fused into the step that reads its output (all bit-identical):
      // in_proj's into the attention, which applies it as it reads q, k and v; out_proj's and
      // c_proj's residual adds into the layer norm that follows them.
      uint8_t* q = ws.q.data();
      float* q_scale = ws.q_scale.data();
      float* ln_scale = q_scale + rows;
      if (!ln1_ready) b.ln_1.apply_quantized(x, rows, q, q_scale);
      QkvDequant dq_raw;
      const QkvDequant* dq = &dq_raw;
      if (!b.split()) {
        b.in_proj.forward_quantized_sum(q, rows, qkv);
        dq_raw = QkvDequant{q_scale, b.in_proj.zero_shift(), b.in_proj.bias(), b.in_proj.weight_scale()};
      } else {  // the last block over every row (a trace): q, k and v as one layer's output
        side_by_side(b.q_proj, b.kv_proj, rows, qkv,
                     [&](const Linear& l, float* y) { l.forward_quantized(q, q_scale, rows, y); });
        dq = nullptr;
      }
      // The attention's output goes straight to u8 rows, each item's as soon as its heads are
      // done, and no float copy of it is stored; qkv is free afterwards, so out_proj's and c_proj's
      // raw products reuse it and h stays out of the cache. Paired, ViT-B/32 int8 made 0.5 % more
      // images/s for the first and about 1 % more for the second (batches of 16 to 64, and on
      // ViT-B/16), which replaced an attention that wrote its output over q's columns.
      multi_head_attention_quantized(qkv, batch, seq, width_, heads_, causal, dq, q, q_scale);
      float* t = seq >= kRawInWideMinSeq ? qkv : h;  // out_proj's and c_proj's raw products
      b.out_proj.forward_quantized_sum(q, rows, t);  // the attention's rows are in q now
      residual_then_norm(t, q_scale, b.out_proj, x, rows, &b.ln_2, q, ln_scale);
      uint8_t* q_hidden = q + rows * width_;
      b.c_fc.forward_quantized_to_quantized(q, ln_scale, rows, q_hidden, q_scale, act_, qkv);  // qkv: read already
      b.c_proj.forward_quantized_sum(q_hidden, rows, t);
      // The next block's ln_1 rows, also for forward_rows's last block when it stops before it.
      const bool next = i + 1 < blocks_.size() && blocks_[i + 1].out_proj.format() == WeightFormat::Int8;
      residual_then_norm(t, q_scale, b.c_proj, x, rows, next ? &blocks_[i + 1].ln_1 : nullptr, q, q_scale);
      ln1_ready = next;
    } else {
      if (!b.split()) {
        norm_then_linear(b.ln_1, b.in_proj, x, rows, ws, qkv, Activation::None);
      } else {
        b.ln_1.apply(x, rows, h);
        side_by_side(b.q_proj, b.kv_proj, rows, qkv, [&](const Linear& l, float* y) { l.forward(h, rows, y); });
      }
      multi_head_attention(qkv, batch, seq, width_, heads_, causal, h);
      b.out_proj.forward_accumulate(h, rows, x);
      mlp(b.ln_2, b.c_fc, b.c_proj, act_, x, rows, ws);
    }
    trace_store(trace, trace_prefix + "block" + std::to_string(i), x, seq * width_);
  }
  if (count == blocks_.size()) trim(ws);  // forward_rows still needs them for its last block
  return ln1_ready;
}

}  // namespace clipkit
