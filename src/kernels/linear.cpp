#include "kernels/linear.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <cmath>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <unordered_map>

#include "clipkit/error.h"
#include "core/half.h"
#include "kernels/gemm.h"
#include "kernels/int8.h"
#include "kernels/int8_epilogue.h"
#include "kernels/cpu.h"
#include "kernels/onednn_util.h"
#include "kernels/weight_memory.h"
#include "core/packed_weight.h"

namespace clipkit {

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// The row count used to ask oneDNN for its preferred weight layout. Its brgemm kernels choose the
// same blocked layout for every row count (checked by the tests: any mismatch would fall back to
// an explicit reorder, never to wrong results).
constexpr int64_t kLayoutProbeRows = 256;
// forward_quantized_to_quantized splits a float product larger than this into two halves of rows.
constexpr int64_t kSplitProductBytes = int64_t{4} << 20;
// Primitives cached per layer (distinct row counts); beyond this the cache is cleared.
constexpr size_t kMaxCachedPrimitives = 64;
// Primitives shared by the layers of one shape (a transformer's blocks repeat theirs): distinct
// shapes kept process-wide before that cache is cleared.
constexpr size_t kMaxSharedPrimitives = 1024;
// F16 layers are stored as column chunks of at most about this many bytes once widened to f32,
// so that a chunk widened by one thread is still in its L2 cache when that thread multiplies it.
constexpr int64_t kHalfChunkBytes = int64_t{1} << 20;

using onednn::cpu_engine;
using onednn::thread_stream;

template <class T>
T* thread_buffer(std::vector<T>& buf, size_t n) {
  return onednn::grow(buf, n);
}

std::string dnnl_what(const dnnl::error& e) { return onednn::describe(e); }

// A oneDNN layout of a 2-D weight in core's terms (BlockedLayout); false unless it is a plain
// blocked layout (no offset, padding offsets or compensation).
bool blocked_layout_of(const dnnl::memory::desc& desc, BlockedLayout& l) {
  const dnnl_memory_desc_t& m = desc.data;
  if (m.ndims != 2 || m.format_kind != dnnl_blocked || m.offset0 != 0 || m.extra.flags != 0) return false;
  const dnnl_blocking_desc_t& b = m.format_desc.blocking;
  l = BlockedLayout();
  for (int d = 0; d < 2; ++d) {
    if (m.padded_offsets[d] != 0) return false;
    l.dims[d] = m.dims[d];
    l.padded[d] = m.padded_dims[d];
    l.strides[d] = b.strides[d];
  }
  for (int i = 0; i < b.inner_nblks; ++i) l.blocks.emplace_back(static_cast<int>(b.inner_idxs[i]), b.inner_blks[i]);
  try {
    l.validate("layout", INT64_MAX);
  } catch (const Error&) {
    return false;
  }
  return static_cast<size_t>(l.span()) * dnnl::memory::data_type_size(m.data_type == dnnl_s8 ? dt::s8 : dt::f32) ==
         desc.get_size();
}

// The rows [row0, row0 + rows) of a stored weight as one piece (cut from a larger one where its
// blocks allow), in `buf`; nullptr when they span several pieces or cut through a block.
const PackedPiece* stored_piece(const PackedWeight& w, int64_t row0, int64_t rows, PackedPiece& buf) {
  PackedWeight view;
  if (!w.rows_view(row0, rows, view) || view.pieces.size() != 1) return nullptr;
  buf = std::move(view.pieces[0]);
  return &buf;
}

void check_finite_shape(int64_t in, int64_t out) {
  if (in <= 0 || out <= 0)
    throw Error(ErrorCode::Shape, "linear layer needs positive sizes, got in=" + std::to_string(in) +
                                      " out=" + std::to_string(out));
}

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

struct Linear::Impl {
  int64_t in = 0, out = 0;
  WeightFormat format = WeightFormat::F32;
  std::vector<float> bias;                  // [out] or empty
  dnnl::memory::desc packed_desc;           // F32 / Int8: weights [in, out] in the backend's blocked layout
  dnnl::memory packed;                      // F32 / Int8: the packed weights
  std::shared_ptr<void> packed_storage;     // F32 / Int8: where `packed` lives (weight memory)
  std::vector<uint16_t> packed_half;        // F16: the chunks' packed f32 layouts, stored as half
  std::shared_ptr<const void> half_owner;   // F16 chunks used in place (a packed file): their storage
  // F16: the weights as column chunks, each packed on its own for oneDNN's matmul (f32 layout,
  // stored as half at `offset` in packed_half). A call widens one chunk at a time into a
  // per-thread buffer and multiplies it straight away; the threads take chunks in turn.
  struct HalfChunk {
    int64_t col0 = 0, cols = 0;
    dnnl::memory::desc desc;
    size_t offset = 0;             // in packed_half
    const uint16_t* data = nullptr;  // the chunk's halves (in packed_half or a packed file)
  };
  std::vector<HalfChunk> chunks;
  std::vector<float> out_scale;             // Int8: per-output-channel weight scales
  std::vector<float> zero_shift;            // Int8: 128 · scale[n] · Σ_k q[n, k] (u8 activation offset)

