// A linear layer y = x · Wᵀ + b with weights packed once at load for the GEMM backend.
// Every projection in the encoders goes through this class, so the weight storage
// (f32, f16, int8) is decided here and nowhere else.
//
// Backend (see docs/performance.md): a oneDNN matmul primitive whose weights are reordered once,
// at construction, into the blocked layout the CPU's kernel wants; bias, activation and the
// residual sum are fused as post-ops. Primitives are created lazily per row count and cached
// (behind a mutex), f32 and f16 ones once per process for all the layers of one shape (int8 ones
// hold their layer's scales); forward() is const and may run from several threads at once.
//
//   F32  — packed f32 weights.
//   F16  — packed weights stored as IEEE half (half the memory); each forward widens them to a
//          per-thread f32 buffer and runs the f32 kernel (fp32 math).
//   Int8 — per-output-channel symmetric int8 weights (kernels/int8.h), per-row dynamic int8
//          activations, int32 accumulation (AVX-512 VNNI where present), dequantised in f32,
//          then bias and activation.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace clipkit {

struct PackedWeight;  // core/packed_weight.h

enum class Activation { None, QuickGelu, Gelu };

enum class WeightFormat { F32, F16, Int8 };

// "f32" | "f16" | "int8" (also "fp32", "float32", "fp16", "float16", "half"); throws Error otherwise.
WeightFormat parse_weight_format(const std::string& name);
const char* weight_format_name(WeightFormat f);

class Linear {
 public:
  Linear() = default;
  // weight: [out, in] row-major (PyTorch layout); bias: [out] or empty.
  Linear(std::vector<float> weight, std::vector<float> bias, int64_t in, int64_t out,
         WeightFormat format = WeightFormat::F32);
  // The same from a borrowed [out, in] array (e.g. a view into a mapped checkpoint): only read
  // while constructing, never kept.
  Linear(const float* weight, std::vector<float> bias, int64_t in, int64_t out,
         WeightFormat format = WeightFormat::F32);
  // Int8 layer from already-quantised weights: q [out, in], one scale per output channel.
  static Linear from_int8(const std::vector<int8_t>& q, const std::vector<float>& scale, std::vector<float> bias,
                          int64_t in, int64_t out);
  // The same from arrays of out·in weights and out scales (e.g. straight from a checkpoint file).
  static Linear from_int8(const int8_t* q, const float* scale, std::vector<float> bias, int64_t in, int64_t out);

  // A layer for rows [row0, row0 + out) of a weight stored in a kernel layout (`clipkit convert`,
  // core/packed_weight.h) whose element type matches `format` (Error(Internal) otherwise). The
  // stored bytes are used in place (kept alive through w.owner) when their layout is the one this
  // CPU's kernels choose for the layer; otherwise their values are read out and packed as a plain
  // weight's would be (`*in_place` tells which). Int8: `scale` holds the rows' out weight scales.
  // Either way the layer computes the same bits as one built from the plain weights.
  static Linear from_packed(const PackedWeight& w, int64_t row0, int64_t out, std::vector<float> bias,
                            WeightFormat format, const float* scale = nullptr, bool* in_place = nullptr);
  // The packed weights as the kernels hold them, for storing (pieces point into this layer's memory,
  // valid while it or a copy lives). False when the kernels' layout is not a plain blocked one.
  bool packed_weight(PackedWeight& out) const;

  // y[rows, out] = act(x[rows, in] · Wᵀ + b). x and y must not alias.
  void forward(const float* x, int64_t rows, float* y, Activation act = Activation::None) const;
  // y += x · Wᵀ + b (for residual connections).
  void forward_accumulate(const float* x, int64_t rows, float* y) const;

  // Int8 layers only (Error otherwise): the same products from input rows the caller quantised
  // already, as quantize_rows_u8_offset does (kernels/int8.h: q [rows, in] bytes, value + 128, and
  // one scale per row). Bit for bit what forward / forward_accumulate give on the float rows.
  void forward_quantized(const uint8_t* q, const float* row_scale, int64_t rows, float* y,
                         Activation act = Activation::None) const;
  void forward_quantized_accumulate(const uint8_t* q, const float* row_scale, int64_t rows, float* y) const;
  // ... and with the output quantised the same way (q_out [rows, out], scale_out [rows]) instead
  // of stored as floats: the input of the next int8 layer, without the float rows in memory.
  // The float product is made in a work buffer: `scratch` when given (it must hold
  // to_quantized_scratch_floats(rows) floats; a caller lends one it has no use for at that moment,
  // so that fewer distinct buffers compete for the cache), else a buffer of the calling thread's.
  void forward_quantized_to_quantized(const uint8_t* q, const float* row_scale, int64_t rows, uint8_t* q_out,
                                      float* scale_out, Activation act = Activation::None,
                                      float* scratch = nullptr) const;
  int64_t to_quantized_scratch_floats(int64_t rows) const;
  // ... and without the epilogue, for a consumer that applies it while reading: t[r, n] =
  // weight_scale[n] · Σ_k q[r, k] · w[n, k], from which forward_quantized's output (no activation)
  // is, bit for bit, int8_dequantize_row(t row, zero_shift(), bias(), row_scale[r]) (kernels/int8.h).
  void forward_quantized_raw(const uint8_t* q, int64_t rows, float* t) const;
  // ... and without the weight scales either: t[r, n] = Σ_k q[r, k] · w[n, k] as a float (the
  // raw product is t[r, n] · weight_scale()[n], rounded once), for a consumer that also applies
  // the weight scales as it reads (int8_dequantize_row's col_scale). Layers of one shape share
  // one oneDNN primitive here, where a raw product's primitive is the layer's own (oneDNN 2.x
  // fixes the weight scales when the primitive is made): fewer kernels made by a first call.
  void forward_quantized_sum(const uint8_t* q, int64_t rows, float* t) const;
  // Int8 layers: the per-output-channel offset term of that epilogue ([out]).
  const float* zero_shift() const;
  // Int8 layers: the per-output-channel weight scales ([out]).
  const float* weight_scale() const;
  // The bias ([out]), or nullptr when the layer has none.
  const float* bias() const;

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  int64_t parameter_count() const { return in_ * out_ + bias_count_; }
  WeightFormat format() const { return format_; }
  // Bytes held for the packed weights (after conversion).
  int64_t weight_bytes() const;

  struct Impl;

 private:
  int64_t in_ = 0, out_ = 0, bias_count_ = 0;
  WeightFormat format_ = WeightFormat::F32;
  std::shared_ptr<Impl> impl_;  // shared between copies; immutable apart from the primitive cache
};

// The CPU features oneDNN's kernels use here ("avx512_core_vnni", ...), recorded beside stored layouts.
std::string packed_layout_isa();

// Applies an activation in place (scalar-exact definitions: QuickGELU x·σ(1.702x), GELU erf form).
void apply_activation(float* x, int64_t n, Activation act);

// The plain scalar definition of Linear::forward (double accumulation), for tests.
void linear_reference(const float* x, int64_t rows, const float* weight, const float* bias, int64_t in, int64_t out,
                      float* y, Activation act);

}  // namespace clipkit
