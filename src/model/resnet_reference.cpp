// Scalar reference of the modified-ResNet image tower, written to mirror clip/model.py step by
// step (NCHW, BatchNorm unfolded, attention over every token), with none of the fast path's
// packing, folding or layout changes. Only the tests and debugging use it.
#include <algorithm>
#include <cmath>

#include "clipkit/error.h"
#include "kernels/conv.h"
#include "kernels/pool.h"
#include "model/resnet_layout.h"

namespace clipkit {

namespace {

struct Act {
  std::vector<float> v;  // [c, h, w]
  int64_t c = 0, h = 0, w = 0;
};

// relu?(bn(conv(x))) for one image.
Act conv_bn(const Checkpoint& ckpt, const std::string& conv, const std::string& bn, const Act& x, int64_t kernel,
            int64_t stride, int64_t padding, bool relu) {
  const Tensor& wt = ckpt.get(conv);
  const std::vector<float> w = wt.to_f32();
  ConvShape s;
  s.out_channels = wt.shape[0];
  s.in_channels = wt.shape[1];
  s.kernel_h = s.kernel_w = kernel;
  s.stride = stride;
  s.padding = padding;
  Act y;
  y.c = s.out_channels;
  y.h = conv_out_size(x.h, kernel, stride, padding);
  y.w = conv_out_size(x.w, kernel, stride, padding);
  y.v.resize(static_cast<size_t>(y.c * y.h * y.w));
  conv2d_reference(x.v.data(), 1, x.h, x.w, w.data(), nullptr, s, y.v.data());
  const Shape cs{y.c};
  const auto gamma = ckpt.f32(bn + ".weight", cs), beta = ckpt.f32(bn + ".bias", cs);
  const auto mean = ckpt.f32(bn + ".running_mean", cs), var = ckpt.f32(bn + ".running_var", cs);
  batchnorm_reference(y.v.data(), 1, y.c, y.h * y.w, gamma.data(), beta.data(), mean.data(), var.data(),
                      kBatchNormEps);
  if (relu)
    for (float& f : y.v) f = std::max(f, 0.0f);
  return y;
}

Act pool(const Act& x, int64_t k) {
  if (k == 1) return x;
  Act y;
  y.c = x.c;
  y.h = avg_pool_out_size(x.h, k);
  y.w = avg_pool_out_size(x.w, k);
  y.v.resize(static_cast<size_t>(y.c * y.h * y.w));
  avg_pool2d_reference(x.v.data(), 1, x.c, x.h, x.w, k, y.v.data());
  return y;
}

// y[r, o] = x[r, :] · W[o, :] + b[o], double accumulation.
std::vector<double> linear(const std::vector<double>& x, int64_t rows, const std::vector<float>& w,
                           const std::vector<float>& b, int64_t in, int64_t out) {
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = b[static_cast<size_t>(o)];
      for (int64_t i = 0; i < in; ++i) acc += x[static_cast<size_t>(r * in + i)] * w[static_cast<size_t>(o * in + i)];
      y[static_cast<size_t>(r * out + o)] = acc;
    }
  return y;
}

}  // namespace

