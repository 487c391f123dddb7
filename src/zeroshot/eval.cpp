// Evaluation metrics, deterministic stratified splits and sequential forward template selection.
#include <algorithm>
#include <cmath>
#include <limits>

#include "clipkit/error.h"
#include "clipkit/zeroshot.h"

namespace clipkit {

EvalResult evaluate_logits(const Embeddings& logits, const std::vector<int>& truth) {
  if (static_cast<int64_t>(truth.size()) != logits.rows)
    throw Error(ErrorCode::Shape, "evaluate: " + std::to_string(truth.size()) + " labels for " +
                                      std::to_string(logits.rows) + " images");
  const int64_t C = logits.dim;
  EvalResult r;
  r.n = logits.rows;
  r.per_class.assign(static_cast<size_t>(C), 0.0);
  r.class_counts.assign(static_cast<size_t>(C), 0);
  r.confusion.assign(static_cast<size_t>(C), std::vector<int64_t>(static_cast<size_t>(C), 0));
  std::vector<int64_t> correct(static_cast<size_t>(C), 0);
  int64_t top1 = 0, top5 = 0;
  for (int64_t i = 0; i < logits.rows; ++i) {
    const int t = truth[static_cast<size_t>(i)];
    if (t < 0 || t >= C)
      throw Error(ErrorCode::InvalidArgument, "evaluate: class index " + std::to_string(t) + " of image " +
                                                  std::to_string(i) + " is outside [0, " + std::to_string(C) + ")");
    const auto top = top_k_indices(logits.row(i), static_cast<size_t>(C), 5);
    const int pred = top.empty() ? 0 : top[0];
    r.predictions.push_back(pred);
    r.top1_probs.push_back(C > 0 ? softmax(logits.row(i), static_cast<size_t>(C))[static_cast<size_t>(pred)] : 0.0f);
    r.confusion[static_cast<size_t>(t)][static_cast<size_t>(pred)]++;
    r.class_counts[static_cast<size_t>(t)]++;
    if (pred == t) {
      ++top1;
      correct[static_cast<size_t>(t)]++;
    }
    if (std::find(top.begin(), top.end(), t) != top.end()) ++top5;
  }
  if (r.n > 0) {
    r.top1 = static_cast<double>(top1) / static_cast<double>(r.n);
    r.top5 = static_cast<double>(top5) / static_cast<double>(r.n);
  }
  double sum = 0.0;
  int with_images = 0;
  for (int64_t c = 0; c < C; ++c) {
    const auto n = r.class_counts[static_cast<size_t>(c)];
    if (n == 0) continue;
    r.per_class[static_cast<size_t>(c)] = static_cast<double>(correct[static_cast<size_t>(c)]) / static_cast<double>(n);
    sum += r.per_class[static_cast<size_t>(c)];
    ++with_images;
  }
  r.mean_per_class = with_images ? sum / with_images : 0.0;
  return r;
}

EvalResult evaluate(const ZeroShotClassifier& clf, const Embeddings& images, const std::vector<int>& truth, float scale) {
  return evaluate_logits(clf.logits(images, scale), truth);
}

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

std::vector<bool> stratified_split(const std::vector<int>& truth, int num_classes, double holdout) {
  if (!(holdout > 0.0 && holdout < 1.0))
    throw Error(ErrorCode::InvalidArgument, "holdout fraction must be in (0, 1), got " + std::to_string(holdout));
  std::vector<std::vector<size_t>> by_class(static_cast<size_t>(std::max(0, num_classes)));
  for (size_t i = 0; i < truth.size(); ++i) {
    if (truth[i] < 0 || truth[i] >= num_classes)
      throw Error(ErrorCode::InvalidArgument, "split: class index " + std::to_string(truth[i]) + " out of range");
    by_class[static_cast<size_t>(truth[i])].push_back(i);
  }
  std::vector<bool> sel(truth.size(), false);
  for (size_t c = 0; c < by_class.size(); ++c) {
    auto& v = by_class[c];
    uint64_t state = 0x5EEDull * 1000003ull + c;
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[splitmix64(state) % i]);
    const size_t n = v.size();
    auto k = static_cast<size_t>(std::llround(static_cast<double>(n) * (1.0 - holdout)));
    if (n >= 2) k = std::clamp<size_t>(k, 1, n - 1);
    k = std::min(k, n);
    for (size_t i = 0; i < k; ++i) sel[v[i]] = true;
  }
  return sel;
}

