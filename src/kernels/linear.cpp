// Linear layers: building a layer (f32, f16, int8 weights packed for oneDNN) and running it. The
// layer's state is in linear_impl.h; packed layouts in files in linear_packed.cpp.
#include "kernels/linear_impl.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>

namespace clipkit {

namespace {

// forward_quantized_to_quantized splits a float product larger than this into two halves of rows.
constexpr int64_t kSplitProductBytes = int64_t{4} << 20;

}  // namespace

WeightFormat parse_weight_format(const std::string& name) {
  if (name == "f32" || name == "fp32" || name == "float32") return WeightFormat::F32;
  if (name == "f16" || name == "fp16" || name == "float16" || name == "half") return WeightFormat::F16;
  if (name == "int8" || name == "i8") return WeightFormat::Int8;
  throw Error(ErrorCode::InvalidArgument, "unknown weight dtype '" + name + "' (expected f32, f16 or int8)");
}

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32: return "f32";
    case WeightFormat::F16: return "f16";
    case WeightFormat::Int8: return "int8";
  }
  return "?";
}

namespace {

const float* checked_weight(const std::vector<float>& weight, int64_t in, int64_t out) {
  linear_detail::check_finite_shape(in, out);
  if (static_cast<int64_t>(weight.size()) != in * out)
    throw Error(ErrorCode::Shape, "linear layer weight has " + std::to_string(weight.size()) + " values, expected " +
                                      std::to_string(in * out));
  return weight.data();
}

}  // namespace

Linear::Linear(std::vector<float> weight, std::vector<float> bias, int64_t in, int64_t out, WeightFormat format)
    : Linear(checked_weight(weight, in, out), std::move(bias), in, out, format) {}

Linear::Linear(const float* weight, std::vector<float> bias, int64_t in, int64_t out, WeightFormat format)
    : in_(in), out_(out), bias_count_(static_cast<int64_t>(bias.size())), format_(format) {
  linear_detail::check_finite_shape(in, out);
  if (weight == nullptr) throw Error(ErrorCode::InvalidArgument, "linear layer built from a null weight array");
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != out)
    throw Error(ErrorCode::Shape, "linear layer bias has " + std::to_string(bias.size()) + " values, expected " +
                                      std::to_string(out));
  if (format == WeightFormat::Int8) {
    const QuantizedWeights qw = quantize_weights_int8(weight, out, in);
    *this = from_int8(qw.q, qw.scale, std::move(bias), in, out);
    return;
  }
  auto impl = std::make_shared<Impl>();
  impl->in = in;
  impl->out = out;
  impl->format = format;
  impl->bias = std::move(bias);
  try {
    if (format == WeightFormat::F16)
      impl->pack_half(weight);
    else
      impl->pack(weight);
  } catch (const dnnl::error& err) {
    throw Error(ErrorCode::Internal, "packing a " + std::to_string(out) + "x" + std::to_string(in) +
                                         " linear weight failed: " + onednn::describe(err));
  }
  impl_ = std::move(impl);
}

Linear Linear::from_int8(const std::vector<int8_t>& q, const std::vector<float>& scale, std::vector<float> bias,
                         int64_t in, int64_t out) {
  linear_detail::check_finite_shape(in, out);
  if (static_cast<int64_t>(q.size()) != in * out)
    throw Error(ErrorCode::Shape, "int8 linear weight has " + std::to_string(q.size()) + " values, expected " +
                                      std::to_string(in * out));
  if (static_cast<int64_t>(scale.size()) != out)
    throw Error(ErrorCode::Shape, "int8 linear weight has " + std::to_string(scale.size()) + " scales, expected " +
                                      std::to_string(out));
  return from_int8(q.data(), scale.data(), std::move(bias), in, out);
}

Linear Linear::from_int8(const int8_t* q, const float* scale_data, std::vector<float> bias, int64_t in, int64_t out) {
  linear_detail::check_finite_shape(in, out);
  if (q == nullptr || scale_data == nullptr)
    throw Error(ErrorCode::InvalidArgument, "int8 linear layer built from a null array");
  const std::vector<float> scale(scale_data, scale_data + out);
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != out)
    throw Error(ErrorCode::Shape, "linear layer bias has " + std::to_string(bias.size()) + " values, expected " +
                                      std::to_string(out));
  for (float s : scale)
    if (!std::isfinite(s) || s < 0.0f) throw Error(ErrorCode::InvalidArgument, "int8 linear weight has an invalid scale");
  Linear l;
  l.in_ = in;
  l.out_ = out;
  l.bias_count_ = static_cast<int64_t>(bias.size());
  l.format_ = WeightFormat::Int8;
  auto impl = std::make_shared<Impl>();
  impl->in = in;
  impl->out = out;
  impl->format = WeightFormat::Int8;
  impl->bias = std::move(bias);
  impl->out_scale = scale;
  impl->zero_shift.resize(static_cast<size_t>(out));
  // |sum| <= 127 · in, exact in int32 for any layer width below 16 million.
