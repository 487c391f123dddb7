// OpenAI's modified-ResNet image tower (clip/model.py ModifiedResNet): a 3-convolution stem with
// an average pool, four stages of bottleneck blocks whose strided steps are average pools, and a
// multi-head attention pool whose single query is the mean of the final feature map.
//
// Every convolution is a oneDNN convolution primitive (kernels/conv.h) with BatchNorm (running
// statistics) folded into its weights and bias at load, and bias, ReLU and the residual sum fused
// into it. Activations stay channels-last ([batch, h, w, c], the layout oneDNN's kernels prefer
// here) from the stem to the end, so no layer reorders its input; the average pools work on the
// same layout, and the final feature map is directly the attention pool's token matrix.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "clipkit/error.h"
#include "kernels/conv.h"
#include "kernels/linear.h"
#include "kernels/pool.h"
#include "model/encoder.h"
#include "model/resnet_layout.h"
#include "model/transformer.h"

namespace clipkit {

namespace {

// conv (bias-free) + BatchNorm folded into one convolution with bias.
// `side`: the input size this convolution sees at the model's resolution (lays the weights out for it).
Conv2d load_conv_bn(const Checkpoint& ckpt, const std::string& conv, const std::string& bn, int64_t stride,
                    int64_t padding, WeightFormat format, int64_t side) {
  const Tensor& wt = ckpt.get(conv);
  ConvShape s;
  s.out_channels = wt.shape.at(0);
  s.in_channels = wt.shape.at(1);
  s.kernel_h = wt.shape.at(2);
  s.kernel_w = wt.shape.at(3);
  s.stride = stride;
  s.padding = padding;
  std::vector<float> w = ckpt.f32(conv, wt.shape);
  const Shape cs{s.out_channels};
  const auto gamma = ckpt.f32(bn + ".weight", cs), beta = ckpt.f32(bn + ".bias", cs);
  const auto mean = ckpt.f32(bn + ".running_mean", cs), var = ckpt.f32(bn + ".running_var", cs);
  std::vector<float> bias = fold_batchnorm(w, s.out_channels, gamma.data(), beta.data(), mean.data(), var.data(),
                                           kBatchNormEps, "checkpoint '" + ckpt.path + "': " + bn);
  return Conv2d(w, std::move(bias), s, format, side, side);
}

struct Bottleneck {
  Conv2d conv1, conv2, conv3, down;
  int64_t stride = 1;
  bool has_down = false;
};

// Stores batch item 0 of an NHWC activation as [C, H, W].
void trace_nhwc(DebugTrace* trace, const std::string& key, const float* x, int64_t h, int64_t w, int64_t c) {
  if (!trace) return;
  std::vector<float> v(static_cast<size_t>(c * h * w));
  nhwc_to_nchw(x, 1, h, w, c, v.data());
  (*trace)[key] = std::move(v);
}

class ResNetEncoder final : public ImageEncoder {
 public:
  ResNetEncoder(const Checkpoint& ckpt, const Architecture& arch, const ModelOptions& options)
      : layout_(resnet_layout(ckpt, arch)), params_(resnet_parameter_count(ckpt)) {
    const WeightFormat fmt = weight_format_from(options);
    // int8 models keep f32 convolutions (the attention pool's projections are int8): Conv2d's
    // int8 mode, with one activation scale per image, measured 1 - cosine 3.5e-3 against the
    // reference fixtures (tiny-rn, few channels per layer) and was slower than f32 at batch 16
    // on a busy 2-core machine (one primitive call per image). See docs/performance.md.
    const WeightFormat cfmt = fmt == WeightFormat::Int8 ? WeightFormat::F32 : fmt;
    const int64_t n = layout_.resolution, s1 = conv_out_size(n, 3, 2, 1);
    stem_[0] = load_conv_bn(ckpt, "visual.conv1.weight", "visual.bn1", 2, 1, cfmt, n);
    stem_[1] = load_conv_bn(ckpt, "visual.conv2.weight", "visual.bn2", 1, 1, cfmt, s1);
    stem_[2] = load_conv_bn(ckpt, "visual.conv3.weight", "visual.bn3", 1, 1, cfmt, s1);
    int64_t side = avg_pool_out_size(s1, 2);
    for (const auto& stage : layout_.stages) {
      std::vector<Bottleneck> blocks;
      for (const ResNetBlockLayout& B : stage) {
        const int64_t out_side = B.stride > 1 ? avg_pool_out_size(side, B.stride) : side;
        Bottleneck k;
        k.conv1 = load_conv_bn(ckpt, B.prefix + "conv1.weight", B.prefix + "bn1", 1, 0, cfmt, side);
        k.conv2 = load_conv_bn(ckpt, B.prefix + "conv2.weight", B.prefix + "bn2", 1, 1, cfmt, side);
        k.conv3 = load_conv_bn(ckpt, B.prefix + "conv3.weight", B.prefix + "bn3", 1, 0, cfmt, out_side);
        if (B.downsample)
          k.down = load_conv_bn(ckpt, B.prefix + "downsample.0.weight", B.prefix + "downsample.1", 1, 0, cfmt,
                                out_side);
        k.has_down = B.downsample;
        k.stride = B.stride;
        blocks.push_back(std::move(k));
        side = out_side;
      }
      stages_.push_back(std::move(blocks));
    }
    const int64_t C = layout_.feature_dim, E = layout_.embed_dim;
    pos_ = ckpt.f32("visual.attnpool.positional_embedding", {layout_.tokens, C});
    q_ = Linear(ckpt.f32("visual.attnpool.q_proj.weight", {C, C}), ckpt.f32("visual.attnpool.q_proj.bias", {C}), C, C,
                fmt);
    // k and v projections in one GEMM: rows [0, C) = k, [C, 2C) = v
    std::vector<float> wkv = ckpt.f32("visual.attnpool.k_proj.weight", {C, C});
    const std::vector<float> wv = ckpt.f32("visual.attnpool.v_proj.weight", {C, C});
    wkv.insert(wkv.end(), wv.begin(), wv.end());
    std::vector<float> bkv = ckpt.f32("visual.attnpool.k_proj.bias", {C});
    const std::vector<float> bv = ckpt.f32("visual.attnpool.v_proj.bias", {C});
    bkv.insert(bkv.end(), bv.begin(), bv.end());
    kv_ = Linear(std::move(wkv), std::move(bkv), C, 2 * C, fmt);
    c_ = Linear(ckpt.f32("visual.attnpool.c_proj.weight", {E, C}), ckpt.f32("visual.attnpool.c_proj.bias", {E}), C, E,
                fmt);
  }

