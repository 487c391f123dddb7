#include "kernels/conv.h"

// GCC 12 warns about the deliberately undefined vectors inside its own AVX-512 headers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <tuple>
#include <unordered_map>

#include "clipkit/error.h"
#include "core/half.h"
#include "kernels/cpu.h"
#include "kernels/gemm.h"
#include "kernels/int8.h"
#include "kernels/onednn_util.h"

namespace clipkit {

int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding) {
  if (kernel < 1 || stride < 1 || padding < 0)
    throw Error(ErrorCode::Shape, "convolution: invalid kernel " + std::to_string(kernel) + ", stride " +
                                      std::to_string(stride) + " or padding " + std::to_string(padding));
  if (in + 2 * padding < kernel)
    throw Error(ErrorCode::Shape, "convolution: input size " + std::to_string(in) + " (padding " +
                                      std::to_string(padding) + ") is smaller than the kernel size " +
                                      std::to_string(kernel));
  return (in + 2 * padding - kernel) / stride + 1;
}

std::vector<float> fold_batchnorm(std::vector<float>& weight, int64_t out_channels, const float* gamma,
                                  const float* beta, const float* mean, const float* var, double eps,
                                  const std::string& what) {
  if (out_channels <= 0 || weight.size() % static_cast<size_t>(out_channels) != 0)
    throw Error(ErrorCode::Shape, what + ": convolution weight of " + std::to_string(weight.size()) +
                                      " values does not split into " + std::to_string(out_channels) + " channels");
  const size_t per = weight.size() / static_cast<size_t>(out_channels);
  std::vector<float> bias(static_cast<size_t>(out_channels));
  for (int64_t o = 0; o < out_channels; ++o) {
    const double v = static_cast<double>(var[o]) + eps;
    if (!(v > 0.0))
      throw Error(ErrorCode::Shape, what + ": running variance of channel " + std::to_string(o) +
                                        " is negative or not a number");
    const double scale = static_cast<double>(gamma[o]) / std::sqrt(v);
    float* wo = weight.data() + static_cast<size_t>(o) * per;
    for (size_t i = 0; i < per; ++i) wo[i] = static_cast<float>(wo[i] * scale);
    bias[static_cast<size_t>(o)] = static_cast<float>(static_cast<double>(beta[o]) - static_cast<double>(mean[o]) * scale);
  }
  return bias;
}

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using onednn::cpu_engine;
using onednn::grow;
using onednn::thread_stream;

// Primitives cached per convolution (distinct input shapes × variants); beyond this the cache is
// cleared. Weight layouts kept per convolution besides the first; beyond this, extra layouts are
// reordered at every call instead of being kept.
constexpr size_t kMaxCachedPrimitives = 32;
constexpr size_t kMaxWeightLayouts = 4;
// Of those, Winograd layouts (1.78x or 4x the plain weights, and oneDNN wants a different one for
// some batch sizes: up to 4 between batch 1 and 32 on RN50's layers). Beyond this many, a batch
// size that wants yet another runs the direct algorithm instead.
constexpr size_t kMaxWinogradLayouts = 2;
// Input size the weights are first laid out for when the caller gives none.
constexpr int64_t kDefaultProbeSide = 56;
constexpr int64_t kDefaultProbeBatch = 16;

// How the source is fed to the primitive.
enum class SrcKind { F32, U8, U8ZeroPoint };

std::string geometry(const ConvShape& s) {
  return std::to_string(s.in_channels) + " -> " + std::to_string(s.out_channels) + " channels, kernel " +
         std::to_string(s.kernel_h) + "x" + std::to_string(s.kernel_w) + ", stride " + std::to_string(s.stride) +
         ", padding " + std::to_string(s.padding);
}

bool cpu_has_avx512bw_vl() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return has && cpu_isa_allowed(CpuIsa::Avx512);
}

// Dynamic quantisation of one image's activations (n values) to u8. Returns the scale;
// *zero_point is 0 (non-negative input, q = round(x / s) in [0, 255], s = max / 255) or 128
// (signed input, q = round(x / s) + 128 in [1, 255], s = max|x| / 127). Rounding is half to even.
struct Range {
  float lo, hi;
};