#pragma omp parallel for schedule(static) if (out * in > (1 << 16))
  for (int64_t o = 0; o < out; ++o) {
    const int8_t* row = q + o * in;
    int32_t sum = 0;
    for (int64_t i = 0; i < in; ++i) sum += row[i];
    impl->zero_shift[static_cast<size_t>(o)] = static_cast<float>(128.0 * static_cast<double>(sum) * scale[static_cast<size_t>(o)]);
  }
  try {
    impl->pack(q);
  } catch (const dnnl::error& err) {
    throw Error(ErrorCode::Internal, "packing a " + std::to_string(out) + "x" + std::to_string(in) +
                                         " int8 linear weight failed: " + onednn::describe(err));
  }
  l.impl_ = std::move(impl);
  return l;
}

int64_t Linear::weight_bytes() const {
  if (!impl_) return 0;
  if (format_ == WeightFormat::F16) {
    int64_t bytes = 0;
    for (const auto& ch : impl_->chunks) bytes += static_cast<int64_t>(ch.desc.get_size() / 2);
    return bytes;
  }
  return static_cast<int64_t>(impl_->packed_desc.get_size());
}

namespace {

void check_forward(const Linear& l, const void* impl, const float* x, int64_t rows, const float* y) {
  if (!impl) throw Error(ErrorCode::Internal, "forward on an empty (default-constructed) linear layer");
  if (rows < 0) throw Error(ErrorCode::Shape, "linear layer called with a negative row count");
  if (rows > 0 && (x == nullptr || y == nullptr))
    throw Error(ErrorCode::InvalidArgument, "linear layer called with a null buffer");
  (void)l;
}

void sync_threads() { apply_thread_setting(); }

}  // namespace

void Linear::forward(const float* x, int64_t rows, float* y, Activation act) const {
  check_forward(*this, impl_.get(), x, rows, y);
  if (rows == 0) return;
  sync_threads();
  if (format_ != WeightFormat::Int8) {
    impl_->run(x, rows, y, act, false);
    return;
  }
  thread_local WorkVector<uint8_t> qbuf;
  thread_local std::vector<float> sbuf;
  uint8_t* q = onednn::grow(qbuf, static_cast<size_t>(rows * in_));
  float* s = onednn::grow(sbuf, static_cast<size_t>(rows));
  quantize_rows_u8_offset(x, rows, in_, q, s);
  forward_quantized(q, s, rows, y, act);
}

void Linear::forward_accumulate(const float* x, int64_t rows, float* y) const {
  check_forward(*this, impl_.get(), x, rows, y);
  if (rows == 0) return;
  sync_threads();
  if (format_ != WeightFormat::Int8) {
    impl_->run(x, rows, y, Activation::None, true);
    return;
  }
  thread_local WorkVector<uint8_t> qbuf;
  thread_local std::vector<float> sbuf;
  uint8_t* q = onednn::grow(qbuf, static_cast<size_t>(rows * in_));
  float* s = onednn::grow(sbuf, static_cast<size_t>(rows));
  quantize_rows_u8_offset(x, rows, in_, q, s);
  forward_quantized_accumulate(q, s, rows, y);
}

namespace {

void check_quantized(const Linear& l, const void* impl, const uint8_t* q, const float* row_scale, int64_t rows,
                     const void* y) {
  if (!impl) throw Error(ErrorCode::Internal, "forward on an empty (default-constructed) linear layer");
  if (l.format() != WeightFormat::Int8)
    throw Error(ErrorCode::InvalidArgument, std::string("quantised input given to a ") + weight_format_name(l.format()) +
                                                " linear layer (int8 layers only)");
  if (rows < 0) throw Error(ErrorCode::Shape, "linear layer called with a negative row count");
  if (rows > 0 && (q == nullptr || row_scale == nullptr || y == nullptr))
    throw Error(ErrorCode::InvalidArgument, "linear layer called with a null buffer");
}

}  // namespace

void Linear::forward_quantized(const uint8_t* q, const float* row_scale, int64_t rows, float* y, Activation act) const {
  check_quantized(*this, impl_.get(), q, row_scale, rows, y);
  if (rows == 0) return;
  sync_threads();
  impl_->run(q, rows, y, Activation::None, false);  // y = acc, scaled by the epilogue
  int8_epilogue(y, row_scale, impl_->zero_shift, impl_->bias, rows, out_, y, act, false, impl_->out_scale.data());
}