  int64_t parameter_count() const override { return params_; }

  void encode(const float* pixels, int64_t batch, float* out, DebugTrace* trace) const override {
    if (batch <= 0) return;
    const int64_t n = layout_.resolution;
    int64_t h = n, w = n, c = 3;
    std::vector<float> x(static_cast<size_t>(batch * 3 * n * n)), y;
    nchw_to_nhwc(pixels, batch, 3, n, n, x.data());

    for (const Conv2d& conv : stem_) {
      const int64_t oh = conv.out_h(h), ow = conv.out_w(w), oc = conv.shape().out_channels;
      y.resize(static_cast<size_t>(batch * oh * ow * oc));
      conv.forward(x.data(), batch, h, w, y.data(), ConvEpilogue::Relu);
      std::swap(x, y);
      h = oh, w = ow, c = oc;
    }
    pool(x, y, batch, h, w, c, 2);
    trace_nhwc(trace, "image0.stem", x.data(), h, w, c);

    std::vector<float> t1, t2, t3;
    for (size_t s = 0; s < stages_.size(); ++s) {
      for (const Bottleneck& B : stages_[s]) {
        const int64_t planes = B.conv1.shape().out_channels, oc = B.conv3.shape().out_channels;
        t1.resize(static_cast<size_t>(batch * h * w * planes));
        B.conv1.forward(x.data(), batch, h, w, t1.data(), ConvEpilogue::Relu);
        t2.resize(t1.size());
        B.conv2.forward(t1.data(), batch, h, w, t2.data(), ConvEpilogue::Relu);
        int64_t oh = h, ow = w;
        if (B.stride > 1) {
          pool(t2, t1, batch, oh, ow, planes, B.stride);
          int64_t ph = h, pw = w;
          pool(x, t3, batch, ph, pw, c, B.stride);  // x now holds the pooled input for the shortcut
        }
        if (B.has_down) {
          // y = relu(conv3(t2) + down(x))
          y.resize(static_cast<size_t>(batch * oh * ow * oc));
          B.down.forward(x.data(), batch, oh, ow, y.data());
          B.conv3.forward_accumulate(t2.data(), batch, oh, ow, y.data(), ConvEpilogue::Relu);
          std::swap(x, y);
        } else {
          // identity shortcut: x = relu(conv3(t2) + x), in place
          B.conv3.forward_accumulate(t2.data(), batch, oh, ow, x.data(), ConvEpilogue::Relu);
        }
        h = oh, w = ow, c = oc;
      }
      trace_nhwc(trace, "image0.layer" + std::to_string(s + 1), x.data(), h, w, c);
    }
    if (h * w + 1 != layout_.tokens || c != layout_.feature_dim)
      throw Error(ErrorCode::Internal, "ResNet feature map does not match the attention pool");
    attention_pool(x.data(), batch, out, trace);
  }