  struct Key {
    int64_t rows;
    int act;
    bool accumulate;
    int threads;
    int64_t cols;  // out, or an F16 chunk's width
    bool operator<(const Key& o) const {
      return std::tie(rows, act, accumulate, threads, cols) < std::tie(o.rows, o.act, o.accumulate, o.threads, o.cols);
    }
  };
  struct Entry {
    dnnl::matmul prim;
    dnnl::memory::desc src, dst, scratch;
    dnnl::memory::desc weights;  // the layout this primitive expects
    dnnl::memory::desc layout;   // the layer's packed layout it was made for
    bool needs_reorder = false;  // packed layout differs from what the primitive wants
  };
  mutable std::mutex mu;
  mutable std::map<Key, std::shared_ptr<const Entry>> cache;

  dt weight_dt() const { return format == WeightFormat::Int8 ? dt::s8 : dt::f32; }
  // Int8 activations are fed as u8 (q + 128): VNNI multiplies u8 by s8 natively; the offset is
  // removed in the epilogue with the precomputed per-channel weight sums (zero_shift).
  dt src_dt() const { return format == WeightFormat::Int8 ? dt::u8 : dt::f32; }

  dnnl::primitive_attr make_attr(Activation act, bool accumulate) const {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (format == WeightFormat::Int8) {
      // acc(s32) * weight_scale[n] -> f32; the per-row activation scale, bias and activation
      // follow in epilogue() (oneDNN 2.x kernels do not take per-row scales).
      attr.set_output_scales(1 << 1, out_scale);
      return attr;
    }
    dnnl::post_ops po;
    if (accumulate) po.append_sum(1.0f);
    if (act == Activation::QuickGelu) po.append_eltwise(1.0f, dnnl::algorithm::eltwise_swish, 1.702f, 0.0f);
    if (act == Activation::Gelu) po.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
    attr.set_post_ops(po);
    return attr;
  }