void Linear::forward_quantized_raw(const uint8_t* q, int64_t rows, float* t) const {
  const float dummy_scale = 1.0f;
  check_quantized(*this, impl_.get(), q, &dummy_scale, rows, t);
  if (rows == 0) return;
  sync_threads();
  impl_->run(q, rows, t, Activation::None, false, /*scaled=*/true);  // t = acc * weight_scale
}

void Linear::forward_quantized_sum(const uint8_t* q, int64_t rows, float* t) const {
  const float dummy_scale = 1.0f;
  check_quantized(*this, impl_.get(), q, &dummy_scale, rows, t);
  if (rows == 0) return;
  sync_threads();
  impl_->run(q, rows, t, Activation::None, false);
}

const float* Linear::weight_scale() const {
  if (!impl_ || format_ != WeightFormat::Int8)
    throw Error(ErrorCode::InvalidArgument, "weight_scale() asked of a linear layer that is not int8");
  return impl_->out_scale.data();
}

const float* Linear::zero_shift() const {
  if (!impl_ || format_ != WeightFormat::Int8)
    throw Error(ErrorCode::InvalidArgument, "zero_shift() asked of a linear layer that is not int8");
  return impl_->zero_shift.data();
}

const float* Linear::bias() const {
  if (!impl_) throw Error(ErrorCode::Internal, "bias() of an empty (default-constructed) linear layer");
  return impl_->bias.empty() ? nullptr : impl_->bias.data();
}

void Linear::forward_quantized_accumulate(const uint8_t* q, const float* row_scale, int64_t rows, float* y) const {
  check_quantized(*this, impl_.get(), q, row_scale, rows, y);
  if (rows == 0) return;
  sync_threads();
  thread_local WorkVector<float> tbuf;
  float* t = onednn::grow(tbuf, static_cast<size_t>(rows * out_));
  impl_->run(q, rows, t, Activation::None, false);
  int8_epilogue(t, row_scale, impl_->zero_shift, impl_->bias, rows, out_, y, Activation::None, true,
                impl_->out_scale.data());
}

namespace {

// A large float product (c_fc's: 800 × 3072 values, 9.8 MB, for 16 ViT-B/32 images) is made
// in two halves of rows, each quantised right after: 2.7–4.3 % faster on the whole ViT-B/32 int8
// model than one pass, measured batch by batch in one process; three or four parts were not.
int64_t to_quantized_chunk_rows(int64_t rows, int64_t out) {
  const int64_t parts = rows >= 2 && rows * out * static_cast<int64_t>(sizeof(float)) > kSplitProductBytes ? 2 : 1;
  return (rows + parts - 1) / parts;
}

}  // namespace

int64_t Linear::to_quantized_scratch_floats(int64_t rows) const {
  return rows <= 0 ? 0 : to_quantized_chunk_rows(rows, out_) * out_;
}

void Linear::forward_quantized_to_quantized(const uint8_t* q, const float* row_scale, int64_t rows, uint8_t* q_out,
                                            float* scale_out, Activation act, float* scratch) const {
  check_quantized(*this, impl_.get(), q, row_scale, rows, q_out);
  if (rows > 0 && scale_out == nullptr) throw Error(ErrorCode::InvalidArgument, "linear layer called with a null buffer");
  if (rows == 0) return;
  sync_threads();
  const int64_t chunk = to_quantized_chunk_rows(rows, out_);
  thread_local WorkVector<float> tbuf;
  float* t = scratch ? scratch : onednn::grow(tbuf, static_cast<size_t>(chunk * out_));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    impl_->run(q + r0 * in_, n, t, Activation::None, false);
    int8_epilogue_quantize(t, row_scale + r0, impl_->zero_shift, impl_->bias, n, out_, act, q_out + r0 * out_,
                           scale_out + r0, impl_->out_scale.data());
  }
}

void apply_activation(float* x, int64_t n, Activation act) {
  switch (act) {
    case Activation::None: return;
    case Activation::QuickGelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-1.702f * x[i]));
      return;
    case Activation::Gelu:
      for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
      return;
  }
}

void linear_reference(const float* x, int64_t rows, const float* weight, const float* bias, int64_t in, int64_t out,
                      float* y, Activation act) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = bias ? bias[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) acc += static_cast<double>(x[r * in + i]) * weight[o * in + i];
      y[r * out + o] = static_cast<float>(acc);
    }
  apply_activation(y, rows * out, act);
}

}  // namespace clipkit
