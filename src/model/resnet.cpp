// OpenAI's modified-ResNet image tower (clip/model.py ModifiedResNet): a 3-convolution stem with
// an average pool, four stages of bottleneck blocks whose strided steps are average pools, and a
// multi-head attention pool whose single query is the mean of the final feature map.
//
// Every convolution is a oneDNN convolution primitive (kernels/conv.h) with BatchNorm (running
// statistics) folded into its weights and bias at load, and bias, ReLU and the residual sum fused
// into it. Activations stay in one layout from the stem to the end, so no layer reorders its
// input: on AVX-512 CPUs oneDNN's blocked nChw16c (the first convolution reads the planar image
// directly), where the 3x3 layers run as Winograd convolutions; elsewhere, or with
// ModelOptions::convolution = "nhwc", channels-last. The average pools work on the same layout;
// the final feature map is converted once to channels-last, the attention pool's token matrix.
//
// With int8 weights the convolutions are int8 (kernels/conv.h: per-output-channel weights, each
// image's activations quantised to u8 with their own scale, int32 sums) on channels-last
// activations, except the first convolution (it reads the signed pixels and has 3 input
// channels) and any convolution reading fewer than kMinInt8Channels channels. Images then go
// through the tower one at a time, each thread taking whole images (see encode).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>

#include "clipkit/error.h"
#include "kernels/conv.h"
#include "kernels/gemm.h"
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
                    int64_t padding, WeightFormat format, int64_t side, ConvIo io) {
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
  return Conv2d(w, std::move(bias), s, format, side, side, 0, io);
}

struct Bottleneck {
  Conv2d conv1, conv2, conv3, down;
  int64_t stride = 1;
  bool has_down = false;
};

// Stores batch item 0 of an activation in `layout` as [C, H, W].
void trace_image0(DebugTrace* trace, const std::string& key, const float* x, ActLayout layout, int64_t h, int64_t w,
                  int64_t c) {
  if (!trace) return;
  std::vector<float> v(static_cast<size_t>(c * h * w));
  convert_layout(x, layout, v.data(), ActLayout::Nchw, 1, c, h, w);
  (*trace)[key] = std::move(v);
}

// Blocked where oneDNN has optimised kernels for it: AVX-512, and every convolution input past the
// image has at least 16 channels (narrower ones run oneDNN's reference kernel when blocked; only
// the stem's width, half the base width, can be that narrow). "blocked" forces it on any width.
ActLayout activation_layout(const Checkpoint& ckpt, const ModelOptions& options) {
  if (weight_format_from(options) == WeightFormat::Int8) return ActLayout::Nhwc;  // int8 convolutions read NHWC
  if (options.convolution == "nhwc" || !blocked_layout_supported()) return ActLayout::Nhwc;
  if (options.convolution == "blocked") return ActLayout::Blocked16;
  const Tensor& stem = ckpt.get("visual.conv1.weight");
  return !stem.shape.empty() && stem.shape[0] >= 16 ? ActLayout::Blocked16 : ActLayout::Nhwc;
}

