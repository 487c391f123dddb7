#include "kernels/pool.h"

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>

#include "clipkit/error.h"
#include "kernels/gemm.h"
#include "kernels/onednn_util.h"

namespace clipkit {

int64_t avg_pool_out_size(int64_t in, int64_t k) {
  if (k < 1) throw Error(ErrorCode::Shape, "average pooling: invalid kernel size " + std::to_string(k));
  if (in < k)
    throw Error(ErrorCode::Shape, "average pooling: input size " + std::to_string(in) + " is smaller than the kernel " +
                                      std::to_string(k));
  return in / k;
}

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// One pooling primitive per (batch, h, w, c, k, layout, threads it runs on); beyond this many the cache is cleared.
constexpr size_t kMaxCachedPools = 64;

struct PoolEntry {
  dnnl::pooling_forward prim;
  dnnl::memory::desc src, dst, scratch;
};

std::shared_ptr<const PoolEntry> pool_entry(int64_t batch, int64_t h, int64_t w, int64_t c, int64_t k, int64_t oh,
                                            int64_t ow, ActLayout layout) {
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int, int>;
  static std::mutex mu;
  static std::map<Key, std::shared_ptr<const PoolEntry>> cache;
  const Key key{batch, h, w, c, k, static_cast<int>(layout), omp_in_parallel() ? 1 : num_threads()};
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto e = std::make_shared<PoolEntry>();
  // AvgPool2d(k): window k, stride k, no padding; oneDNN's output size (h - k) / k + 1 is PyTorch's floor(h / k).
  const tag t = onednn::format_tag(layout);
  const dnnl::memory::desc src({batch, c, h, w}, dt::f32, t), dst({batch, c, oh, ow}, dt::f32, t);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const dnnl::pooling_forward::primitive_desc pd(
      dnnl::pooling_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_avg_exclude_padding,
                                  src, dst, {k, k}, {k, k}, {0, 0}, {0, 0}),
      attr, onednn::cpu_engine());
  e->src = pd.src_desc();
  e->dst = pd.dst_desc();
  e->scratch = pd.scratchpad_desc();
  e->prim = dnnl::pooling_forward(pd);
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() >= kMaxCachedPools) cache.clear();
  cache.emplace(key, e);
  return e;
}

}  // namespace

void avg_pool2d(const float* x, int64_t batch, int64_t h, int64_t w, int64_t c, int64_t k, float* y,
                ActLayout layout) {
  const int64_t oh = avg_pool_out_size(h, k), ow = avg_pool_out_size(w, k);
  if (batch < 0 || c < 1)
    throw Error(ErrorCode::Shape, "average pooling called with batch " + std::to_string(batch) + " and " +
                                      std::to_string(c) + " channels");
  if (batch == 0) return;
  if (x == nullptr || y == nullptr) throw Error(ErrorCode::InvalidArgument, "average pooling called with a null buffer");
  if (k == 1) {
    std::memcpy(y, x, static_cast<size_t>(act_floats(layout, batch, c, h, w)) * sizeof(float));
    return;
  }
  apply_thread_setting();
  try {
    const auto e = pool_entry(batch, h, w, c, k, oh, ow, layout);
    const dnnl::engine& eng = onednn::cpu_engine();
    thread_local std::vector<char> scratch_buf;
    dnnl::memory src(e->src, eng, const_cast<float*>(x)), dst(e->dst, eng, y);
    dnnl::memory scratch(e->scratch, eng, onednn::grow(scratch_buf, e->scratch.get_size() + 1));
    dnnl::stream& st = onednn::thread_stream();
    e->prim.execute(st, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
    st.wait();
  } catch (const dnnl::error& err) {
    throw Error(ErrorCode::Internal, "oneDNN average pooling failed (" + std::to_string(batch) + "x" +
                                         std::to_string(h) + "x" + std::to_string(w) + "x" + std::to_string(c) +
                                         " " + act_layout_name(layout) + ", k " + std::to_string(k) +
                                         "): " + onednn::describe(err));
  }
}

void avg_pool2d_reference(const float* x, int64_t batch, int64_t c, int64_t h, int64_t w, int64_t k, float* y) {
  const int64_t oh = avg_pool_out_size(h, k), ow = avg_pool_out_size(w, k);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          double acc = 0.0;
          for (int64_t ky = 0; ky < k; ++ky)
            for (int64_t kx = 0; kx < k; ++kx) acc += x[((b * c + ch) * h + oy * k + ky) * w + ox * k + kx];
          y[((b * c + ch) * oh + oy) * ow + ox] = static_cast<float>(acc / static_cast<double>(k * k));
        }
}

}  // namespace clipkit