SelectionResult select_templates(const TextEncoder& encoder, const std::vector<ClassSpec>& classes,
                                 const std::vector<std::string>& pool, const Embeddings& images,
                                 const std::vector<int>& truth, const std::vector<bool>& in_selection,
                                 int max_templates, float scale, const ProgressFn& progress) {
  if (pool.empty()) throw Error(ErrorCode::InvalidArgument, "template selection: the template pool is empty");
  if (classes.empty()) throw Error(ErrorCode::InvalidArgument, "template selection: no classes");
  if (static_cast<int64_t>(truth.size()) != images.rows || in_selection.size() != truth.size())
    throw Error(ErrorCode::Shape, "template selection: labels/split do not match the number of images");
  for (const auto& t : pool) check_template(t, "template pool");
  const size_t C = classes.size(), T = pool.size();
  const int64_t E = images.dim;

  // P[c][t] = sum over the class's names of the normalised embedding of template t filled with it.
  std::vector<std::vector<double>> P(C * T, std::vector<double>(static_cast<size_t>(E), 0.0));
  std::vector<std::string> prompts;
  std::vector<size_t> slot;
  for (size_t c = 0; c < C; ++c)
    for (const auto& name : classes[c].names)
      for (size_t t = 0; t < T; ++t) {
        prompts.push_back(fill_template(pool[t], name));
        slot.push_back(c * T + t);
      }
  const size_t batch = 256;
  for (size_t s = 0; s < prompts.size(); s += batch) {
    const size_t e = std::min(prompts.size(), s + batch);
    const Embeddings emb = encoder(std::vector<std::string>(prompts.begin() + static_cast<std::ptrdiff_t>(s),
                                                            prompts.begin() + static_cast<std::ptrdiff_t>(e)));
    if (emb.rows != static_cast<int64_t>(e - s) || emb.dim != E)
      throw Error(ErrorCode::Shape, "template selection: text embeddings have " + std::to_string(emb.dim) +
                                        " dimensions, images " + std::to_string(E));
    for (int64_t r = 0; r < emb.rows; ++r) {
      const float* x = emb.row(r);
      double ss = 0.0;
      for (int64_t j = 0; j < E; ++j) ss += static_cast<double>(x[j]) * x[j];
      const double inv = ss > 0 ? 1.0 / std::sqrt(ss) : 0.0;
      auto& dst = P[slot[s + static_cast<size_t>(r)]];
      for (int64_t j = 0; j < E; ++j) dst[static_cast<size_t>(j)] += x[j] * inv;
    }
    if (progress) progress(static_cast<int64_t>(e), static_cast<int64_t>(prompts.size()));
  }
  // Normalised images.
  const int64_t N = images.rows;
  std::vector<double> img(static_cast<size_t>(N * E));
  for (int64_t i = 0; i < N; ++i) {
    double ss = 0.0;
    for (int64_t j = 0; j < E; ++j) ss += static_cast<double>(images.row(i)[j]) * images.row(i)[j];
    const double inv = ss > 0 ? 1.0 / std::sqrt(ss) : 0.0;
    for (int64_t j = 0; j < E; ++j) img[static_cast<size_t>(i * E + j)] = images.row(i)[j] * inv;
  }

  // Scores a template set given by the per-class sum A (C x E): (correct count, mean log p(true)) per split.
  struct Score {
    int64_t correct[2] = {0, 0};
    double logp[2] = {0, 0};
  };
  auto score = [&](const std::vector<std::vector<double>>& A) {
    std::vector<std::vector<double>> V(C, std::vector<double>(static_cast<size_t>(E)));
    for (size_t c = 0; c < C; ++c) {
      double ss = 0.0;
      for (double v : A[c]) ss += v * v;
      const double inv = ss > 0 ? 1.0 / std::sqrt(ss) : 0.0;
      for (int64_t j = 0; j < E; ++j) V[c][static_cast<size_t>(j)] = A[c][static_cast<size_t>(j)] * inv;
    }
    Score s;
    std::vector<double> lg(C);
    for (int64_t i = 0; i < N; ++i) {
      const double* x = &img[static_cast<size_t>(i * E)];
      size_t best = 0;
      for (size_t c = 0; c < C; ++c) {
        double d = 0.0;
        for (int64_t j = 0; j < E; ++j) d += x[j] * V[c][static_cast<size_t>(j)];
        lg[c] = scale * d;
        if (lg[c] > lg[best]) best = c;
      }
      double sum = 0.0;
      for (size_t c = 0; c < C; ++c) sum += std::exp(lg[c] - lg[best]);
      const size_t t = static_cast<size_t>(truth[static_cast<size_t>(i)]);
      const int split = in_selection[static_cast<size_t>(i)] ? 0 : 1;
      if (best == t) s.correct[split]++;
      s.logp[split] += lg[t] - lg[best] - std::log(sum);
    }
    return s;
  };

  SelectionResult res;
  for (bool b : in_selection) (b ? res.selection_images : res.heldout_images)++;
  if (res.selection_images == 0) throw Error(ErrorCode::InvalidArgument, "template selection: the selection split is empty");
  const int limit = std::min<int>(max_templates > 0 ? max_templates : static_cast<int>(T), static_cast<int>(T));
  std::vector<std::vector<double>> A(C, std::vector<double>(static_cast<size_t>(E), 0.0));
  std::vector<bool> used(T, false);
  for (int step = 0; step < limit; ++step) {
    int best_t = -1;
    Score best;
    for (size_t t = 0; t < T; ++t) {
      if (used[t]) continue;
      auto cand = A;
      for (size_t c = 0; c < C; ++c)
        for (int64_t j = 0; j < E; ++j) cand[c][static_cast<size_t>(j)] += P[c * T + t][static_cast<size_t>(j)];
      const Score s = score(cand);
      if (best_t < 0 || s.correct[0] > best.correct[0] ||
          (s.correct[0] == best.correct[0] && s.logp[0] > best.logp[0] + 1e-9)) {
        best_t = static_cast<int>(t);
        best = s;
      }
    }
    used[static_cast<size_t>(best_t)] = true;
    for (size_t c = 0; c < C; ++c)
      for (int64_t j = 0; j < E; ++j) A[c][static_cast<size_t>(j)] += P[c * T + static_cast<size_t>(best_t)][static_cast<size_t>(j)];
    SelectionStep st;
    st.template_text = pool[static_cast<size_t>(best_t)];
    st.template_index = best_t;
    st.selection_top1 = static_cast<double>(best.correct[0]) / static_cast<double>(res.selection_images);
    st.heldout_top1 = res.heldout_images ? static_cast<double>(best.correct[1]) / static_cast<double>(res.heldout_images) : 0.0;
    res.steps.push_back(std::move(st));
  }
  return res;
}

}  // namespace clipkit