class ResNetEncoder final : public ImageEncoder {
 public:
  ResNetEncoder(const Checkpoint& ckpt, const Architecture& arch, const ModelOptions& options)
      : layout_(resnet_layout(ckpt, arch)), params_(resnet_parameter_count(ckpt)), act_(activation_layout(ckpt, options)) {
    const WeightFormat fmt = weight_format_from(options);
    int8_ = fmt == WeightFormat::Int8;
    // The format of a convolution reading `in` channels. int8: the narrow ones stay f32 (see
    // kMinInt8Channels), and so does the first (below).
    const auto cfmt = [&](const std::string& conv) {
      const Tensor& t = ckpt.get(conv);
      return int8_ && t.shape.size() == 4 && t.shape[1] < kMinInt8Channels ? WeightFormat::F32 : fmt;
    };
    const int64_t n = layout_.resolution, s1 = conv_out_size(n, 3, 2, 1);
    ConvIo io;
    io.src = io.dst = act_;
    io.algorithm = options.convolution == "direct" ? ConvAlgorithm::Direct : ConvAlgorithm::Auto;
    ConvIo first = io;  // the blocked layout's first convolution reads the planar image
    if (act_ == ActLayout::Blocked16) first.src = ActLayout::Nchw;
    stem_[0] = load_conv_bn(ckpt, "visual.conv1.weight", "visual.bn1", 2, 1, int8_ ? WeightFormat::F32 : fmt, n, first);
    stem_[1] = load_conv_bn(ckpt, "visual.conv2.weight", "visual.bn2", 1, 1, cfmt("visual.conv2.weight"), s1, io);
    stem_[2] = load_conv_bn(ckpt, "visual.conv3.weight", "visual.bn3", 1, 1, cfmt("visual.conv3.weight"), s1, io);
    int64_t side = avg_pool_out_size(s1, 2);
    for (const auto& stage : layout_.stages) {
      std::vector<Bottleneck> blocks;
      for (const ResNetBlockLayout& B : stage) {
        const int64_t out_side = B.stride > 1 ? avg_pool_out_size(side, B.stride) : side;
        Bottleneck k;
        const std::string c1 = B.prefix + "conv1.weight", c2 = B.prefix + "conv2.weight",
                          c3 = B.prefix + "conv3.weight", d0 = B.prefix + "downsample.0.weight";
        k.conv1 = load_conv_bn(ckpt, c1, B.prefix + "bn1", 1, 0, cfmt(c1), side, io);
        k.conv2 = load_conv_bn(ckpt, c2, B.prefix + "bn2", 1, 1, cfmt(c2), side, io);
        k.conv3 = load_conv_bn(ckpt, c3, B.prefix + "bn3", 1, 0, cfmt(c3), out_side, io);
        if (B.downsample) k.down = load_conv_bn(ckpt, d0, B.prefix + "downsample.1", 1, 0, cfmt(d0), out_side, io);
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
    // k and v are never projected token by token (see attention_pool): their weights stay plain
    // f32 [C, C] (out, in), whatever the weight format.
    wk_ = ckpt.f32("visual.attnpool.k_proj.weight", {C, C});
    bk_ = ckpt.f32("visual.attnpool.k_proj.bias", {C});
    wv_ = ckpt.f32("visual.attnpool.v_proj.weight", {C, C});
    bv_ = ckpt.f32("visual.attnpool.v_proj.bias", {C});
    c_ = Linear(ckpt.f32("visual.attnpool.c_proj.weight", {E, C}), ckpt.f32("visual.attnpool.c_proj.bias", {E}), C, E,
                fmt);
  }

  int64_t parameter_count() const override { return params_; }

  // The convolutions' prepared layouts (Winograd ones included), the attention pool's projections
  // and its f32 tensors.
  int64_t weight_bytes() const override {
    const int64_t f = static_cast<int64_t>(sizeof(float));
    const auto conv = [f](const Conv2d& c) { return c.weight_bytes() + c.shape().out_channels * f; };  // + bias
    int64_t n = 0;
    for (const Conv2d& c : stem_) n += conv(c);
    for (const auto& stage : stages_)
      for (const Bottleneck& B : stage) n += conv(B.conv1) + conv(B.conv2) + conv(B.conv3) + conv(B.down);
    n += linear_bytes(q_) + linear_bytes(c_);
    return n + static_cast<int64_t>(pos_.size() + wk_.size() + bk_.size() + wv_.size() + bv_.size()) * f;
  }

  // e.g. "convolutions nChw16c: 3x3 jit_wino_4x3:avx512_core, 1x1 jit_1x1:avx512_core (batch 16)"
  std::string kernels() const override {
    if (stages_.empty() || stages_[0].empty()) return {};
    // the first block whose convolutions are int8 where some are (narrow first stages stay f32)
    const Bottleneck* b = &stages_[0][0];
    int64_t side = avg_pool_out_size(conv_out_size(layout_.resolution, 3, 2, 1), 2), b_side = side;
    for (const auto& stage : stages_)
      for (const Bottleneck& k : stage) {
        if (k.conv2.format() == WeightFormat::Int8 && b->conv2.format() != WeightFormat::Int8) b = &k, b_side = side;
        if (k.stride > 1) side = avg_pool_out_size(side, k.stride);
      }
    const Bottleneck& B = *b;
    side = b_side;
    const std::string batch = B.conv2.format() == WeightFormat::Int8 ? " (one image per call)" : " (batch 16)";
    return std::string("convolutions ") + (B.conv2.format() == WeightFormat::Int8 ? "int8 " : "") +
           act_layout_name(act_) + ": 3x3 " + B.conv2.implementation(16, side, side) + ", 1x1 " +
           B.conv1.implementation(16, side, side) + batch;
  }

  void encode(const float* pixels, int64_t batch, float* out, DebugTrace* trace) const override {
    if (batch <= 0) return;
    if (!int8_ || trace) {
      encode_batch(pixels, batch, out, trace);
      return;
    }
    // int8: one image at a time (each image has its own activation scales, so its result does not
    // depend on its batch). An image's activations stay in the caches between layers, where a
    // batch's would not: measured 1.2-1.5x the images/s of batches of 16 on RN50, one thread.
    // With several threads and images, each thread takes whole images through the tower, its
    // kernels running on that thread alone, so the threads never wait for each other between
    // layers; a single image uses all threads layer by layer.
    const int64_t image_size = 3 * layout_.resolution * layout_.resolution, E = layout_.embed_dim;
    const int threads = num_threads();
    if (threads < 2 || batch < 2 || omp_in_parallel()) {
      for (int64_t i = 0; i < batch; ++i) encode_batch(pixels + i * image_size, 1, out + i * E, nullptr);
      return;
    }
    std::exception_ptr failure;
#pragma omp parallel num_threads(static_cast<int>(std::min<int64_t>(threads, batch)))
    {
      try {
        apply_thread_setting();
        omp_set_num_threads(1);  // this image's kernels stay on this thread even where nesting is on
      } catch (...) {
#pragma omp critical(clipkit_resnet_split)
        if (!failure) failure = std::current_exception();
      }
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = 0; i < batch; ++i) {
        try {
          encode_batch(pixels + i * image_size, 1, out + i * E, nullptr);
        } catch (...) {
#pragma omp critical(clipkit_resnet_split)
          if (!failure) failure = std::current_exception();
        }
      }
    }
    if (failure) std::rethrow_exception(failure);
  }

 private:
  // Convolutions reading fewer channels than this stay f32 in an int8 model. With so few channels
  // an image's activation scale (its largest value) is set by few, unevenly scaled channels and
  // the others get few quantisation steps: on the tiny-rn fixtures (4- and 8-channel layers) the
  // int8 stem and first stage alone took the embeddings' cosine to the reference from 0.99932 (f32
  // there) down to 0.99674. RN50 and wider models have at least 32 channels everywhere but the
  // first convolution.
  static constexpr int64_t kMinInt8Channels = 16;

  void encode_batch(const float* pixels, int64_t batch, float* out, DebugTrace* trace) const {
    Workspace& ws = workspace();
    const int64_t n = layout_.resolution;
    const ActLayout L = act_;
    int64_t h = n, w = n, c = 3;
    std::vector<float>&x = ws.x, &y = ws.y, &t1 = ws.t1, &t2 = ws.t2, &t3 = ws.t3;
    const auto floats = [&](int64_t channels, int64_t hh, int64_t ww) { return act_floats(L, batch, channels, hh, ww); };
    const float* input = pixels;
    if (stem_[0].io().src == ActLayout::Nhwc) {
      nchw_to_nhwc(pixels, batch, 3, n, n, ensure(x, batch * 3 * n * n));
      input = x.data();
    }
    for (const Conv2d& conv : stem_) {
      const int64_t oh = conv.out_h(h), ow = conv.out_w(w), oc = conv.shape().out_channels;
      conv.forward(input, batch, h, w, ensure(y, floats(oc, oh, ow)), ConvEpilogue::Relu);
      std::swap(x, y);
      input = x.data();
      h = oh, w = ow, c = oc;
    }
    pool(x, y, batch, h, w, c, 2);
    trace_image0(trace, "image0.stem", x.data(), L, h, w, c);

    for (size_t s = 0; s < stages_.size(); ++s) {
      for (const Bottleneck& B : stages_[s]) {
        const int64_t planes = B.conv1.shape().out_channels, oc = B.conv3.shape().out_channels;
        B.conv1.forward(x.data(), batch, h, w, ensure(t1, floats(planes, h, w)), ConvEpilogue::Relu);
        B.conv2.forward(t1.data(), batch, h, w, ensure(t2, floats(planes, h, w)), ConvEpilogue::Relu);
        int64_t oh = h, ow = w;
        if (B.stride > 1) {
          pool(t2, t1, batch, oh, ow, planes, B.stride);
          int64_t ph = h, pw = w;
          pool(x, t3, batch, ph, pw, c, B.stride);  // x now holds the pooled input for the shortcut
        }
        if (B.has_down) {
          // y = relu(conv3(t2) + down(x))
          B.down.forward(x.data(), batch, oh, ow, ensure(y, floats(oc, oh, ow)));
          B.conv3.forward_accumulate(t2.data(), batch, oh, ow, y.data(), ConvEpilogue::Relu);
          std::swap(x, y);
        } else {
          // identity shortcut: x = relu(conv3(t2) + x), in place
          B.conv3.forward_accumulate(t2.data(), batch, oh, ow, x.data(), ConvEpilogue::Relu);
        }
        h = oh, w = ow, c = oc;
      }
      trace_image0(trace, "image0.layer" + std::to_string(s + 1), x.data(), L, h, w, c);
    }
    if (h * w + 1 != layout_.tokens || c != layout_.feature_dim)
      throw Error(ErrorCode::Internal, "ResNet feature map does not match the attention pool");
    const float* tokens = x.data();
    if (L != ActLayout::Nhwc) {
      convert_layout(x.data(), L, ensure(y, batch * h * w * c), ActLayout::Nhwc, batch, c, h, w);
      tokens = y.data();
    }
    attention_pool(tokens, batch, out, trace, ws);
    ws.trim();
  }

  // Activation buffers, per thread and grow-only, so that repeated encodes neither page-fault
  // fresh allocations in nor zero-fill them (measured: ~10 % of a batch-16 RN50 encode). Kept
  // between calls only up to kWorkspaceKeepBytes (RN50: 182 MB at batch 16, 313 MB at batch 32).
  struct Workspace {
    std::vector<float> x, y, t1, t2, t3, tok, kv;
    void trim() {
      size_t bytes = 0;
      for (const auto* v : {&x, &y, &t1, &t2, &t3, &tok, &kv}) bytes += v->capacity() * sizeof(float);
      if (bytes <= kWorkspaceKeepBytes) return;
      for (auto* v : {&x, &y, &t1, &t2, &t3, &tok, &kv}) std::vector<float>().swap(*v);
    }
  };
  static constexpr size_t kWorkspaceKeepBytes = size_t{256} << 20;

  static Workspace& workspace() {
    thread_local Workspace ws;
    return ws;
  }

  // v holds at least n values (contents not preserved when it grows); returns its data.
  static float* ensure(std::vector<float>& v, int64_t n) {
    if (v.size() < static_cast<size_t>(n)) {
      std::vector<float>().swap(v);
      v.resize(static_cast<size_t>(n));
    }
    return v.data();
  }

  // AvgPool2d(k) of `a` through `scratch`; the result ends up in `a`, h and w updated.
  void pool(std::vector<float>& a, std::vector<float>& scratch, int64_t batch, int64_t& h, int64_t& w, int64_t c,
            int64_t k) const {
    const int64_t oh = avg_pool_out_size(h, k), ow = avg_pool_out_size(w, k);
    avg_pool2d(a.data(), batch, h, w, c, k, ensure(scratch, act_floats(act_, batch, c, oh, ow)), act_);
    std::swap(a, scratch);
    h = oh, w = ow;
  }

  // x: [batch, HW, C] -> out [batch, E]. Only the first token's output is needed, so only the
  // mean token is projected to a query, and the key and value projections are folded into it
  // instead of being applied to every token (the same sums, associated differently):
  //   score[h, j] = s·q_h·(Wk_h t_j + bk_h) = (s·Wk_hᵀ q_h)·t_j + s·q_h·bk_h
  //   out_h = Σ_j p[h, j] (Wv_h t_j + bv_h) = Wv_h (Σ_j p[h, j] t_j) + bv_h     (Σ_j p[h, j] = 1)
  // which costs ~2·C·C + 2·H·T·C multiply-adds per image instead of 2·T·C·C (RN50: 17 M instead
  // of 420 M). The small products run single-threaded inside one parallel region.
  void attention_pool(const float* x, int64_t batch, float* out, DebugTrace* trace, Workspace& ws) const {
    const int64_t C = layout_.feature_dim, T = layout_.tokens, hw = T - 1, H = layout_.heads, hd = C / H;
    float* tok = ensure(ws.tok, batch * T * C);
    std::vector<float> first(static_cast<size_t>(batch * C));
    for (int64_t b = 0; b < batch; ++b) {
      const float* xb = x + b * hw * C;
      float* tb = tok + b * T * C;
      for (int64_t ch = 0; ch < C; ++ch) {
        double acc = 0.0;
        for (int64_t i = 0; i < hw; ++i) acc += xb[i * C + ch];
        tb[ch] = static_cast<float>(acc / static_cast<double>(hw)) + pos_[static_cast<size_t>(ch)];
      }
      for (int64_t i = 0; i < hw * C; ++i) tb[C + i] = xb[i] + pos_[static_cast<size_t>(C + i)];
      std::memcpy(first.data() + b * C, tb, static_cast<size_t>(C) * sizeof(float));
    }
    if (trace) (*trace)["image0.attnpool_tokens"] = std::vector<float>(tok, tok + T * C);

    std::vector<float> q(static_cast<size_t>(batch * C));
    q_.forward(first.data(), batch, q.data());
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    for (float& v : q) v *= scale;
    // u [batch, H, C]: Wk_hᵀ q_h; score / p [batch, H, T]; mix [batch, H, C]: Σ_j p[h, j] t_j
    float* u = ensure(ws.kv, 2 * batch * H * C + batch * H * T);
    float* mix = u + batch * H * C;
    float* p = mix + batch * H * C;
    std::vector<float> att(static_cast<size_t>(batch * C));
    const int64_t work = batch * H * (2 * C + 2 * T * C / hd);
#pragma omp parallel if (work > (int64_t{1} << 16))
    {
#pragma omp for schedule(static)
      for (int64_t h = 0; h < H; ++h)  // u[:, h, :] = q[:, h·hd : (h+1)·hd] · Wk[h·hd : (h+1)·hd, :]
        sgemm(false, false, batch, C, hd, 1.0f, q.data() + h * hd, C, wk_.data() + h * hd * C, C, 0.0f, u + h * C,
              H * C);
#pragma omp for schedule(static)
      for (int64_t b = 0; b < batch; ++b) {
        const float* tb = tok + b * T * C;
        float* pb = p + b * H * T;
        sgemm(false, true, H, T, C, 1.0f, u + b * H * C, C, tb, C, 0.0f, pb, T);  // u_b · tokᵀ
        for (int64_t h = 0; h < H; ++h) {
          const float* qh = q.data() + b * C + h * hd;
          double shift = 0.0;
          for (int64_t e = 0; e < hd; ++e) shift += static_cast<double>(qh[e]) * bk_[static_cast<size_t>(h * hd + e)];
          float* ph = pb + h * T;
          double mx = -INFINITY;
          for (int64_t j = 0; j < T; ++j) mx = std::max(mx, static_cast<double>(ph[j]) + shift);
          double sum = 0.0;
          std::vector<double> e(static_cast<size_t>(T));
          for (int64_t j = 0; j < T; ++j) sum += (e[static_cast<size_t>(j)] = std::exp(ph[j] + shift - mx));
          for (int64_t j = 0; j < T; ++j) ph[j] = static_cast<float>(e[static_cast<size_t>(j)] / sum);
        }
        sgemm(false, false, H, C, T, 1.0f, pb, T, tb, C, 0.0f, mix + b * H * C, C);  // p_b · tok
      }
#pragma omp for schedule(static)
      for (int64_t h = 0; h < H; ++h) {  // att[:, h·hd + e] = mix[:, h, :] · Wv[h·hd + e, :] + bv
        sgemm(false, true, batch, hd, C, 1.0f, mix + h * C, H * C, wv_.data() + h * hd * C, C, 0.0f,
              att.data() + h * hd, C);
        for (int64_t b = 0; b < batch; ++b)
          for (int64_t e = 0; e < hd; ++e) att[static_cast<size_t>(b * C + h * hd + e)] += bv_[static_cast<size_t>(h * hd + e)];
      }
    }
    c_.forward(att.data(), batch, out);
  }

  ResNetLayout layout_;
  int64_t params_ = 0;
  ActLayout act_;  // activation layout between layers
  bool int8_ = false;  // int8 weights: int8 convolutions (see kMinInt8Channels), one image per call
  Conv2d stem_[3];
  std::vector<std::vector<Bottleneck>> stages_;
  std::vector<float> pos_;
  Linear q_, c_;
  std::vector<float> wk_, bk_, wv_, bv_;  // attention-pool key / value projections, [C, C] and [C]
};

}  // namespace

std::unique_ptr<ImageEncoder> make_resnet_encoder(const Checkpoint& ckpt, const Architecture& arch,
                                                  const ModelOptions& options) {
  return std::make_unique<ResNetEncoder>(ckpt, arch, options);
}

}  // namespace clipkit