Range value_range(const float* x, int64_t n) {
  float lo = 0.0f, hi = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  return {lo, hi};
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) Range value_range_avx512(const float* x, int64_t n) {
  __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    lo = _mm512_min_ps(v, lo);
    hi = _mm512_max_ps(v, hi);
  }
  if (i < n) {
    const __m512 v = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << (n - i)) - 1u), x + i);
    lo = _mm512_min_ps(v, lo);
    hi = _mm512_max_ps(v, hi);
  }
  return {_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi)};
}

// q[i] = clamp(round_half_even(x[i] * inv) + offset, lo, hi)
void quantize_u8(const float* x, int64_t n, float inv, int offset, int lo, int hi, uint8_t* q) {
  for (int64_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] * inv) + static_cast<float>(offset);
    v = std::min(static_cast<float>(hi), std::max(static_cast<float>(lo), v));
    q[i] = static_cast<uint8_t>(v);
  }
}

// round_half_even(x[0..16) * inv) + offset as int32
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512i quantize16_avx512(const float* x, __m512 inv,
                                                                                      __m512i offset) {
  return _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x), inv)), offset);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void quantize_u8_avx512(const float* x, int64_t n, float inv, int offset,
                                                                     int lo, int hi, uint8_t* q) {
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi), voff = _mm512_set1_epi32(offset);
  int64_t i = 0;
  if (hi == 255) {
    // 64 values per step with plain loads and stores (masked stores are slow on some CPUs):
    // saturating packs clamp to [0, 255] in 128-bit lanes, a dword permutation restores the order,
    // and a byte maximum applies lo.
    const __m512i vlo8 = _mm512_set1_epi8(static_cast<char>(lo));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for (; i + 64 <= n; i += 64) {
      const __m512i a = _mm512_packs_epi32(quantize16_avx512(x + i, vinv, voff), quantize16_avx512(x + i + 16, vinv, voff));
      const __m512i b =
          _mm512_packs_epi32(quantize16_avx512(x + i + 32, vinv, voff), quantize16_avx512(x + i + 48, vinv, voff));
      const __m512i bytes = _mm512_permutexvar_epi32(order, _mm512_packus_epi16(a, b));
      _mm512_storeu_si512(q + i, _mm512_max_epu8(bytes, vlo8));
    }
  }
  for (; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
    __m512i v = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vinv)), voff);
    v = _mm512_min_epi32(_mm512_max_epi32(v, vlo), vhi);
    _mm_mask_storeu_epi8(q + i, k, _mm512_cvtepi32_epi8(v));
  }
}

constexpr int64_t kQuantChunk = int64_t{1} << 15;

// Quantises `batch` images of n values each: q [batch, n], scale [batch], zero point [batch].
// One parallel region (range pass, scales, quantisation pass): on a busy machine every region
// boundary can cost a scheduler time slice.
void quantize_images(const float* x, int64_t batch, int64_t n, uint8_t* q, float* scale, int32_t* zp) {
  const bool vec = cpu_has_avx512bw_vl();
  const int64_t chunks = (n + kQuantChunk - 1) / kQuantChunk, tasks = batch * chunks;
  thread_local std::vector<Range> range_buf;
  Range* ranges = grow(range_buf, static_cast<size_t>(tasks));
  const bool par = batch * n > (int64_t{1} << 18);
#pragma omp parallel if (par)
  {
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t b = t / chunks, c = t % chunks;
      const float* p = x + b * n + c * kQuantChunk;
      const int64_t len = std::min(kQuantChunk, n - c * kQuantChunk);
      ranges[t] = vec ? value_range_avx512(p, len) : value_range(p, len);
    }
#pragma omp single
    for (int64_t b = 0; b < batch; ++b) {
      float lo = 0.0f, hi = 0.0f;
      for (int64_t c = 0; c < chunks; ++c) {
        lo = std::min(lo, ranges[b * chunks + c].lo);
        hi = std::max(hi, ranges[b * chunks + c].hi);
      }
      if (lo >= 0.0f) {
        scale[b] = hi / 255.0f;
        zp[b] = 0;
      } else {
        scale[b] = std::max(-lo, hi) / 127.0f;
        zp[b] = 128;
      }
    }
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t b = t / chunks, c = t % chunks;
      const int64_t off = b * n + c * kQuantChunk, len = std::min(kQuantChunk, n - c * kQuantChunk);
      const float s = scale[b];
      const int z = zp[b];
      if (!(s > 0.0f) || !std::isfinite(s)) {
        std::memset(q + off, z, static_cast<size_t>(len));
        continue;
      }
      const float inv = 1.0f / s;
      const int lo = z == 0 ? 0 : 1;
      if (vec)
        quantize_u8_avx512(x + off, len, inv, z, lo, 255, q + off);
      else
        quantize_u8(x + off, len, inv, z, lo, 255, q + off);
    }
  }
}

