#include "model/text_transformer.h"

#include <algorithm>
#include <numeric>

#include "clipkit/error.h"
#include "kernels/activation.h"

namespace clipkit {

TextTransformer::TextTransformer(const Checkpoint& ckpt, const Architecture& arch, const ModelOptions& options)
    : width_(arch.text_width),
      embed_dim_(arch.embed_dim),
      context_length_(arch.context_length),
      vocab_size_(arch.vocab_size) {
  const WeightFormat fmt = weight_format_from(options);
  token_embedding_ = ckpt.table_shared("token_embedding.weight", {vocab_size_, width_});
  positional_embedding_ = ckpt.f32("positional_embedding", {context_length_, width_});
  transformer_ = Transformer(ckpt, "transformer.", width_, arch.text_layers, arch.text_heads,
                             activation_from_name(arch.activation), fmt);
  ln_final_ = LayerNormParams(ckpt, "ln_final.", width_);
  const std::vector<float> proj = ckpt.f32("text_projection", {width_, embed_dim_});
  std::vector<float> proj_t(proj.size());
  for (int64_t i = 0; i < width_; ++i)
    for (int64_t j = 0; j < embed_dim_; ++j) proj_t[j * width_ + i] = proj[i * embed_dim_ + j];
  projection_ = Linear(std::move(proj_t), {}, width_, embed_dim_, fmt);
}

int64_t TextTransformer::weight_bytes() const {
  const int64_t f = static_cast<int64_t>(sizeof(float));
  return token_embedding_.bytes() + static_cast<int64_t>(positional_embedding_.size()) * f + transformer_.weight_bytes() +
         ln_final_.parameter_count() * f + linear_bytes(projection_);
}

int64_t TextTransformer::parameter_count() const {
  return static_cast<int64_t>(token_embedding_.size + positional_embedding_.size()) + transformer_.parameter_count() +
         ln_final_.parameter_count() + projection_.parameter_count();
}

std::vector<int64_t> TextTransformer::pool_positions(const int32_t* ids, int64_t batch, int64_t context) const {
  if (context <= 0 || context > context_length_)
    throw Error(ErrorCode::Limit, "token rows have " + std::to_string(context) + " ids; the model's context length is " +
                                      std::to_string(context_length_));
  std::vector<int64_t> pool(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t* row = ids + b * context;
    int64_t best = 0;
    for (int64_t t = 0; t < context; ++t) {
      if (row[t] < 0 || row[t] >= vocab_size_)
        throw Error(ErrorCode::InvalidArgument, "token id " + std::to_string(row[t]) + " (text " + std::to_string(b) +
                                                    ", position " + std::to_string(t) + ") is outside the vocabulary [0, " +
                                                    std::to_string(vocab_size_) + ")");
      if (row[t] > row[best]) best = t;  // first occurrence of the maximum, as torch.argmax
    }
    pool[static_cast<size_t>(b)] = best;
  }
  return pool;
}

void TextTransformer::run(const int32_t* ids, int64_t batch, int64_t length, const int64_t* pool, float* out,
                          DebugTrace* trace, bool all_rows) const {
  const int64_t w = width_;
  std::vector<float> x(static_cast<size_t>(batch * length * w));
  std::vector<float> row(static_cast<size_t>(w));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < length; ++t) {
      const float* te = token_embedding_.row(ids[b * length + t], w, row.data());
      const float* pe = positional_embedding_.data() + t * w;
      float* dst = x.data() + (b * length + t) * w;
      for (int64_t c = 0; c < w; ++c) dst[c] = te[c] + pe[c];
    }
  trace_store(trace, "text0.embeddings", x.data(), length * w);
  std::vector<float> pooled(static_cast<size_t>(batch * w));
  if (all_rows || trace) {
    transformer_.forward(x.data(), batch, length, /*causal=*/true, trace, "text0.");
    if (trace) {
      std::vector<float> ln(static_cast<size_t>(length * w));
      ln_final_.apply(x.data(), length, ln.data());
      (*trace)["text0.ln_final"] = std::move(ln);
    }
    for (int64_t b = 0; b < batch; ++b) std::copy_n(x.data() + (b * length + pool[b]) * w, w, pooled.data() + b * w);
  } else {
    // Only the pooled end-of-text rows leave the last block.
    transformer_.forward_rows(x.data(), batch, length, /*causal=*/true, pool, pooled.data());
  }
  ln_final_.apply(pooled.data(), batch, pooled.data());
  trace_store(trace, "text0.pooled", pooled.data(), w);
  projection_.forward(pooled.data(), batch, out);
}

void TextTransformer::encode_full(const int32_t* ids, int64_t batch, int64_t context, float* out,
                                  DebugTrace* trace) const {
  if (batch <= 0) return;
  const std::vector<int64_t> pool = pool_positions(ids, batch, context);
  const int64_t chunk = std::max<int64_t>(1, 4096 / context);
  for (int64_t start = 0; start < batch; start += chunk) {
    const int64_t n = std::min(chunk, batch - start);
    run(ids + start * context, n, context, pool.data() + start, out + start * embed_dim_, start == 0 ? trace : nullptr,
        /*all_rows=*/true);
  }
}

void TextTransformer::encode(const int32_t* ids, int64_t batch, int64_t context, float* out, DebugTrace* trace) const {
  if (batch <= 0) return;
  if (trace) return encode_full(ids, batch, context, out, trace);  // the trace holds every position
  const std::vector<int64_t> pool = pool_positions(ids, batch, context);
  std::vector<int64_t> order(static_cast<size_t>(batch));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return pool[a] < pool[b]; });
  const int64_t max_rows = 4096, max_texts = 256;
  std::vector<int32_t> gathered;
  std::vector<int64_t> gpool;
  std::vector<float> gout;
  for (size_t i = 0; i < order.size();) {
    // Extend the group while it stays within the row budget (lengths are ascending).
    size_t j = i + 1;
    while (j < order.size() && static_cast<int64_t>(j - i + 1) <= max_texts &&
           static_cast<int64_t>(j - i + 1) * (pool[order[j]] + 1) <= max_rows)
      ++j;
    const int64_t n = static_cast<int64_t>(j - i);
    const int64_t length = pool[order[j - 1]] + 1;
    gathered.resize(static_cast<size_t>(n * length));
    gpool.resize(static_cast<size_t>(n));
    gout.resize(static_cast<size_t>(n * embed_dim_));
    for (int64_t k = 0; k < n; ++k) {
      const int64_t src = order[i + static_cast<size_t>(k)];
      std::copy_n(ids + src * context, length, gathered.data() + k * length);
      gpool[k] = pool[src];
    }
    run(gathered.data(), n, length, gpool.data(), gout.data(), nullptr, /*all_rows=*/false);
    for (int64_t k = 0; k < n; ++k)
      std::copy_n(gout.data() + k * embed_dim_, embed_dim_, out + order[i + static_cast<size_t>(k)] * embed_dim_);
    i = j;
  }
}

std::unique_ptr<TextEncoder> make_text_encoder(const Checkpoint& ckpt, const Architecture& arch,
                                               const ModelOptions& options) {
  return std::make_unique<TextTransformer>(ckpt, arch, options);
}

}  // namespace clipkit