  // cols < out: one F16 chunk, writing its columns of the [rows, out] output (row stride out).
  dnnl::matmul::primitive_desc make_pd(int64_t rows, const dnnl::memory::desc& wdesc, Activation act,
                                       bool accumulate, int64_t cols = 0) const {
    if (cols == 0) cols = out;
    const dnnl::memory::desc src({rows, in}, src_dt(), tag::ab);
    const dnnl::memory::desc dst({rows, cols}, dt::f32, dnnl::memory::dims{out, 1});
    const bool fused_bias = !bias.empty() && format != WeightFormat::Int8;
    if (fused_bias) {
      const dnnl::memory::desc b({1, cols}, dt::f32, tag::ab);
      return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wdesc, b, dst), make_attr(act, accumulate),
                                          cpu_engine());
    }
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wdesc, dst), make_attr(act, accumulate), cpu_engine());
  }

  // The layout this CPU's kernel wants for the whole layer's weights.
  dnnl::memory::desc wanted_desc() const {
    const dnnl::memory::desc any({in, out}, weight_dt(), tag::any);
    return make_pd(kLayoutProbeRows, any, Activation::None, false).weights_desc();
  }

  // Packs plain [out, in] weights (viewed as the [in, out] matrix with strides {1, in}) into
  // weight memory (pre-faulted blocks).
  void pack(const void* plain) {
    packed_desc = wanted_desc();
    const dnnl::memory::desc plain_desc({in, out}, weight_dt(), dnnl::memory::dims{1, in});
    dnnl::memory src(plain_desc, cpu_engine(), const_cast<void*>(plain));
    packed_storage = allocate_weight_memory(packed_desc.get_size());
    packed = dnnl::memory(packed_desc, cpu_engine(), packed_storage.get());
    dnnl::stream& s = thread_stream();
    dnnl::reorder(src, packed).execute(s, src, packed);
    s.wait();
  }

  // F16: splits plain [out, in] f32 weights into column chunks (an even number of them per thread
  // where possible, for the load balance), packs each and keeps it as half; the chunks are packed
  // in parallel (oneDNN's reorder runs on the thread that calls it there).
  void pack_half(const float* plain) {
    const size_t total = plan_half_chunks();
    packed_half.resize(total);
    for (HalfChunk& ch : chunks) ch.data = packed_half.data() + ch.offset;
    const int64_t count = static_cast<int64_t>(chunks.size());
    std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1) if (count > 1)
    for (int64_t c = 0; c < count; ++c) {
      try {
        const HalfChunk& ch = chunks[static_cast<size_t>(c)];
        thread_local std::vector<float> tmp;
        const size_t size = ch.desc.get_size() / sizeof(float);
        // rows col0 .. col0 + cols of [out, in], viewed as the [in, cols] matrix
        const dnnl::memory::desc view({in, ch.cols}, dt::f32, dnnl::memory::dims{1, in});
        dnnl::memory src(view, cpu_engine(), const_cast<float*>(plain + ch.col0 * in));
        dnnl::memory dst(ch.desc, cpu_engine(), thread_buffer(tmp, size));
        dnnl::stream& s = thread_stream();
        dnnl::reorder(src, dst).execute(s, src, dst);
        s.wait();
        onednn::narrow_to_half_serial(tmp.data(), packed_half.data() + ch.offset, size);
      } catch (...) {
#pragma omp critical(clipkit_linear_half)
        if (!failure) failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
  }

  // F16: the column chunks this process uses for the layer (set in `chunks`, without data) and the
  // halves they take in all.
  size_t plan_half_chunks() {
    chunks.clear();
    const int64_t threads = std::max(1, num_threads());
    int64_t n = (in * out * static_cast<int64_t>(sizeof(float)) + kHalfChunkBytes - 1) / kHalfChunkBytes;
    n = (n + threads - 1) / threads * threads;
    n = std::max<int64_t>(1, std::min(n, (out + 15) / 16));
    const int64_t width = ((out + n - 1) / n + 15) / 16 * 16;
    std::map<int64_t, dnnl::memory::desc> layout;  // per chunk width (at most two)
    size_t total = 0;
    for (int64_t col0 = 0; col0 < out; col0 += width) {
      HalfChunk ch;
      ch.col0 = col0;
      ch.cols = std::min(width, out - col0);
      auto it = layout.find(ch.cols);
      if (it == layout.end()) {
        const auto pd = make_pd(kLayoutProbeRows, dnnl::memory::desc({in, ch.cols}, dt::f32, tag::any),
                                Activation::None, false, ch.cols);
        it = layout.emplace(ch.cols, pd.weights_desc()).first;
      }
      ch.desc = it->second;
      ch.offset = total;
      total += ch.desc.get_size() / sizeof(float);
      chunks.push_back(std::move(ch));
    }
    return total;
  }

  // chunk: an F16 chunk's entry (its width and packed layout), else the whole layer's.
  std::shared_ptr<const Entry> entry(int64_t rows, Activation act, bool accumulate,
                                     const HalfChunk* chunk = nullptr) const {
    const int64_t cols = chunk ? chunk->cols : out;
    const dnnl::memory::desc& wanted = chunk ? chunk->desc : packed_desc;
    const Key key{rows, static_cast<int>(act), accumulate, num_threads(), cols};
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = cache.find(key);
      if (it != cache.end()) return it->second;
    }
    // Int8 primitives carry their layer's weight scales (oneDNN 2.x's brgemm kernels take no
    // scales at execution), so they are the layer's own.
    auto e = format == WeightFormat::Int8 ? make_entry(rows, wanted, act, accumulate, cols) : shared_entry(key, wanted);
    std::lock_guard<std::mutex> lock(mu);
    if (cache.size() >= kMaxCachedPrimitives) cache.clear();
    cache.emplace(key, e);
    return e;
  }

  // Everything a primitive depends on besides the weights' layout (compared on its own).
  // (out: an F16 chunk's output rows are the layer's, of stride out.)
  struct SharedKey {
    Key key;
    int64_t in, out;
    WeightFormat format;
    bool fused_bias;
    bool operator<(const SharedKey& o) const {
      return std::tie(key, in, out, format, fused_bias) < std::tie(o.key, o.in, o.out, o.format, o.fused_bias);
    }
  };
  struct SharedCache {
    std::mutex mu;
    size_t size = 0;
    std::map<SharedKey, std::vector<std::shared_ptr<const Entry>>> entries;  // one per weight layout
  };
  static SharedCache& shared_cache() {
    static SharedCache* c = new SharedCache();  // never destroyed: layers may outlive static destruction
    return *c;
  }

  // The entry of every layer of this shape and layout, made by the first that needs it: the
  // primitive descriptor and the primitive (its JIT kernels) are made once per process, not once
  // per layer (oneDNN's own primitive cache spares the JIT code of identical primitives but not
  // the descriptors' set-up).
  std::shared_ptr<const Entry> shared_entry(const Key& key, const dnnl::memory::desc& wanted) const {
    const SharedKey sk{key, in, out, format, !bias.empty() && format != WeightFormat::Int8};
    SharedCache& sc = shared_cache();
    {
      std::lock_guard<std::mutex> lock(sc.mu);
      auto it = sc.entries.find(sk);
      if (it != sc.entries.end())
        for (const auto& e : it->second)
          if (e->layout == wanted) return e;
    }
    auto e = make_entry(key.rows, wanted, static_cast<Activation>(key.act), key.accumulate, key.cols);
    std::lock_guard<std::mutex> lock(sc.mu);
    if (sc.size >= kMaxSharedPrimitives) {
      sc.entries.clear();
      sc.size = 0;
    }
    sc.entries[sk].push_back(e);
    ++sc.size;
    return e;
  }

  std::shared_ptr<const Entry> make_entry(int64_t rows, const dnnl::memory::desc& wanted, Activation act,
                                          bool accumulate, int64_t cols) const {
    auto e = std::make_shared<Entry>();
    e->layout = wanted;
    try {
      auto pd = make_pd(rows, wanted, act, accumulate, cols);
      e->weights = wanted;
      if (std::string(pd.impl_info_str()).rfind("ref", 0) == 0) {
        // oneDNN found no optimised kernel for our packed layout at this size: let it choose.
        auto pd_any = make_pd(rows, dnnl::memory::desc({in, cols}, weight_dt(), tag::any), act, accumulate, cols);
        if (pd_any.weights_desc() != wanted) {
          pd = pd_any;
          e->weights = pd_any.weights_desc();
          e->needs_reorder = true;
        }
      }
      e->src = pd.src_desc();
      e->dst = pd.dst_desc();
      e->scratch = pd.scratchpad_desc();
      e->prim = dnnl::matmul(pd);
    } catch (const dnnl::error& err) {
      throw Error(ErrorCode::Internal, "oneDNN matmul setup failed for a " + std::to_string(rows) + "x" +
                                           std::to_string(in) + " -> " + std::to_string(out) +
                                           " linear layer: " + dnnl_what(err));
    }
    return e;
  }

  // F16: every chunk widened into a per-thread buffer and multiplied at once, the threads taking
  // chunks in turn (oneDNN runs each chunk's matmul on the thread that took it).
  void run_half(const float* x, int64_t rows, float* y, Activation act, bool accumulate) const {
    const int64_t n = static_cast<int64_t>(chunks.size());
    std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
    for (int64_t c = 0; c < n; ++c) {
      try {
        run_chunk(chunks[static_cast<size_t>(c)], x, rows, y, act, accumulate);
      } catch (...) {
#pragma omp critical(clipkit_linear_half)
        if (!failure) failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
  }

  void run_chunk(const HalfChunk& ch, const float* x, int64_t rows, float* y, Activation act, bool accumulate) const {
    auto e = entry(rows, act, accumulate, &ch);
    thread_local std::vector<float> wide;
    thread_local std::vector<char> scratch_buf, reorder_buf;
    const dnnl::engine& eng = cpu_engine();
    dnnl::stream& s = thread_stream();
    try {
      const size_t count = ch.desc.get_size() / sizeof(float);
      float* w = thread_buffer(wide, count);
      onednn::half_to_float_serial(ch.data, w, count);
      dnnl::memory wmem(ch.desc, eng, w);
      if (e->needs_reorder) {
        dnnl::memory re(e->weights, eng, thread_buffer(reorder_buf, e->weights.get_size()));
        dnnl::reorder(wmem, re).execute(s, wmem, re);
        wmem = re;
      }
      dnnl::memory src(e->src, eng, const_cast<float*>(x));
      dnnl::memory dst(e->dst, eng, y + ch.col0);
      dnnl::memory scratch(e->scratch, eng, thread_buffer(scratch_buf, e->scratch.get_size() + 1));
      std::unordered_map<int, dnnl::memory> args{
          {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wmem}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}};
      if (!bias.empty())
        args.emplace(DNNL_ARG_BIAS, dnnl::memory({{1, ch.cols}, dt::f32, tag::ab}, eng,
                                                 const_cast<float*>(bias.data() + ch.col0)));
      e->prim.execute(s, args);
      s.wait();
    } catch (const dnnl::error& err) {
      throw Error(ErrorCode::Internal, "oneDNN matmul failed for a " + std::to_string(rows) + "x" + std::to_string(in) +
                                           " -> " + std::to_string(out) + " f16 linear layer (columns " +
                                           std::to_string(ch.col0) + "+" + std::to_string(ch.cols) +
                                           "): " + dnnl_what(err));
    }
  }

  void run(const void* x, int64_t rows, float* y, Activation act, bool accumulate) const {
    if (format == WeightFormat::F16) {
      run_half(static_cast<const float*>(x), rows, y, act, accumulate);
      return;
    }
    auto e = entry(rows, act, accumulate);
    dnnl::stream& s = thread_stream();
    thread_local std::vector<char> scratch_buf;
    thread_local std::vector<char> reorder_buf;
    const dnnl::engine& eng = cpu_engine();
    try {
      dnnl::memory wmem = packed;
      if (e->needs_reorder) {
        dnnl::memory re(e->weights, eng, thread_buffer(reorder_buf, e->weights.get_size()));
        dnnl::reorder(wmem, re).execute(s, wmem, re);
        wmem = re;
      }
      dnnl::memory src(e->src, eng, const_cast<void*>(x));
      dnnl::memory dst(e->dst, eng, y);
      dnnl::memory scratch(e->scratch, eng, thread_buffer(scratch_buf, e->scratch.get_size() + 1));
      std::unordered_map<int, dnnl::memory> args{
          {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wmem}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}};
      if (!bias.empty() && format != WeightFormat::Int8)
        args.emplace(DNNL_ARG_BIAS, dnnl::memory({{1, out}, dt::f32, tag::ab}, eng, const_cast<float*>(bias.data())));
      e->prim.execute(s, args);
      s.wait();
    } catch (const dnnl::error& err) {
      throw Error(ErrorCode::Internal, "oneDNN matmul failed for a " + std::to_string(rows) + "x" + std::to_string(in) +
                                           " -> " + std::to_string(out) + " linear layer: " + dnnl_what(err));
    }
  }
};

