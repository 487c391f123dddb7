// Tip-Adapter: the cache model's logits, its hyperparameter search and key fine-tuning (Tip-Adapter-F).
#include <algorithm>
#include <cmath>

#include "adapt/internal.h"
#include "clipkit/adapt.h"
#include "clipkit/error.h"
#include "kernels/gemm.h"

namespace clipkit {

namespace {

void check_cache(const Embeddings& zero_shot, const Embeddings& keys, const std::vector<int>& key_labels,
                 const Embeddings& queries) {
  if (zero_shot.rows < 1 || keys.dim != zero_shot.dim || queries.dim != zero_shot.dim ||
      key_labels.size() != static_cast<size_t>(keys.rows))
    throw Error(ErrorCode::Shape, "tip-adapter: zero-shot [" + std::to_string(zero_shot.rows) + ", " +
                                      std::to_string(zero_shot.dim) + "], keys [" + std::to_string(keys.rows) + ", " +
                                      std::to_string(keys.dim) + "], queries of " + std::to_string(queries.dim) +
                                      " dimensions and " + std::to_string(key_labels.size()) + " key labels do not fit");
  for (int l : key_labels)
    if (l < 0 || l >= zero_shot.rows) throw Error(ErrorCode::InvalidArgument, "tip-adapter: key label out of range");
}

// cache[i, c] = Σ_{n: label n = c} exp(−β·(1 − A[i, n]))
void cache_by_class(const std::vector<float>& affinity, int64_t rows, int64_t m, const std::vector<int>& labels,
                    float beta, int64_t classes, std::vector<float>& cache) {
  cache.assign(static_cast<size_t>(rows * classes), 0.0f);
#pragma omp parallel for schedule(static) if (rows * m > 50000)
  for (int64_t i = 0; i < rows; ++i) {
    const float* a = affinity.data() + i * m;
    std::vector<double> acc(static_cast<size_t>(classes), 0.0);
    for (int64_t n = 0; n < m; ++n)
      acc[static_cast<size_t>(labels[static_cast<size_t>(n)])] += std::exp(-static_cast<double>(beta) * (1.0 - a[n]));
    for (int64_t c = 0; c < classes; ++c) cache[static_cast<size_t>(i * classes + c)] = static_cast<float>(acc[static_cast<size_t>(c)]);
  }
}

}  // namespace

Embeddings tip_adapter_logits(const Embeddings& zero_shot, const Embeddings& keys, const std::vector<int>& key_labels,
                              float alpha, float beta, float clip_scale, const Embeddings& queries) {
  check_cache(zero_shot, keys, key_labels, queries);
  apply_thread_setting();
  const int64_t n = queries.rows, c = zero_shot.rows, m = keys.rows, d = zero_shot.dim;
  Embeddings out(n, c);
  if (n == 0) return out;
  std::vector<float> clip(static_cast<size_t>(n * c)), affinity(static_cast<size_t>(n * m)), cache;
  adapt_detail::gemm_nt(queries.data.data(), n, d, zero_shot.data.data(), c, clip.data());
  adapt_detail::gemm_nt(queries.data.data(), n, d, keys.data.data(), m, affinity.data());
  cache_by_class(affinity, n, m, key_labels, beta, c, cache);
  for (size_t i = 0; i < out.data.size(); ++i)
    out.data[i] = static_cast<float>(static_cast<double>(clip_scale) * clip[i] + static_cast<double>(alpha) * cache[i]);
  return out;
}

TipSearchResult search_tip_hyperparameters(const Embeddings& zero_shot, const Embeddings& keys,
                                           const std::vector<int>& key_labels, const LabeledFeatures& val,
                                           float clip_scale, int beta_steps, int alpha_steps) {
  check_cache(zero_shot, keys, key_labels, val.features);
  if (val.features.rows == 0) throw Error(ErrorCode::InvalidArgument, "tip-adapter search: the validation split is empty");
  apply_thread_setting();
  const int64_t n = val.features.rows, c = zero_shot.rows, m = keys.rows, d = zero_shot.dim;
  std::vector<float> clip(static_cast<size_t>(n * c)), affinity(static_cast<size_t>(n * m)), cache;
  adapt_detail::gemm_nt(val.features.data.data(), n, d, zero_shot.data.data(), c, clip.data());
  adapt_detail::gemm_nt(val.features.data.data(), n, d, keys.data.data(), m, affinity.data());
  TipSearchResult best;
  int64_t best_hits = -1;
  std::vector<int64_t> hits(static_cast<size_t>(alpha_steps));
  for (int bi = 0; bi < beta_steps; ++bi) {
    const float beta = static_cast<float>(0.1 + bi * (7.0 - 0.1) / beta_steps);
    cache_by_class(affinity, n, m, key_labels, beta, c, cache);
    std::fill(hits.begin(), hits.end(), 0);
#pragma omp parallel for schedule(static) if (n * c > 5000)
    for (int ai = 0; ai < alpha_steps; ++ai) {
      const double alpha = 0.1 + ai * (3.0 - 0.1) / alpha_steps;
      int64_t h = 0;
      for (int64_t i = 0; i < n; ++i) {
        int64_t arg = 0;
        double top = -1e300;
        for (int64_t j = 0; j < c; ++j) {
          const double v = static_cast<double>(clip_scale) * clip[static_cast<size_t>(i * c + j)] +
                           alpha * cache[static_cast<size_t>(i * c + j)];
          if (v > top) {
            top = v;
            arg = j;
          }
        }
        h += arg == val.labels[static_cast<size_t>(i)];
      }
      hits[static_cast<size_t>(ai)] = h;
    }
    for (int ai = 0; ai < alpha_steps; ++ai)
      if (hits[static_cast<size_t>(ai)] > best_hits) {
        best_hits = hits[static_cast<size_t>(ai)];
        best.beta = beta;
        best.alpha = static_cast<float>(0.1 + ai * (3.0 - 0.1) / alpha_steps);
      }
  }
  best.validation_accuracy = static_cast<double>(best_hits) / static_cast<double>(n);
  return best;
}

Embeddings tip_adapter_finetune(const Embeddings& zero_shot, const Embeddings& keys, const std::vector<int>& key_labels,
                                const LabeledFeatures& train, float alpha, float beta, float clip_scale,
                                const TipFinetuneOptions& o) {
  check_cache(zero_shot, keys, key_labels, train.features);
  if (o.epochs < 1 || o.batch_size < 1 || !(o.learning_rate > 0))
    throw Error(ErrorCode::InvalidArgument, "tip-adapter-f: epochs, batch size and learning rate must be positive");
  apply_thread_setting();
  const int64_t n = train.features.rows, c = zero_shot.rows, m = keys.rows, d = zero_shot.dim;
  Embeddings k = keys;
  std::vector<double> m1(k.data.size(), 0.0), m2(k.data.size(), 0.0);
  std::vector<size_t> order(static_cast<size_t>(n));
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  adapt_detail::Rng rng(o.seed);
  const int64_t steps_per_epoch = (n + o.batch_size - 1) / o.batch_size;
  const int64_t total_steps = steps_per_epoch * o.epochs;
  const double b1 = 0.9, b2 = 0.999;
  int64_t step = 0;
  std::vector<float> fb, clip, affinity, cache, grad(k.data.size());
  for (int e = 0; e < o.epochs; ++e) {
    rng.shuffle(order);
    for (int64_t s = 0; s < n; s += o.batch_size) {
      const int64_t bsz = std::min<int64_t>(o.batch_size, n - s);
      fb.resize(static_cast<size_t>(bsz * d));
      for (int64_t i = 0; i < bsz; ++i)
        std::copy(train.features.row(static_cast<int64_t>(order[static_cast<size_t>(s + i)])),
                  train.features.row(static_cast<int64_t>(order[static_cast<size_t>(s + i)])) + d, fb.begin() + i * d);
      clip.resize(static_cast<size_t>(bsz * c));
      affinity.resize(static_cast<size_t>(bsz * m));
      adapt_detail::gemm_nt(fb.data(), bsz, d, zero_shot.data.data(), c, clip.data());
      adapt_detail::gemm_nt(fb.data(), bsz, d, k.data.data(), m, affinity.data());
      cache_by_class(affinity, bsz, m, key_labels, beta, c, cache);
      // affinity ← ∂loss/∂affinity = α·β·exp(−β(1 − a))·(p − y)[label of the key] / batch
#pragma omp parallel for schedule(static) if (bsz * m > 50000)
      for (int64_t i = 0; i < bsz; ++i) {
        std::vector<double> p(static_cast<size_t>(c));
        double mx = -1e300;
        for (int64_t j = 0; j < c; ++j) {
          p[static_cast<size_t>(j)] = static_cast<double>(clip_scale) * clip[static_cast<size_t>(i * c + j)] +
                                      static_cast<double>(alpha) * cache[static_cast<size_t>(i * c + j)];
          mx = std::max(mx, p[static_cast<size_t>(j)]);
        }
        double sum = 0.0;
        for (auto& v : p) sum += (v = std::exp(v - mx));
        const int yi = train.labels[order[static_cast<size_t>(s + i)]];
        for (int64_t j = 0; j < c; ++j) p[static_cast<size_t>(j)] = (p[static_cast<size_t>(j)] / sum - (j == yi ? 1.0 : 0.0)) / static_cast<double>(bsz);
        float* a = affinity.data() + i * m;
        for (int64_t q = 0; q < m; ++q) {
          const double ex = std::exp(-static_cast<double>(beta) * (1.0 - a[q]));
          a[q] = static_cast<float>(static_cast<double>(alpha) * beta * ex * p[static_cast<size_t>(key_labels[static_cast<size_t>(q)])]);
        }
      }
      adapt_detail::gemm_tn(affinity.data(), bsz, m, fb.data(), d, grad.data());
      // AdamW (decoupled weight decay), cosine learning rate stepped after every batch
      const double lr = o.learning_rate * 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(total_steps)));
      ++step;
      const double c1 = 1.0 - std::pow(b1, static_cast<double>(step)), c2 = 1.0 - std::pow(b2, static_cast<double>(step));
#pragma omp parallel for schedule(static) if (k.data.size() > 100000)
      for (int64_t i = 0; i < static_cast<int64_t>(k.data.size()); ++i) {
        const size_t u = static_cast<size_t>(i);
        double w = k.data[u] * (1.0 - lr * o.weight_decay);
        m1[u] = b1 * m1[u] + (1.0 - b1) * grad[u];
        m2[u] = b2 * m2[u] + (1.0 - b2) * static_cast<double>(grad[u]) * grad[u];
        w -= lr * (m1[u] / c1) / (std::sqrt(m2[u] / c2) + o.adam_eps);
        k.data[u] = static_cast<float>(w);
      }
    }
  }
  return k;
}

}  // namespace clipkit
