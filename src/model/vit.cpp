// The ViT image tower (clip.model.VisionTransformer): patch convolution as a GEMM over patches,
// class token, positional embedding, ln_pre, residual blocks, ln_post of the class token, projection.
// Without a trace the last block projects queries and runs attention and the MLP for the class
// token only (keys and values for every token). Int8 batches of at least 4 images per thread are
// split between the threads, each running the whole tower.
#include <omp.h>

#include <algorithm>
#include <exception>
#include <string>

#include "clipkit/error.h"
#include "kernels/activation.h"
#include "kernels/gemm.h"
#include "kernels/int8.h"
#include "kernels/work_memory.h"
#include "model/encoder.h"
#include "model/transformer.h"

namespace clipkit {

namespace {

class VitEncoder final : public ImageEncoder {
 public:
  VitEncoder(const Checkpoint& ckpt, const Architecture& arch, const ModelOptions& options)
      : width_(arch.vision_width),
        patch_(arch.vision_patch_size),
        grid_(arch.image_resolution / std::max(1, arch.vision_patch_size)),
        resolution_(arch.image_resolution),
        embed_dim_(arch.embed_dim) {
    if (patch_ <= 0 || grid_ <= 0 || grid_ * patch_ != resolution_)
      throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': image resolution " + std::to_string(resolution_) +
                                        " is not a multiple of the patch size " + std::to_string(patch_));
    const WeightFormat fmt = weight_format_from(options);
    // conv1 [width, 3, p, p] flattened is exactly a [width, 3·p·p] linear weight over (c, ky, kx) patches.
    conv1_ = load_linear_rows(ckpt, "visual.conv1.weight", {width_, 3, patch_, patch_}, 0, width_, {}, fmt);
    class_embedding_ = ckpt.f32("visual.class_embedding", {width_});
    positional_embedding_ = ckpt.f32("visual.positional_embedding", {tokens(), width_});
    ln_pre_ = LayerNormParams(ckpt, "visual.ln_pre.", width_);
    transformer_ = Transformer(ckpt, "visual.transformer.", width_, arch.vision_layers, arch.vision_heads,
                               activation_from_name(arch.activation), fmt);
    ln_post_ = LayerNormParams(ckpt, "visual.ln_post.", width_);
    // proj [width, embed] is applied as x @ proj: a linear layer with weight projᵀ.
    const std::vector<float> proj = ckpt.f32("visual.proj", {width_, embed_dim_});
    std::vector<float> proj_t(proj.size());
    for (int64_t i = 0; i < width_; ++i)
      for (int64_t j = 0; j < embed_dim_; ++j) proj_t[j * width_ + i] = proj[i * embed_dim_ + j];
    proj_ = Linear(std::move(proj_t), {}, width_, embed_dim_, fmt);
  }

  int64_t tokens() const { return static_cast<int64_t>(grid_) * grid_ + 1; }

  int64_t weight_bytes() const override {
    const int64_t f = static_cast<int64_t>(sizeof(float));
    return linear_bytes(conv1_) + linear_bytes(proj_) + transformer_.weight_bytes() +
           static_cast<int64_t>(class_embedding_.size() + positional_embedding_.size()) * f +
           (ln_pre_.parameter_count() + ln_post_.parameter_count()) * f;
  }
  int64_t parameter_count() const override {
    return conv1_.parameter_count() + static_cast<int64_t>(class_embedding_.size() + positional_embedding_.size()) +
           ln_pre_.parameter_count() + transformer_.parameter_count() + ln_post_.parameter_count() +
           proj_.parameter_count();
  }

  std::string kernels() const override {
    if (conv1_.format() != WeightFormat::Int8) return {};
    return "int8 image batches of at least " + std::to_string(kMinImagesPerThread) + " images or " +
           std::to_string(kMinRowsPerThread) + " token rows per thread split between the threads";
  }