bool is_winograd_format(const dnnl::memory::desc& d) { return d.data.format_kind == dnnl_format_kind_wino; }

// dst = src in dst's layout. oneDNN reorders into a Winograd layout only from the plain
// [out, in, kh, kw] one, so a blocked source goes through a plain copy first.
void reorder_weights(dnnl::memory src, dnnl::memory dst, const dnnl::memory::dims& dims, dt type) {
  dnnl::stream& st = thread_stream();
  if (is_winograd_format(dst.get_desc()) && src.get_desc() != dnnl::memory::desc(dims, type, tag::oihw)) {
    dnnl::memory plain({dims, type, tag::oihw}, cpu_engine());
    dnnl::reorder(src, plain).execute(st, src, plain);
    dnnl::reorder(plain, dst).execute(st, plain, dst);
  } else {
    dnnl::reorder(src, dst).execute(st, src, dst);
  }
  st.wait();
}

}  // namespace

bool winograd_available(int64_t in_channels, int64_t out_channels, int64_t batch, int64_t h, int64_t w) {
  if (!blocked_layout_supported() || in_channels < 1 || out_channels < 1 || batch < 1 || h < 1 || w < 1) return false;
  const auto blocked = onednn::format_tag(ActLayout::Blocked16);
  try {
    const dnnl::memory::desc src({batch, in_channels, h, w}, dt::f32, blocked);
    const dnnl::memory::desc dst({batch, out_channels, h, w}, dt::f32, blocked);
    const dnnl::memory::desc wts({out_channels, in_channels, 3, 3}, dt::f32, tag::any);
    const dnnl::memory::desc bias({out_channels}, dt::f32, tag::x);
    const dnnl::memory::dims strides{1, 1}, pad{1, 1};
    const dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_winograd,
                                            src, wts, bias, dst, strides, pad, pad);
    const dnnl::convolution_forward::primitive_desc pd(d, cpu_engine());
    return std::string(pd.impl_info_str()).rfind("ref", 0) != 0;
  } catch (const dnnl::error&) {
    return false;
  }
}

struct Conv2d::Impl {
  ConvShape s;
  WeightFormat format = WeightFormat::F32;
  ConvIo io;
  bool try_winograd = false;  // F32, 3x3, stride 1, blocked in and out, ConvAlgorithm::Auto
  std::vector<float> bias;           // [out] or empty (Int8: always [out], zeros when absent)
  dnnl::memory::desc packed_desc;    // the layout the weights were prepared in
  dnnl::memory packed;               // F32 / Int8: the prepared weights
  std::vector<uint16_t> packed_half; // F16: the f32 layout, stored as half
  std::vector<float> weight_scale;   // Int8: per output channel

  struct Key {
    int64_t batch, h, w;
    bool accumulate, relu;
    int src;
    int threads;
    bool operator<(const Key& o) const {
      return std::tie(batch, h, w, accumulate, relu, src, threads) <
             std::tie(o.batch, o.h, o.w, o.accumulate, o.relu, o.src, o.threads);
    }
  };
  struct Entry {
    dnnl::convolution_forward prim;
    dnnl::memory::desc src, dst, weights, scratch;
    dnnl::memory weight_mem;     // prepared weights in this primitive's layout (empty: convert per call)
    bool convert_per_call = false;
    std::string impl;
  };
  mutable std::mutex mu;
  mutable std::map<Key, std::shared_ptr<const Entry>> cache;
  // Extra weight layouts some input sizes asked for, each reordered once from `packed`.
  mutable std::vector<std::pair<dnnl::memory::desc, dnnl::memory>> layouts;