void resnet_reference_forward(const Checkpoint& ckpt, const Architecture& arch, const float* pixels, int64_t batch,
                              float* out, DebugTrace* trace) {
  const ResNetLayout L = resnet_layout(ckpt, arch);
  const int64_t n = L.resolution, C = L.feature_dim, T = L.tokens, E = L.embed_dim;
  const auto pos = ckpt.f32("visual.attnpool.positional_embedding", {T, C});
  const auto wq = ckpt.f32("visual.attnpool.q_proj.weight", {C, C}), bq = ckpt.f32("visual.attnpool.q_proj.bias", {C});
  const auto wk = ckpt.f32("visual.attnpool.k_proj.weight", {C, C}), bk = ckpt.f32("visual.attnpool.k_proj.bias", {C});
  const auto wv = ckpt.f32("visual.attnpool.v_proj.weight", {C, C}), bv = ckpt.f32("visual.attnpool.v_proj.bias", {C});
  const auto wc = ckpt.f32("visual.attnpool.c_proj.weight", {E, C}), bc = ckpt.f32("visual.attnpool.c_proj.bias", {E});

  auto record = [&](int64_t b, const std::string& key, const std::vector<float>& v) {
    if (trace && b == 0) (*trace)[key] = v;
  };

  for (int64_t b = 0; b < batch; ++b) {
    Act x;
    x.c = 3;
    x.h = x.w = n;
    x.v.assign(pixels + b * 3 * n * n, pixels + (b + 1) * 3 * n * n);
    x = conv_bn(ckpt, "visual.conv1.weight", "visual.bn1", x, 3, 2, 1, true);
    x = conv_bn(ckpt, "visual.conv2.weight", "visual.bn2", x, 3, 1, 1, true);
    x = conv_bn(ckpt, "visual.conv3.weight", "visual.bn3", x, 3, 1, 1, true);
    x = pool(x, 2);
    record(b, "image0.stem", x.v);
    for (size_t s = 0; s < L.stages.size(); ++s) {
      for (const ResNetBlockLayout& B : L.stages[s]) {
        const std::string& p = B.prefix;
        Act o = conv_bn(ckpt, p + "conv1.weight", p + "bn1", x, 1, 1, 0, true);
        o = conv_bn(ckpt, p + "conv2.weight", p + "bn2", o, 3, 1, 1, true);
        o = pool(o, B.stride);
        o = conv_bn(ckpt, p + "conv3.weight", p + "bn3", o, 1, 1, 0, false);
        const Act id = B.downsample ? conv_bn(ckpt, p + "downsample.0.weight", p + "downsample.1", pool(x, B.stride),
                                              1, 1, 0, false)
                                    : x;
        if (id.v.size() != o.v.size()) throw Error(ErrorCode::Internal, "reference ResNet: shortcut size mismatch");
        for (size_t i = 0; i < o.v.size(); ++i) o.v[i] = std::max(o.v[i] + id.v[i], 0.0f);
        x = std::move(o);
      }
      record(b, "image0.layer" + std::to_string(s + 1), x.v);
    }
    if (x.c != C || x.h * x.w + 1 != T)
      throw Error(ErrorCode::Shape, "reference ResNet: feature map [" + std::to_string(x.c) + ", " +
                                        std::to_string(x.h) + ", " + std::to_string(x.w) +
                                        "] does not match the attention pool");
    // tokens [T, C]: mean over positions, then every position; plus positional embedding
    const int64_t hw = x.h * x.w;
    std::vector<double> tok(static_cast<size_t>(T * C));
    for (int64_t c = 0; c < C; ++c) {
      double mean = 0.0;
      for (int64_t i = 0; i < hw; ++i) mean += x.v[static_cast<size_t>(c * hw + i)];
      mean /= static_cast<double>(hw);
      tok[static_cast<size_t>(c)] = static_cast<double>(static_cast<float>(mean)) + pos[static_cast<size_t>(c)];
      for (int64_t i = 0; i < hw; ++i)
        tok[static_cast<size_t>((i + 1) * C + c)] =
            static_cast<double>(x.v[static_cast<size_t>(c * hw + i)]) + pos[static_cast<size_t>((i + 1) * C + c)];
    }
    if (trace && b == 0) {
      std::vector<float> t(tok.size());
      for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(tok[i]);
      (*trace)["image0.attnpool_tokens"] = std::move(t);
    }
    const auto q = linear(tok, T, wq, bq, C, C), k = linear(tok, T, wk, bk, C, C), v = linear(tok, T, wv, bv, C, C);
    const int64_t H = L.heads, hd = C / H;
    std::vector<double> att(static_cast<size_t>(T * C));  // every query, as the reference computes
    std::vector<double> sc(static_cast<size_t>(T));
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < T; ++j) {
          double d = 0.0;
          for (int64_t e = 0; e < hd; ++e)
            d += q[static_cast<size_t>(i * C + h * hd + e)] * k[static_cast<size_t>(j * C + h * hd + e)];
          sc[static_cast<size_t>(j)] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, sc[static_cast<size_t>(j)]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < T; ++j) sum += (sc[static_cast<size_t>(j)] = std::exp(sc[static_cast<size_t>(j)] - mx));
        for (int64_t e = 0; e < hd; ++e) {
          double acc = 0.0;
          for (int64_t j = 0; j < T; ++j) acc += sc[static_cast<size_t>(j)] * v[static_cast<size_t>(j * C + h * hd + e)];
          att[static_cast<size_t>(i * C + h * hd + e)] = acc / sum;
        }
      }
    const auto y = linear(att, T, wc, bc, C, E);
    for (int64_t e = 0; e < E; ++e) out[b * E + e] = static_cast<float>(y[static_cast<size_t>(e)]);  // token 0
  }
}

}  // namespace clipkit