namespace {

const float* checked_weight(const std::vector<float>& weight, int64_t in, int64_t out) {
  check_finite_shape(in, out);
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
  check_finite_shape(in, out);
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
                                         " linear weight failed: " + dnnl_what(err));
  }
  impl_ = std::move(impl);
}

Linear Linear::from_int8(const std::vector<int8_t>& q, const std::vector<float>& scale, std::vector<float> bias,
                         int64_t in, int64_t out) {
  check_finite_shape(in, out);
  if (static_cast<int64_t>(q.size()) != in * out)
    throw Error(ErrorCode::Shape, "int8 linear weight has " + std::to_string(q.size()) + " values, expected " +
                                      std::to_string(in * out));
  if (static_cast<int64_t>(scale.size()) != out)
    throw Error(ErrorCode::Shape, "int8 linear weight has " + std::to_string(scale.size()) + " scales, expected " +
                                      std::to_string(out));
  return from_int8(q.data(), scale.data(), std::move(bias), in, out);
}

Linear Linear::from_int8(const int8_t* q, const float* scale_data, std::vector<float> bias, int64_t in, int64_t out) {
  check_finite_shape(in, out);
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
                                         " int8 linear weight failed: " + dnnl_what(err));
  }
  l.impl_ = std::move(impl);
  return l;
}