  dt weight_dt() const { return format == WeightFormat::Int8 ? dt::s8 : dt::f32; }

  dnnl::memory::dims weight_dims() const { return {s.out_channels, s.in_channels, s.kernel_h, s.kernel_w}; }

  dnnl::convolution_forward::primitive_desc make_pd(const Key& k, const dnnl::memory::desc& wdesc,
                                                    dnnl::algorithm alg = dnnl::algorithm::convolution_direct) const {
    const int64_t oh = conv_out_size(k.h, s.kernel_h, s.stride, s.padding);
    const int64_t ow = conv_out_size(k.w, s.kernel_w, s.stride, s.padding);
    const SrcKind src_kind = static_cast<SrcKind>(k.src);
    const dnnl::memory::desc src({k.batch, s.in_channels, k.h, k.w}, src_kind == SrcKind::F32 ? dt::f32 : dt::u8,
                                 onednn::format_tag(io.src));
    const dnnl::memory::desc dst({k.batch, s.out_channels, oh, ow}, dt::f32, onednn::format_tag(io.dst));
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::post_ops po;
    if (src_kind != SrcKind::F32) {
      // acc · weight_scale[o] (output scales), · image scale (runtime scalar), + bias[o]
      attr.set_output_scales(1 << 1, weight_scale);
      po.append_binary(dnnl::algorithm::binary_mul, dnnl::memory::desc({1, 1, 1, 1}, dt::f32, tag::nhwc));
      po.append_binary(dnnl::algorithm::binary_add, dnnl::memory::desc({1, s.out_channels, 1, 1}, dt::f32, tag::nhwc));
      if (src_kind == SrcKind::U8ZeroPoint) attr.set_zero_points(DNNL_ARG_SRC, 0, {DNNL_RUNTIME_S32_VAL});
    }
    if (k.accumulate) po.append_sum(1.0f);
    if (k.relu) po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(po);
    const dnnl::memory::dims strides{s.stride, s.stride}, pad{s.padding, s.padding};
    const bool fused_bias = src_kind == SrcKind::F32 && !bias.empty();
    const auto d = fused_bias
                       ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, alg, src, wdesc,
                                                         dnnl::memory::desc({s.out_channels}, dt::f32, tag::x), dst,
                                                         strides, pad, pad)
                       : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, alg, src, wdesc, dst,
                                                         strides, pad, pad);
    return dnnl::convolution_forward::primitive_desc(d, attr, cpu_engine());
  }

  SrcKind default_src() const { return format == WeightFormat::Int8 ? SrcKind::U8 : SrcKind::F32; }

  // Lays the plain [out, in, kh, kw] weights out as the primitive for the probe size wants.
  void prepare(const void* plain, int64_t probe_batch, int64_t probe_h, int64_t probe_w) {
    const Key k{probe_batch, probe_h, probe_w, false, false, static_cast<int>(default_src()), 0};
    const auto pd = make_pd(k, dnnl::memory::desc(weight_dims(), weight_dt(), tag::any));
    packed_desc = pd.weights_desc();
    dnnl::memory src({weight_dims(), weight_dt(), tag::oihw}, cpu_engine(), const_cast<void*>(plain));
    packed = dnnl::memory(packed_desc, cpu_engine());
    dnnl::stream& st = thread_stream();
    dnnl::reorder(src, packed).execute(st, src, packed);
    st.wait();
  }

  // Whether a Winograd primitive wanting weights in `desc` may run: its layout is kept already, or
  // fewer than kMaxWinogradLayouts are.
  bool winograd_layout_allowed(const dnnl::memory::desc& desc) const {
    std::lock_guard<std::mutex> lock(mu);
    size_t kept = 0;
    for (const auto& [d, m] : layouts) {
      if (d == desc) return true;
      kept += is_winograd_format(d);
    }
    return kept < kMaxWinogradLayouts && layouts.size() < kMaxWeightLayouts;
  }

  // Weights in `desc` made once from `packed` (F32 / Int8), or empty when too many layouts are kept.
  dnnl::memory layout_for(const dnnl::memory::desc& desc) const {
    // caller holds mu
    for (const auto& [d, m] : layouts)
      if (d == desc) return m;
    if (layouts.size() >= kMaxWeightLayouts) return {};
    dnnl::memory m(desc, cpu_engine());
    reorder_weights(packed, m, weight_dims(), weight_dt());
    layouts.emplace_back(desc, m);
    return m;
  }

  std::shared_ptr<const Entry> entry(int64_t batch, int64_t h, int64_t w, bool accumulate, bool relu,
                                     SrcKind src) const {
    // the threads the primitive will run on: one inside a parallel region (nested regions are inactive)
    const Key key{batch, h, w, accumulate, relu, static_cast<int>(src), omp_in_parallel() ? 1 : num_threads()};
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = cache.find(key);
      if (it != cache.end()) return it->second;
    }
    auto e = std::make_shared<Entry>();
    try {
      // The prepared layout first; if oneDNN has no optimised kernel for it at this size, let it
      // choose the weight layout (a different blocking) and make the weights in that layout.
      // Winograd, where allowed, before both.
      std::optional<dnnl::convolution_forward::primitive_desc> pd;
      const auto optimised = [&](const dnnl::memory::desc& wdesc, dnnl::algorithm alg) {
        try {
          pd = make_pd(key, wdesc, alg);
          if (std::string(pd->impl_info_str()).rfind("ref", 0) == 0) pd.reset();
        } catch (const dnnl::error&) {
          pd.reset();
        }
      };
      if (try_winograd) {
        optimised(dnnl::memory::desc(weight_dims(), weight_dt(), tag::any), dnnl::algorithm::convolution_winograd);
        if (pd && !winograd_layout_allowed(pd->weights_desc())) pd.reset();
      }
      if (!pd) optimised(packed_desc, dnnl::algorithm::convolution_direct);
      if (!pd) pd = make_pd(key, dnnl::memory::desc(weight_dims(), weight_dt(), tag::any));
      e->weights = pd->weights_desc();
      e->src = pd->src_desc();
      e->dst = pd->dst_desc();
      e->scratch = pd->scratchpad_desc();
      e->impl = pd->impl_info_str();
      e->prim = dnnl::convolution_forward(*pd);
      if (format == WeightFormat::F16) {
        e->convert_per_call = true;
      } else if (e->weights == packed_desc) {
        e->weight_mem = packed;
      } else {
        std::lock_guard<std::mutex> lock(mu);
        e->weight_mem = layout_for(e->weights);
        e->convert_per_call = !e->weight_mem;
      }
    } catch (const dnnl::error& err) {
      throw Error(ErrorCode::Internal, "oneDNN convolution setup failed (" + geometry(s) + ", input " +
                                           std::to_string(batch) + "x" + std::to_string(h) + "x" + std::to_string(w) +
                                           "): " + onednn::describe(err));
    }
    std::lock_guard<std::mutex> lock(mu);
    if (cache.size() >= kMaxCachedPrimitives) cache.clear();
    cache.emplace(key, e);
    return e;
  }

  // The weights for entry e, converting into a per-thread buffer when needed.
  dnnl::memory weights_for(const Entry& e) const {
    if (!e.convert_per_call) return e.weight_mem;
    thread_local std::vector<float> wide;
    thread_local std::vector<char> relaid;
    const dnnl::engine& eng = cpu_engine();
    dnnl::memory src = packed;
    if (format == WeightFormat::F16) {
      float* p = grow(wide, packed_half.size());
      onednn::half_to_float_n(packed_half.data(), p, packed_half.size());
      src = dnnl::memory(packed_desc, eng, p);
    }
    if (e.weights == packed_desc) return src;
    dnnl::memory dst(e.weights, eng, grow(relaid, e.weights.get_size()));
    reorder_weights(src, dst, weight_dims(), weight_dt());
    return dst;
  }
};