 private:
  // AvgPool2d(k) of `a` (NHWC) through `scratch`; the result ends up in `a`, h and w updated.
  static void pool(std::vector<float>& a, std::vector<float>& scratch, int64_t batch, int64_t& h, int64_t& w,
                   int64_t c, int64_t k) {
    const int64_t oh = avg_pool_out_size(h, k), ow = avg_pool_out_size(w, k);
    scratch.resize(static_cast<size_t>(batch * oh * ow * c));
    avg_pool2d_nhwc(a.data(), batch, h, w, c, k, scratch.data());
    std::swap(a, scratch);
    h = oh, w = ow;
  }

  // x: [batch, HW, C] -> out [batch, E]. Only the first token's output is needed, so only the
  // mean token is projected to a query.
  void attention_pool(const float* x, int64_t batch, float* out, DebugTrace* trace) const {
    const int64_t C = layout_.feature_dim, T = layout_.tokens, hw = T - 1, H = layout_.heads, hd = C / H;
    std::vector<float> tok(static_cast<size_t>(batch * T * C));
    std::vector<float> first(static_cast<size_t>(batch * C));
    for (int64_t b = 0; b < batch; ++b) {
      const float* xb = x + b * hw * C;
      float* tb = tok.data() + b * T * C;
      for (int64_t ch = 0; ch < C; ++ch) {
        double acc = 0.0;
        for (int64_t i = 0; i < hw; ++i) acc += xb[i * C + ch];
        tb[ch] = static_cast<float>(acc / static_cast<double>(hw)) + pos_[static_cast<size_t>(ch)];
      }
      for (int64_t i = 0; i < hw * C; ++i) tb[C + i] = xb[i] + pos_[static_cast<size_t>(C + i)];
      std::memcpy(first.data() + b * C, tb, static_cast<size_t>(C) * sizeof(float));
    }
    if (trace) (*trace)["image0.attnpool_tokens"] = std::vector<float>(tok.begin(), tok.begin() + T * C);

    std::vector<float> kv(static_cast<size_t>(batch * T * 2 * C)), q(static_cast<size_t>(batch * C));
    kv_.forward(tok.data(), batch * T, kv.data());
    q_.forward(first.data(), batch, q.data());
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    std::vector<float> att(static_cast<size_t>(batch * C));
#pragma omp parallel for schedule(static) if (batch * T * C > (int64_t{1} << 15))
    for (int64_t bh = 0; bh < batch * H; ++bh) {
      const int64_t b = bh / H, hh = bh % H;
      const float* qv = q.data() + b * C + hh * hd;
      const float* kvb = kv.data() + b * T * 2 * C;
      std::vector<double> p(static_cast<size_t>(T));
      double mx = -INFINITY;
      for (int64_t j = 0; j < T; ++j) {
        const float* kj = kvb + j * 2 * C + hh * hd;
        double d = 0.0;
        for (int64_t e = 0; e < hd; ++e) d += static_cast<double>(qv[e] * scale) * kj[e];
        p[static_cast<size_t>(j)] = d;
        mx = std::max(mx, d);
      }
      double sum = 0.0;
      for (int64_t j = 0; j < T; ++j) sum += (p[static_cast<size_t>(j)] = std::exp(p[static_cast<size_t>(j)] - mx));
      float* o = att.data() + b * C + hh * hd;
      for (int64_t e = 0; e < hd; ++e) {
        double acc = 0.0;
        for (int64_t j = 0; j < T; ++j) acc += p[static_cast<size_t>(j)] * kvb[j * 2 * C + C + hh * hd + e];
        o[e] = static_cast<float>(acc / sum);
      }
    }
    c_.forward(att.data(), batch, out);
  }

  ResNetLayout layout_;
  int64_t params_ = 0;
  Conv2d stem_[3];
  std::vector<std::vector<Bottleneck>> stages_;
  std::vector<float> pos_;
  Linear q_, kv_, c_;
};

}  // namespace

std::unique_ptr<ImageEncoder> make_resnet_encoder(const Checkpoint& ckpt, const Architecture& arch,
                                                  const ModelOptions& options) {
  return std::make_unique<ResNetEncoder>(ckpt, arch, options);
}

}  // namespace clipkit