  void encode(const float* pixels, int64_t batch, float* out, DebugTrace* trace) const override {
    if (batch <= 0) return;
    const int threads = num_threads();
    if (trace || conv1_.format() != WeightFormat::Int8 || threads < 2 || !split_between_threads(batch, threads) ||
        omp_in_parallel()) {
      encode_images(pixels, batch, out, trace);
      return;
    }
    // Int8, several images per thread: each thread takes its own share of the batch through the
    // whole tower, its kernels running on that thread alone (nested regions are inactive), so the
    // threads never wait for each other between layers. Every result row depends on its own
    // image only (activations are quantised per token), so the output is the same bits either way.
    // Measured on ViT-B/32 at batch 8 to 32: 1.0-1.6 % more images/s; f32 gained nothing. Large
    // towers split from fewer images (kMinRowsPerThread).
    const int64_t image_size = 3 * static_cast<int64_t>(resolution_) * resolution_;
    std::exception_ptr failure;
#pragma omp parallel num_threads(threads)
    {
      const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
      const int64_t begin = batch * t / n, end = batch * (t + 1) / n;
      try {
        apply_thread_setting();
        omp_set_num_threads(1);  // this share's kernels stay on this thread even where nesting is on
        if (end > begin) encode_images(pixels + begin * image_size, end - begin, out + begin * embed_dim_, nullptr);
      } catch (...) {
#pragma omp critical(clipkit_vit_split)
        if (!failure) failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
  }

 private:
  // Images go through the tower in chunks of about 4096 token rows (bounded working memory).
  void encode_images(const float* pixels, int64_t batch, float* out, DebugTrace* trace) const {
    const int64_t chunk = std::max<int64_t>(1, 4096 / tokens());
    const int64_t image_size = 3 * static_cast<int64_t>(resolution_) * resolution_;
    for (int64_t start = 0; start < batch; start += chunk) {
      const int64_t n = std::min(chunk, batch - start);
      encode_chunk(pixels + start * image_size, n, out + start * embed_dim_, start == 0 ? trace : nullptr);
    }
  }

  // An int8 batch is split between the threads when every thread gets at least this many images,
  // or whole images making at least this many token rows: ViT-L/14 at batch 4 on 2 threads (514
  // rows each) used about 5 % more CPU time split than shared, while sharing its layers left each
  // thread asleep at the layers' joins, waiting for the other, for 5-9 % of its CPU time or more
  // (docs/performance.md, "Large open_clip models").
  static constexpr int64_t kMinImagesPerThread = 4;
  static constexpr int64_t kMinRowsPerThread = 512;

  bool split_between_threads(int64_t batch, int threads) const {
    const int64_t per_thread = batch / threads;
    return per_thread >= kMinImagesPerThread || (per_thread >= 1 && per_thread * tokens() >= kMinRowsPerThread);
  }

  void encode_chunk(const float* pixels, int64_t batch, float* out, DebugTrace* trace) const {
    const int64_t p = patch_, g = grid_, n = resolution_, w = width_;
    const int64_t patches = g * g, patch_dim = 3 * p * p, seq = tokens();
    // Work buffers kept per thread between calls (no page faults per batch); a chunk is at most
    // about 4096 token rows, so they stay bounded.
    thread_local WorkVector<float> cols_buf, feat_buf, x_buf, scale_buf;
    thread_local WorkVector<uint8_t> qcols_buf;
    auto grow = [](auto& v, int64_t count) {
      if (static_cast<int64_t>(v.size()) < count) v.resize(static_cast<size_t>(count));
      return v.data();
    };
    const int64_t rows = batch * patches;
    float* feat = grow(feat_buf, rows * w);
    const bool parallel = rows * patch_dim > (1 << 18);
    // im2col: one row per patch, columns in (channel, ky, kx) order like the conv weight.
    auto patch_row = [&](int64_t r, float* row) {
      const int64_t b = r / patches, gy = (r % patches) / g, gx = r % g;
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t ky = 0; ky < p; ++ky) {
          const float* src = pixels + ((b * 3 + c) * n + gy * p + ky) * n + gx * p;
          std::copy(src, src + p, row + (c * p + ky) * p);
        }
    };
    if (conv1_.format() == WeightFormat::Int8) {
      // Each patch row is quantised as soon as it is gathered (in an L1 buffer): the layer gets
      // the bytes forward() would have made from the float rows, without those rows in memory.
      uint8_t* q = grow(qcols_buf, rows * patch_dim);
      float* scale = grow(scale_buf, rows);
#pragma omp parallel if (parallel)
      {
        std::vector<float> row(static_cast<size_t>(patch_dim));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
          patch_row(r, row.data());
          scale[r] = quantize_row_u8_offset(row.data(), patch_dim, q + r * patch_dim);
        }
      }
      conv1_.forward_quantized(q, scale, rows, feat);
    } else {
      float* cols = grow(cols_buf, rows * patch_dim);
#pragma omp parallel for schedule(static) if (parallel)
      for (int64_t r = 0; r < rows; ++r) patch_row(r, cols + r * patch_dim);
      conv1_.forward(cols, rows, feat);
    }
    if (trace) {  // conv1 output of image 0 as [width, grid, grid]
      std::vector<float> chw(static_cast<size_t>(w * patches));
      for (int64_t i = 0; i < patches; ++i)
        for (int64_t c = 0; c < w; ++c) chw[c * patches + i] = feat[i * w + c];
      (*trace)["image0.conv1"] = std::move(chw);
    }
    // [class token; patches] + positional embedding.
    float* x = grow(x_buf, batch * seq * w);
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t t = 0; t < seq; ++t) {
        float* xt = x + (b * seq + t) * w;
        const float* pe = positional_embedding_.data() + t * w;
        const float* f = t == 0 ? class_embedding_.data() : feat + (b * patches + t - 1) * w;
        for (int64_t c = 0; c < w; ++c) xt[c] = f[c] + pe[c];
      }
    trace_store(trace, "image0.embeddings", x, seq * w);
    ln_pre_.apply(x, batch * seq, x);
    trace_store(trace, "image0.ln_pre", x, seq * w);
    std::vector<float> cls(static_cast<size_t>(batch * w));
    if (trace) {  // the trace holds every token after every block
      transformer_.forward(x, batch, seq, /*causal=*/false, trace, "image0.");
      for (int64_t b = 0; b < batch; ++b) std::copy_n(x + b * seq * w, w, cls.data() + b * w);
    } else {
      // Only the class token leaves the tower, so the last block needs keys and values of every
      // token but attention, out_proj and the MLP for the class token alone.
      const std::vector<int64_t> keep(static_cast<size_t>(batch), 0);
      transformer_.forward_rows(x, batch, seq, /*causal=*/false, keep.data(), cls.data());
    }
    ln_post_.apply(cls.data(), batch, cls.data());
    trace_store(trace, "image0.ln_post", cls.data(), w);
    proj_.forward(cls.data(), batch, out);
    // Large chunks (dozens of images) give their buffers back rather than keep them per thread.
    if (cols_buf.size() + feat_buf.size() + x_buf.size() + qcols_buf.size() / 4 > kKeepFloats) {
      cols_buf = feat_buf = x_buf = scale_buf = {};
      qcols_buf = {};
    }
  }

  static constexpr size_t kKeepFloats = size_t{8} << 20;  // 32 MiB per thread (ViT-B/32 at batch 32 needs 29)

  int64_t width_;
  int patch_, grid_, resolution_;
  int64_t embed_dim_;
  Linear conv1_, proj_;
  std::vector<float> class_embedding_, positional_embedding_;
  LayerNormParams ln_pre_, ln_post_;
  Transformer transformer_;
};

}  // namespace

std::unique_ptr<ImageEncoder> make_vit_encoder(const Checkpoint& ckpt, const Architecture& arch,
                                               const ModelOptions& options) {
  return std::make_unique<VitEncoder>(ckpt, arch, options);
}

}  // namespace clipkit
