// Linear's state, shared by the files that implement it (linear.cpp: building and running a
// layer; linear_packed.cpp: packed layouts written to and read from files). Internal to kernels.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "clipkit/error.h"
#include "core/half.h"
#include "core/packed_weight.h"
#include "kernels/cpu.h"
#include "kernels/gemm.h"
#include "kernels/int8.h"
#include "kernels/int8_epilogue.h"
#include "kernels/linear.h"
#include "kernels/onednn_util.h"
#include "kernels/weight_memory.h"
#include "kernels/work_memory.h"

namespace clipkit {

namespace linear_detail {

inline void check_finite_shape(int64_t in, int64_t out) {
  if (in <= 0 || out <= 0)
    throw Error(ErrorCode::Shape, "linear layer needs positive sizes, got in=" + std::to_string(in) +
                                      " out=" + std::to_string(out));
}

}  // namespace linear_detail

struct Linear::Impl {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;

  // The row count used to ask oneDNN for its preferred weight layout. Its brgemm kernels choose the
  // same blocked layout for every row count (checked by the tests: any mismatch would fall back to
  // an explicit reorder, never to wrong results).
  static constexpr int64_t kLayoutProbeRows = 256;
  // Primitives cached per layer (distinct row counts); beyond this the cache is cleared.
  static constexpr size_t kMaxCachedPrimitives = 64;
  // Primitives shared by the layers of one shape (a transformer's blocks repeat theirs): distinct
  // shapes kept process-wide before that cache is cleared.
  static constexpr size_t kMaxSharedPrimitives = 1024;
  // F16 layers are stored as column chunks of at most about this many bytes once widened to f32,
  // so that a chunk widened by one thread is still in its L2 cache when that thread multiplies it.
  static constexpr int64_t kHalfChunkBytes = int64_t{1} << 20;

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
    bool scaled;   // Int8: the weight scales applied by the primitive (else the caller applies them)
    bool operator<(const Key& o) const {
      return std::tie(rows, act, accumulate, threads, cols, scaled) <
             std::tie(o.rows, o.act, o.accumulate, o.threads, o.cols, o.scaled);
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

  // Int8: the primitive gives acc(s32) -> f32, times weight_scale[n] when `scaled`; the per-row
  // activation scale, bias and activation follow in the epilogue (oneDNN 2.x kernels take no
  // per-row scales). oneDNN 2.x's brgemm kernels take output scales only at creation (runtime
  // scales fall back to a slower kernel with another weight layout), so a scaled primitive is its
  // layer's own, while unscaled ones are shared by the layers of one shape, the epilogue applying
  // the weight scales with the same rounding (int8_epilogue's and int8_dequantize_row's col_scale).
  dnnl::primitive_attr make_attr(Activation act, bool accumulate, bool scaled = false) const {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (format == WeightFormat::Int8) {
      if (scaled) attr.set_output_scales(1 << 1, out_scale);
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
                                       bool accumulate, int64_t cols = 0, bool scaled = false) const {
    if (cols == 0) cols = out;
    const dnnl::memory::desc src({rows, in}, src_dt(), tag::ab);
    const dnnl::memory::desc dst({rows, cols}, dt::f32, dnnl::memory::dims{out, 1});
    const bool fused_bias = !bias.empty() && format != WeightFormat::Int8;
    if (fused_bias) {
      const dnnl::memory::desc b({1, cols}, dt::f32, tag::ab);
      return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wdesc, b, dst), make_attr(act, accumulate, scaled),
                                          onednn::cpu_engine());
    }
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wdesc, dst), make_attr(act, accumulate, scaled),
                                        onednn::cpu_engine());
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
    dnnl::memory src(plain_desc, onednn::cpu_engine(), const_cast<void*>(plain));
    packed_storage = allocate_weight_memory(packed_desc.get_size());
    packed = dnnl::memory(packed_desc, onednn::cpu_engine(), packed_storage.get());
    dnnl::stream& s = onednn::thread_stream();
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
        dnnl::memory src(view, onednn::cpu_engine(), const_cast<float*>(plain + ch.col0 * in));
        dnnl::memory dst(ch.desc, onednn::cpu_engine(), onednn::grow(tmp, size));
        dnnl::stream& s = onednn::thread_stream();
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