Conv2d::Conv2d(const std::vector<float>& weight, std::vector<float> bias, const ConvShape& shape, WeightFormat format,
               int64_t probe_h, int64_t probe_w, int64_t probe_batch, ConvIo io)
    : shape_(shape), format_(format), io_(io) {
  if (shape.in_channels < 1 || shape.out_channels < 1 || shape.kernel_h < 1 || shape.kernel_w < 1 ||
      shape.stride < 1 || shape.padding < 0)
    throw Error(ErrorCode::Shape, "convolution: invalid geometry (in " + std::to_string(shape.in_channels) + ", out " +
                                      std::to_string(shape.out_channels) + ", kernel " +
                                      std::to_string(shape.kernel_h) + "x" + std::to_string(shape.kernel_w) +
                                      ", stride " + std::to_string(shape.stride) + ", padding " +
                                      std::to_string(shape.padding) + ")");
  const int64_t k = shape.in_channels * shape.kernel_h * shape.kernel_w;
  if (static_cast<int64_t>(weight.size()) != k * shape.out_channels)
    throw Error(ErrorCode::Shape, "convolution weight has " + std::to_string(weight.size()) + " values, expected " +
                                      std::to_string(k * shape.out_channels));
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != shape.out_channels)
    throw Error(ErrorCode::Shape, "convolution bias has " + std::to_string(bias.size()) + " values, expected " +
                                      std::to_string(shape.out_channels));
  if (probe_h < 0 || probe_w < 0 || probe_batch < 0)
    throw Error(ErrorCode::InvalidArgument, "convolution: negative probe size");
  if (format == WeightFormat::Int8 && (io.src != ActLayout::Nhwc || io.dst != ActLayout::Nhwc))
    throw Error(ErrorCode::InvalidArgument, "int8 convolution: only NHWC activations are supported (asked for " +
                                                std::string(act_layout_name(io.src)) + " -> " +
                                                act_layout_name(io.dst) + ")");
  const int64_t min_h = std::max<int64_t>(1, shape.kernel_h - 2 * shape.padding);
  const int64_t min_w = std::max<int64_t>(1, shape.kernel_w - 2 * shape.padding);
  probe_h = std::max(probe_h > 0 ? probe_h : kDefaultProbeSide, min_h);
  probe_w = std::max(probe_w > 0 ? probe_w : kDefaultProbeSide, min_w);
  if (probe_batch == 0) probe_batch = format == WeightFormat::Int8 ? 1 : kDefaultProbeBatch;
  if (format == WeightFormat::Int8) probe_batch = 1;  // int8 runs one image per primitive call

  auto impl = std::make_shared<Impl>();
  impl->s = shape;
  impl->format = format;
  impl->io = io;
  impl->try_winograd = format == WeightFormat::F32 && io.algorithm == ConvAlgorithm::Auto &&
                       io.src == ActLayout::Blocked16 && io.dst == ActLayout::Blocked16 && shape.kernel_h == 3 &&
                       shape.kernel_w == 3 && shape.stride == 1 && blocked_layout_supported();
  impl->bias = std::move(bias);
  apply_thread_setting();
  try {
    if (format == WeightFormat::Int8) {
      const QuantizedWeights qw = quantize_weights_int8(weight.data(), shape.out_channels, k);
      impl->weight_scale = qw.scale;
      if (impl->bias.empty()) impl->bias.assign(static_cast<size_t>(shape.out_channels), 0.0f);
      impl->prepare(qw.q.data(), probe_batch, probe_h, probe_w);
    } else {
      impl->prepare(weight.data(), probe_batch, probe_h, probe_w);
    }
  } catch (const dnnl::error& err) {
    throw Error(ErrorCode::Internal, "preparing convolution weights (" + geometry(shape) +
                                         ") failed: " + onednn::describe(err));
  }
  if (format == WeightFormat::F16) {
    impl->packed_half = onednn::narrow_to_half(static_cast<const float*>(impl->packed.get_data_handle()),
                                               impl->packed_desc.get_size() / sizeof(float));
    impl->packed = dnnl::memory();  // keep only the half copy
  }
  // The Winograd weights for the probe size now rather than at the first call.
  if (impl->try_winograd) impl->entry(probe_batch, probe_h, probe_w, false, false, SrcKind::F32);
  impl_ = std::move(impl);
}

