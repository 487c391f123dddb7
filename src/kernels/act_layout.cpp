#include "kernels/act_layout.h"

#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>

#include "clipkit/error.h"
#include "kernels/gemm.h"
#include "kernels/onednn_util.h"

namespace clipkit {

const char* act_layout_name(ActLayout layout) {
  switch (layout) {
    case ActLayout::Nchw: return "nchw";
    case ActLayout::Nhwc: return "nhwc";
    case ActLayout::Blocked16: return "nChw16c";
  }
  return "?";
}

int64_t act_floats(ActLayout layout, int64_t batch, int64_t c, int64_t h, int64_t w) {
  const int64_t channels = layout == ActLayout::Blocked16 ? (c + 15) / 16 * 16 : c;
  return batch * channels * h * w;
}

bool blocked_layout_supported() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return ok;
}

namespace onednn {

dnnl::memory::format_tag format_tag(ActLayout layout) {
  switch (layout) {
    case ActLayout::Nchw: return dnnl::memory::format_tag::nchw;
    case ActLayout::Nhwc: return dnnl::memory::format_tag::nhwc;
    case ActLayout::Blocked16: return dnnl::memory::format_tag::nChw16c;
  }
  throw Error(ErrorCode::Internal, "unknown activation layout");
}

}  // namespace onednn

void convert_layout(const float* x, ActLayout from, float* y, ActLayout to, int64_t batch, int64_t c, int64_t h,
                    int64_t w) {
  if (batch < 0 || c < 1 || h < 1 || w < 1)
    throw Error(ErrorCode::Shape, "layout conversion called with batch " + std::to_string(batch) + ", " +
                                      std::to_string(c) + " channels and size " + std::to_string(h) + "x" +
                                      std::to_string(w));
  if (batch == 0) return;
  if (x == nullptr || y == nullptr) throw Error(ErrorCode::InvalidArgument, "layout conversion with a null buffer");
  if (from == to) {
    std::memcpy(y, x, static_cast<size_t>(act_floats(from, batch, c, h, w)) * sizeof(float));
    return;
  }
  apply_thread_setting();
  try {
    const dnnl::engine& eng = onednn::cpu_engine();
    const dnnl::memory::dims dims{batch, c, h, w};
    dnnl::memory src({dims, dnnl::memory::data_type::f32, onednn::format_tag(from)}, eng, const_cast<float*>(x));
    dnnl::memory dst({dims, dnnl::memory::data_type::f32, onednn::format_tag(to)}, eng, y);
    dnnl::stream& st = onednn::thread_stream();
    dnnl::reorder(src, dst).execute(st, src, dst);
    st.wait();
  } catch (const dnnl::error& err) {
    throw Error(ErrorCode::Internal, std::string("oneDNN layout conversion ") + act_layout_name(from) + " -> " +
                                         act_layout_name(to) + " failed: " + onednn::describe(err));
  }
}

}  // namespace clipkit