std::string packed_layout_isa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

bool Linear::packed_weight(PackedWeight& pw) const {
  if (!impl_) return false;
  pw = PackedWeight();
  pw.out = out_;
  pw.in = in_;
  pw.owner = impl_;
  pw.isa = packed_layout_isa();
  if (format_ == WeightFormat::F16) {
    pw.dtype = DType::F16;
    for (const auto& ch : impl_->chunks) {
      PackedPiece p;
      if (!blocked_layout_of(ch.desc, p.layout)) return false;
      p.row0 = ch.col0;
      p.rows = ch.cols;
      p.data = ch.data;
      pw.pieces.push_back(std::move(p));
    }
    return true;
  }
  pw.dtype = format_ == WeightFormat::Int8 ? DType::I8 : DType::F32;
  PackedPiece p;
  if (!blocked_layout_of(impl_->packed_desc, p.layout)) return false;
  p.row0 = 0;
  p.rows = out_;
  p.data = impl_->packed_storage.get();
  pw.pieces.push_back(std::move(p));
  if (format_ == WeightFormat::Int8) pw.zero_shift = impl_->zero_shift;
  return true;
}

Linear Linear::from_packed(const PackedWeight& w, int64_t row0, int64_t out, std::vector<float> bias,
                           WeightFormat format, const float* scale, bool* in_place) {
  const int64_t in = w.in;
  check_finite_shape(in, out);
  if (in_place) *in_place = false;
  if (row0 < 0 || out > w.out - row0)
    throw Error(ErrorCode::Internal, "rows " + std::to_string(row0) + "+" + std::to_string(out) + " of a packed weight of " +
                                         std::to_string(w.out) + " rows");
  const DType want = format == WeightFormat::F32 ? DType::F32 : format == WeightFormat::F16 ? DType::F16 : DType::I8;
  if (w.dtype != want)
    throw Error(ErrorCode::Internal, std::string("a ") + dtype_name(w.dtype) + " packed weight used as a " +
                                         weight_format_name(format) + " layer");
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != out)
    throw Error(ErrorCode::Shape, "linear layer bias has " + std::to_string(bias.size()) + " values, expected " +
                                      std::to_string(out));
  if (format == WeightFormat::Int8) {
    if (scale == nullptr) throw Error(ErrorCode::InvalidArgument, "int8 packed weight without scales");
    for (int64_t o = 0; o < out; ++o)
      if (!std::isfinite(scale[o]) || scale[o] < 0.0f)
        throw Error(ErrorCode::InvalidArgument, "int8 linear weight has an invalid scale");
    if (static_cast<int64_t>(w.zero_shift.size()) != w.out)
      throw Error(ErrorCode::Format, "int8 packed weight without its zero shift");
  }
  Linear l;
  l.in_ = in;
  l.out_ = out;
  l.bias_count_ = static_cast<int64_t>(bias.size());
  l.format_ = format;
  try {
    auto impl = std::make_shared<Impl>();
    impl->in = in;
    impl->out = out;
    impl->format = format;
    impl->bias = bias;
    if (format == WeightFormat::Int8) impl->out_scale.assign(scale, scale + out);  // the primitives' attribute
    if (format == WeightFormat::F16) {
      impl->plan_half_chunks();
      bool fits = true;
      std::vector<std::pair<const void*, size_t>> ranges;
      for (auto& ch : impl->chunks) {
        PackedPiece piece;
        const PackedPiece* p = stored_piece(w, row0 + ch.col0, ch.cols, piece);
        BlockedLayout mine;
        if (!p || !blocked_layout_of(ch.desc, mine) || mine != p->layout) {
          fits = false;
          break;
        }
        ch.data = static_cast<const uint16_t*>(p->data);
        ranges.emplace_back(p->data, static_cast<size_t>(p->layout.span()) * 2);
      }
      if (fits) {
        impl->half_owner = w.owner;
        for (const auto& [ptr, bytes] : ranges) prefault_mapped(ptr, bytes);
        l.impl_ = std::move(impl);
        if (in_place) *in_place = true;
        return l;
      }
    } else {
      PackedPiece piece;
      const PackedPiece* p = stored_piece(w, row0, out, piece);
      const dnnl::memory::desc desc = impl->wanted_desc();
      BlockedLayout mine;
      if (p && blocked_layout_of(desc, mine) && mine == p->layout) {
        const size_t bytes = desc.get_size();
        void* stored = const_cast<void*>(p->data);
        if (reinterpret_cast<uintptr_t>(stored) % 64 == 0) {
          impl->packed_storage = std::shared_ptr<void>(std::const_pointer_cast<void>(w.owner), stored);
          prefault_mapped(stored, bytes);
        } else {  // still no repacking: one copy into weight memory
          impl->packed_storage = allocate_weight_memory(bytes);
          std::memcpy(impl->packed_storage.get(), stored, bytes);
        }
        impl->packed_desc = desc;
        impl->packed = dnnl::memory(desc, cpu_engine(), impl->packed_storage.get());
        if (format == WeightFormat::Int8) {
          impl->zero_shift.assign(w.zero_shift.begin() + row0, w.zero_shift.begin() + row0 + out);
        }
        l.impl_ = std::move(impl);
        if (in_place) *in_place = true;
        return l;
      }
    }
  } catch (const dnnl::error& err) {
    throw Error(ErrorCode::Internal, "setting up a " + std::to_string(out) + "x" + std::to_string(in) +
                                         " packed linear weight failed: " + dnnl_what(err));
  }
  // The stored layout is not this CPU's: read the values out and pack them as a plain weight would be.
  if (format == WeightFormat::Int8) {
    std::vector<int8_t> q(static_cast<size_t>(out * in));
    w.unpack_rows(row0, out, q.data());
    return from_int8(q.data(), scale, std::move(bias), in, out);
  }
  std::vector<float> plain(static_cast<size_t>(out * in));
  if (format == WeightFormat::F16) {
    std::vector<uint16_t> h(plain.size());
    w.unpack_rows(row0, out, h.data());
    for (size_t i = 0; i < h.size(); ++i) plain[i] = half_to_float(h[i]);
  } else {
    w.unpack_rows(row0, out, plain.data());
  }
  return Linear(plain.data(), std::move(bias), in, out, format);
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
  thread_local std::vector<uint8_t> qbuf;
  thread_local std::vector<float> sbuf;
  uint8_t* q = thread_buffer(qbuf, static_cast<size_t>(rows * in_));
  float* s = thread_buffer(sbuf, static_cast<size_t>(rows));
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
  thread_local std::vector<uint8_t> qbuf;
  thread_local std::vector<float> sbuf;
  uint8_t* q = thread_buffer(qbuf, static_cast<size_t>(rows * in_));
  float* s = thread_buffer(sbuf, static_cast<size_t>(rows));
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
  impl_->run(q, rows, y, Activation::None, false);  // y = acc * weight_scale
  int8_epilogue(y, row_scale, impl_->zero_shift, impl_->bias, rows, out_, y, act, false);
}

void Linear::forward_quantized_raw(const uint8_t* q, int64_t rows, float* t) const {
  const float dummy_scale = 1.0f;
  check_quantized(*this, impl_.get(), q, &dummy_scale, rows, t);
  if (rows == 0) return;
  sync_threads();
  impl_->run(q, rows, t, Activation::None, false);
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
  thread_local std::vector<float> tbuf;
  float* t = thread_buffer(tbuf, static_cast<size_t>(rows * out_));
  impl_->run(q, rows, t, Activation::None, false);
  int8_epilogue(t, row_scale, impl_->zero_shift, impl_->bias, rows, out_, y, Activation::None, true);
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
  thread_local std::vector<float> tbuf;
  float* t = scratch ? scratch : thread_buffer(tbuf, static_cast<size_t>(chunk * out_));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    impl_->run(q + r0 * in_, n, t, Activation::None, false);
    int8_epilogue_quantize(t, row_scale + r0, impl_->zero_shift, impl_->bias, n, out_, act, q_out + r0 * out_,
                           scale_out + r0);
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