int64_t Conv2d::parameter_count() const {
  if (!impl_) return 0;
  const int64_t bias = format_ == WeightFormat::Int8 ? shape_.out_channels : static_cast<int64_t>(impl_->bias.size());
  return shape_.out_channels * shape_.in_channels * shape_.kernel_h * shape_.kernel_w + bias;
}

int64_t Conv2d::weight_bytes() const {
  if (!impl_) return 0;
  int64_t n = format_ == WeightFormat::F16 ? static_cast<int64_t>(impl_->packed_half.size() * sizeof(uint16_t))
                                           : static_cast<int64_t>(impl_->packed_desc.get_size());
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (const auto& [d, m] : impl_->layouts) n += static_cast<int64_t>(d.get_size());
  return n;
}

std::string Conv2d::implementation(int64_t batch, int64_t h, int64_t w) const {
  if (!impl_) throw Error(ErrorCode::Internal, "implementation() on an empty (default-constructed) convolution");
  out_h(h), out_w(w);
  apply_thread_setting();
  const bool int8 = format_ == WeightFormat::Int8;
  return impl_->entry(int8 ? 1 : batch, h, w, false, false, int8 ? SrcKind::U8 : SrcKind::F32)->impl;
}

void Conv2d::forward(const float* x, int64_t batch, int64_t h, int64_t w, float* y, ConvEpilogue epilogue) const {
  run(x, batch, h, w, y, false, epilogue);
}