  // chunk: an F16 chunk's entry (its width and packed layout), else the whole layer's. scaled:
  // Int8 only, a primitive applying the layer's weight scales (its own, not shared).
  std::shared_ptr<const Entry> entry(int64_t rows, Activation act, bool accumulate, const HalfChunk* chunk = nullptr,
                                     bool scaled = false) const {
    const int64_t cols = chunk ? chunk->cols : out;
    const dnnl::memory::desc& wanted = chunk ? chunk->desc : packed_desc;
    const Key key{rows, static_cast<int>(act), accumulate, num_threads(), cols, scaled};
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = cache.find(key);
      if (it != cache.end()) return it->second;
    }
    auto e = scaled ? make_entry(rows, wanted, act, accumulate, cols, true) : shared_entry(key, wanted);
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
                                          bool accumulate, int64_t cols, bool scaled = false) const {
    auto e = std::make_shared<Entry>();
    e->layout = wanted;
    try {
      auto pd = make_pd(rows, wanted, act, accumulate, cols, scaled);
      e->weights = wanted;
      if (std::string(pd.impl_info_str()).rfind("ref", 0) == 0) {
        // oneDNN found no optimised kernel for our packed layout at this size: let it choose.
        auto pd_any =
            make_pd(rows, dnnl::memory::desc({in, cols}, weight_dt(), tag::any), act, accumulate, cols, scaled);
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
                                           " linear layer: " + onednn::describe(err));
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
    thread_local WorkVector<float> wide;
    thread_local WorkVector<char> scratch_buf, reorder_buf;
    const dnnl::engine& eng = onednn::cpu_engine();
    dnnl::stream& s = onednn::thread_stream();
    try {
      const size_t count = ch.desc.get_size() / sizeof(float);
      float* w = onednn::grow(wide, count);
      onednn::half_to_float_serial(ch.data, w, count);
      dnnl::memory wmem(ch.desc, eng, w);
      if (e->needs_reorder) {
        dnnl::memory re(e->weights, eng, onednn::grow(reorder_buf, e->weights.get_size()));
        dnnl::reorder(wmem, re).execute(s, wmem, re);
        wmem = re;
      }
      dnnl::memory src(e->src, eng, const_cast<float*>(x));
      dnnl::memory dst(e->dst, eng, y + ch.col0);
      dnnl::memory scratch(e->scratch, eng, onednn::grow(scratch_buf, e->scratch.get_size() + 1));
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
                                           "): " + onednn::describe(err));
    }
  }

  // Int8: y = the integer product as floats, times the weight scales when `scaled`.
  void run(const void* x, int64_t rows, float* y, Activation act, bool accumulate, bool scaled = false) const {
    if (format == WeightFormat::F16) {
      run_half(static_cast<const float*>(x), rows, y, act, accumulate);
      return;
    }
    auto e = entry(rows, act, accumulate, nullptr, scaled && format == WeightFormat::Int8);
    dnnl::stream& s = onednn::thread_stream();
    thread_local WorkVector<char> scratch_buf;
    thread_local WorkVector<char> reorder_buf;
    const dnnl::engine& eng = onednn::cpu_engine();
    try {
      dnnl::memory wmem = packed;
      if (e->needs_reorder) {
        dnnl::memory re(e->weights, eng, onednn::grow(reorder_buf, e->weights.get_size()));
        dnnl::reorder(wmem, re).execute(s, wmem, re);
        wmem = re;
      }
      dnnl::memory src(e->src, eng, const_cast<void*>(x));
      dnnl::memory dst(e->dst, eng, y);
      dnnl::memory scratch(e->scratch, eng, onednn::grow(scratch_buf, e->scratch.get_size() + 1));
      std::unordered_map<int, dnnl::memory> args{
          {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wmem}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}};
      if (!bias.empty() && format != WeightFormat::Int8)
        args.emplace(DNNL_ARG_BIAS, dnnl::memory({{1, out}, dt::f32, tag::ab}, eng, const_cast<float*>(bias.data())));
      e->prim.execute(s, args);
      s.wait();
    } catch (const dnnl::error& err) {
      throw Error(ErrorCode::Internal, "oneDNN matmul failed for a " + std::to_string(rows) + "x" + std::to_string(in) +
                                           " -> " + std::to_string(out) + " linear layer: " + onednn::describe(err));
    }
  }
};

}  // namespace clipkit