void Conv2d::forward_accumulate(const float* x, int64_t batch, int64_t h, int64_t w, float* y,
                                ConvEpilogue epilogue) const {
  run(x, batch, h, w, y, true, epilogue);
}

void Conv2d::run(const float* x, int64_t batch, int64_t h, int64_t w, float* y, bool accumulate,
                 ConvEpilogue epilogue) const {
  if (!impl_) throw Error(ErrorCode::Internal, "forward on an empty (default-constructed) convolution");
  if (batch < 0 || h < 1 || w < 1)
    throw Error(ErrorCode::Shape, "convolution called with batch " + std::to_string(batch) + " and input size " +
                                      std::to_string(h) + "x" + std::to_string(w));
  const int64_t oh = out_h(h), ow = out_w(w);  // throws for inputs smaller than the kernel
  if (batch == 0) return;
  if (x == nullptr || y == nullptr) throw Error(ErrorCode::InvalidArgument, "convolution called with a null buffer");
  apply_thread_setting();
  const bool relu = epilogue == ConvEpilogue::Relu;
  const Impl& im = *impl_;
  const dnnl::engine& eng = cpu_engine();
  dnnl::stream& st = thread_stream();
  thread_local std::vector<char> scratch_buf;
  try {
    if (format_ != WeightFormat::Int8) {
      const auto e = im.entry(batch, h, w, accumulate, relu, SrcKind::F32);
      dnnl::memory wmem = im.weights_for(*e);
      dnnl::memory src(e->src, eng, const_cast<float*>(x));
      dnnl::memory dst(e->dst, eng, y);
      dnnl::memory scratch(e->scratch, eng, grow(scratch_buf, e->scratch.get_size() + 1));
      std::unordered_map<int, dnnl::memory> args{
          {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wmem}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}};
      if (!im.bias.empty())
        args.emplace(DNNL_ARG_BIAS, dnnl::memory({{shape_.out_channels}, dt::f32, tag::x}, eng,
                                                 const_cast<float*>(im.bias.data())));
      e->prim.execute(st, args);
      st.wait();
      return;
    }
    // Int8: quantise every image, then one primitive call per image (its own scale).
    const int64_t in_n = h * w * shape_.in_channels, out_n = oh * ow * shape_.out_channels;
    thread_local std::vector<uint8_t> qbuf;
    thread_local std::vector<float> sbuf;
    thread_local std::vector<int32_t> zbuf;
    uint8_t* q = grow(qbuf, static_cast<size_t>(batch * in_n));
    float* sc = grow(sbuf, static_cast<size_t>(batch));
    int32_t* zp = grow(zbuf, static_cast<size_t>(batch));
    quantize_images(x, batch, in_n, q, sc, zp);
    const dnnl::memory bias_mem({{1, shape_.out_channels, 1, 1}, dt::f32, tag::nhwc}, eng,
                                const_cast<float*>(im.bias.data()));
    for (int64_t b = 0; b < batch; ++b) {
      const SrcKind kind = zp[b] == 0 ? SrcKind::U8 : SrcKind::U8ZeroPoint;
      const auto e = im.entry(1, h, w, accumulate, relu, kind);
      dnnl::memory wmem = im.weights_for(*e);
      dnnl::memory src(e->src, eng, q + b * in_n);
      dnnl::memory dst(e->dst, eng, y + b * out_n);
      dnnl::memory scratch(e->scratch, eng, grow(scratch_buf, e->scratch.get_size() + 1));
      dnnl::memory scale_mem({{1, 1, 1, 1}, dt::f32, tag::nhwc}, eng, sc + b);
      std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src},
                                                 {DNNL_ARG_WEIGHTS, wmem},
                                                 {DNNL_ARG_DST, dst},
                                                 {DNNL_ARG_SCRATCHPAD, scratch},
                                                 {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, scale_mem},
                                                 {DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1, bias_mem}};
      if (kind == SrcKind::U8ZeroPoint)
        args.emplace(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, dnnl::memory({{1}, dt::s32, tag::x}, eng, zp + b));
      e->prim.execute(st, args);
      st.wait();
    }
  } catch (const dnnl::error& err) {
    throw Error(ErrorCode::Internal, "oneDNN convolution failed (" + geometry(shape_) + ", input " +
                                         std::to_string(batch) + "x" + std::to_string(h) + "x" + std::to_string(w) +
                                         "): " + onednn::describe(err));
  }
}

void relu_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void nchw_to_nhwc(const float* x, int64_t batch, int64_t c, int64_t h, int64_t w, float* y) {
  const int64_t hw = h * w;
  for (int64_t b = 0; b < batch; ++b) {
    const float* xb = x + b * c * hw;
    float* yb = y + b * c * hw;
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t p = 0; p < hw; ++p) yb[p * c + ch] = xb[ch * hw + p];
  }
}

void nhwc_to_nchw(const float* x, int64_t batch, int64_t h, int64_t w, int64_t c, float* y) {
  const int64_t hw = h * w;
  for (int64_t b = 0; b < batch; ++b) {
    const float* xb = x + b * c * hw;
    float* yb = y + b * c * hw;
    for (int64_t p = 0; p < hw; ++p)
      for (int64_t ch = 0; ch < c; ++ch) yb[ch * hw + p] = xb[p * c + ch];
  }
}

void conv2d_reference(const float* x, int64_t batch, int64_t h, int64_t w, const float* weight, const float* bias,
                      const ConvShape& s, float* y) {
  const int64_t oh = conv_out_size(h, s.kernel_h, s.stride, s.padding);
  const int64_t ow = conv_out_size(w, s.kernel_w, s.stride, s.padding);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t o = 0; o < s.out_channels; ++o)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          double acc = bias ? static_cast<double>(bias[o]) : 0.0;
          for (int64_t c = 0; c < s.in_channels; ++c)
            for (int64_t ky = 0; ky < s.kernel_h; ++ky) {
              const int64_t iy = oy * s.stride - s.padding + ky;
              if (iy < 0 || iy >= h) continue;
              for (int64_t kx = 0; kx < s.kernel_w; ++kx) {
                const int64_t ix = ox * s.stride - s.padding + kx;
                if (ix < 0 || ix >= w) continue;
                acc += static_cast<double>(x[((b * s.in_channels + c) * h + iy) * w + ix]) *
                       weight[((o * s.in_channels + c) * s.kernel_h + ky) * s.kernel_w + kx];
              }
            }
          y[((b * s.out_channels + o) * oh + oy) * ow + ox] = static_cast<float>(acc);
        }
}

void batchnorm_reference(float* x, int64_t batch, int64_t channels, int64_t hw, const float* gamma, const float* beta,
                         const float* mean, const float* var, double eps) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < channels; ++c) {
      const double inv = 1.0 / std::sqrt(static_cast<double>(var[c]) + eps);
      float* p = x + (b * channels + c) * hw;
      for (int64_t i = 0; i < hw; ++i)
        p[i] = static_cast<float>((static_cast<double>(p[i]) - mean[c]) * inv * gamma[c] + beta[c]);
    }
}

}  // namespace clipkit
