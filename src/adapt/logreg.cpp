// Multinomial (and binary) logistic regression by L-BFGS, and the C search of the CLIP paper.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <cstdio>
#include <cstdlib>

#include "adapt/internal.h"
#include "clipkit/adapt.h"
#include "clipkit/error.h"
#include "kernels/gemm.h"
#include "kernels/softmax.h"

namespace clipkit {

namespace {

// The objective, divided by C·N so that its size does not grow with the data:
//   F(θ) = (1/N)·Σᵢ lossᵢ + 1/(2·C·N)·‖W − A‖².
// θ packs W row-major then b. Multinomial: W [K, D], b [K], lossᵢ the cross-entropy of softmax(W·xᵢ + b).
// Binary: w [D], b [1], lossᵢ = log(1 + exp(−sᵢ·(w·xᵢ + b))), sᵢ = ±1 (class 1 positive).
//
// Small problems stay in double throughout (their optimum is then found to double precision, as
// scikit-learn's is). Large ones compute the logits and the gradient's products with sgemm in
// float over all classes at once, the softmax rows vectorised, and sum the loss in double; their
// gradient is then accurate to float rounding, which the stopping rules allow for.
class Objective {
 public:
  Objective(const Embeddings& x, const std::vector<int>& y, int classes, const LogRegOptions& o)
      : x_(x), y_(y), n_(x.rows), d_(x.dim), binary_(classes == 2 && o.anchor == nullptr && !o.penalize_bias),
        k_(binary_ ? 1 : classes), reg_(1.0 / (o.C * static_cast<double>(x.rows))), anchor_(o.anchor),
        penalize_bias_(o.penalize_bias) {
    small_ = o.precision == LogRegOptions::Precision::Auto ? n_ * d_ * k_ <= kSmallProduct
                                                           : o.precision == LogRegOptions::Precision::Double;
    row_loss_.resize(static_cast<size_t>(n_));
    if (small_) {
      rows_.resize(static_cast<size_t>(n_ * k_));
      gw_.resize(static_cast<size_t>(k_ * d_));
    } else {
      rows_f_.resize(static_cast<size_t>(n_ * k_));
      wf_.resize(static_cast<size_t>(k_ * d_));
      gwf_.resize(wf_.size());
      gb_.resize(static_cast<size_t>(k_));
    }
  }
  size_t size() const { return static_cast<size_t>(k_ * d_ + k_); }
  int64_t k() const { return k_; }
  bool binary() const { return binary_; }
  // Whether the gradient is computed in float (large problems): its entries are then exact only
  // to about 1e-6 of their size.
  bool single_precision() const { return !small_; }
  // The data term (1/N)·Σᵢ lossᵢ of the last evaluation: the part of the objective that float
  // rounds (the penalty is summed in double).
  double last_loss() const { return loss_; }

  double operator()(const std::vector<double>& th, std::vector<double>& g) {
    double f = small_ ? loss_grad_double(th) : loss_grad_float(th);
    loss_ = f;
    // penalty and its gradient: reg·(W − A)
    double pen = 0.0;
    for (int64_t c = 0; c < k_; ++c) {
      const float* a = anchor_ ? anchor_->row(c) : nullptr;
      for (int64_t j = 0; j < d_; ++j) {
        const size_t idx = static_cast<size_t>(c * d_ + j);
        const double diff = th[idx] - (a ? static_cast<double>(a[j]) : 0.0);
        pen += diff * diff;
        g[idx] = (small_ ? gw_[idx] : static_cast<double>(gwf_[idx])) + reg_ * diff;
      }
    }
    f += 0.5 * reg_ * pen;
    const double* b = th.data() + k_ * d_;
    double* gb = g.data() + k_ * d_;
    if (small_) {
      std::fill(gb, gb + k_, 0.0);
      for (int64_t i = 0; i < n_; ++i)
        for (int64_t c = 0; c < k_; ++c) gb[c] += rows_[static_cast<size_t>(i * k_ + c)];
    } else {
      std::copy(gb_.begin(), gb_.end(), gb);
    }
    if (penalize_bias_)
      for (int64_t c = 0; c < k_; ++c) {
        gb[c] += reg_ * b[c];
        f += 0.5 * reg_ * b[c] * b[c];
      }
    return f;
  }

 private:
  static constexpr int64_t kSmallProduct = 4'000'000;

  // rows_ = X·Wᵀ, then the loss and its derivative by the logits (divided by N) in place; gw_ = Gᵀ·X.
  double loss_grad_double(const std::vector<double>& th) {
    const double* b = th.data() + k_ * d_;
    for (int64_t i = 0; i < n_; ++i)
      for (int64_t c = 0; c < k_; ++c) {
        double acc = 0.0;
        for (int64_t j = 0; j < d_; ++j) acc += static_cast<double>(x_.row(i)[j]) * th[static_cast<size_t>(c * d_ + j)];
        rows_[static_cast<size_t>(i * k_ + c)] = acc;
      }
    const double inv_n = 1.0 / static_cast<double>(n_);
    for (int64_t i = 0; i < n_; ++i) {
      double* z = rows_.data() + i * k_;
      const int yi = y_[static_cast<size_t>(i)];
      if (binary_) {
        const double t = z[0] + b[0];
        const double s = yi == 1 ? 1.0 : -1.0;
        const double m = -s * t;  // loss = log(1 + exp(m))
        row_loss_[static_cast<size_t>(i)] = m > 0 ? m + std::log1p(std::exp(-m)) : std::log1p(std::exp(m));
        const double sig = 1.0 / (1.0 + std::exp(-t));  // P(class 1)
        z[0] = (sig - (yi == 1 ? 1.0 : 0.0)) * inv_n;
        continue;
      }
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t c = 0; c < k_; ++c) mx = std::max(mx, z[c] + b[c]);
      double sum = 0.0;
      for (int64_t c = 0; c < k_; ++c) sum += std::exp(z[c] + b[c] - mx);
      row_loss_[static_cast<size_t>(i)] = std::log(sum) + mx - (z[yi] + b[yi]);
      for (int64_t c = 0; c < k_; ++c) {
        const double p = std::exp(z[c] + b[c] - mx) / sum;
        z[c] = (p - (c == yi ? 1.0 : 0.0)) * inv_n;
      }
    }
    std::fill(gw_.begin(), gw_.end(), 0.0);
    for (int64_t i = 0; i < n_; ++i)
      for (int64_t c = 0; c < k_; ++c) {
        const double gv = rows_[static_cast<size_t>(i * k_ + c)];
        for (int64_t j = 0; j < d_; ++j) gw_[static_cast<size_t>(c * d_ + j)] += gv * x_.row(i)[j];
      }
    double f = 0.0;
    for (double v : row_loss_) f += v;
    return f * inv_n;
  }

  double loss_grad_float(const std::vector<double>& th) {
    for (size_t i = 0; i < wf_.size(); ++i) wf_[i] = static_cast<float>(th[i]);
    sgemm(false, true, n_, k_, d_, 1.0f, x_.data.data(), d_, wf_.data(), d_, 0.0f, rows_f_.data(), k_);
    const double* b = th.data() + k_ * d_;
    std::vector<float> bf(static_cast<size_t>(k_));
    for (int64_t c = 0; c < k_; ++c) bf[static_cast<size_t>(c)] = static_cast<float>(b[c]);
    const int64_t k = k_;
#pragma omp parallel for schedule(static) if (n_ * k_ > 20000)
    for (int64_t i = 0; i < n_; ++i) {
      float* z = rows_f_.data() + i * k;
      const int yi = y_[static_cast<size_t>(i)];
      if (binary_) {
        const double t = static_cast<double>(z[0]) + bf[0];
        const double m = yi == 1 ? -t : t;  // loss = log(1 + exp(m))
        row_loss_[static_cast<size_t>(i)] = m > 0 ? m + std::log1p(std::exp(-m)) : std::log1p(std::exp(m));
        // σ(t) − 1 = −σ(−t): no cancellation for a confident positive
        z[0] = static_cast<float>((yi == 1 ? -1.0 / (1.0 + std::exp(t)) : 1.0 / (1.0 + std::exp(-t))) /
                                  static_cast<double>(n_));
        continue;
      }
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t c = 0; c < k; ++c) {
        z[c] += bf[static_cast<size_t>(c)];
        mx = std::max(mx, z[c]);
      }
      const float zy = z[yi];
      softmax_row_unnormalized(z, k);  // z = exp(z − max)
      // The true class's terms from the others' sum, without the cancellations of 1 − p_y and
      // log(1 + small): lossᵢ = log(1 + Σ_{c≠y} e_c / e_y), ∂lossᵢ/∂z_y = −Σ_{c≠y} e_c / Σ e.
      double other = 0.0;
      for (int64_t c = 0; c < k; ++c) other += c == yi ? 0.0 : static_cast<double>(z[c]);
      const double ey = z[yi], total = ey + other;
      row_loss_[static_cast<size_t>(i)] = ey > 1e-30 ? std::log1p(other / ey)
                                                     : static_cast<double>(mx) - zy + std::log(total);
      const float scale = static_cast<float>(1.0 / (total * static_cast<double>(n_)));
      for (int64_t c = 0; c < k; ++c) z[c] *= scale;
      z[yi] = static_cast<float>(-other / (total * static_cast<double>(n_)));
    }
    // ∂/∂W = Gᵀ·X; ∂/∂b = column sums of G (in fixed blocks of rows, summed in order).
    sgemm(true, false, k_, d_, n_, 1.0f, rows_f_.data(), k_, x_.data.data(), d_, 0.0f, gwf_.data(), d_);
    adapt_detail::column_sums(rows_f_.data(), n_, k_, gb_.data());
    double f = 0.0;
    for (double v : row_loss_) f += v;
    return f / static_cast<double>(n_);
  }

  const Embeddings& x_;
  const std::vector<int>& y_;
  int64_t n_, d_;
  bool binary_;
  int64_t k_;
  double reg_;
  const Embeddings* anchor_;
  bool penalize_bias_;
  bool small_ = true;
  double loss_ = 0.0;
  std::vector<double> rows_, gw_, gb_;
  std::vector<float> rows_f_, wf_, gwf_;
  std::vector<double> row_loss_;
};

// Relative rounding of the objective computed in float (large problems), and the gradient size
// below which a fit stopped by that rounding counts as converged (scikit-learn's default tolerance).
constexpr double kFloatNoise = 1e-8;
constexpr double kFloatTolerance = 1e-4;

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

double max_abs(const std::vector<double>& a) {
  double m = 0.0;
  for (double v : a) m = std::max(m, std::fabs(v));
  return m;
}

}  // namespace

LogRegModel train_logistic_regression(const Embeddings& x, const std::vector<int>& y, int num_classes,
                                      const LogRegOptions& o, const LogRegModel* warm) {
  if (!(o.C > 0.0) || !std::isfinite(o.C)) throw Error(ErrorCode::InvalidArgument, "logistic regression: C must be positive");
  if (num_classes < 2) throw Error(ErrorCode::InvalidArgument, "logistic regression: needs at least two classes");
  if (x.rows < 1 || static_cast<size_t>(x.rows) != y.size() || x.data.size() != static_cast<size_t>(x.rows * x.dim))
    throw Error(ErrorCode::Shape, "logistic regression: " + std::to_string(x.rows) + " rows for " +
                                      std::to_string(y.size()) + " labels");
  for (int v : y)
    if (v < 0 || v >= num_classes) throw Error(ErrorCode::InvalidArgument, "logistic regression: label out of range");
  if (o.anchor && (o.anchor->rows != num_classes || o.anchor->dim != x.dim))
    throw Error(ErrorCode::Shape, "logistic regression: the anchor does not match the classes");
  apply_thread_setting();
  Objective obj(x, y, num_classes, o);
  const int64_t d = x.dim, k = obj.k();
  std::vector<double> th(obj.size(), 0.0);
  if (warm && warm->weights.rows == num_classes && warm->weights.dim == d &&
      warm->bias.size() == static_cast<size_t>(num_classes)) {
    if (obj.binary()) {
      for (int64_t j = 0; j < d; ++j) th[static_cast<size_t>(j)] = static_cast<double>(warm->weights.row(1)[j]) - warm->weights.row(0)[j];
      th[static_cast<size_t>(d)] = static_cast<double>(warm->bias[1]) - warm->bias[0];
    } else {
      for (size_t i = 0; i < static_cast<size_t>(k * d); ++i) th[i] = warm->weights.data[i];
      for (int64_t c = 0; c < k; ++c) th[static_cast<size_t>(k * d + c)] = warm->bias[static_cast<size_t>(c)];
    }
  } else if (o.anchor) {
    for (size_t i = 0; i < static_cast<size_t>(k * d); ++i) th[i] = o.anchor->data[i];
  }

  // L-BFGS with 10 correction pairs and a backtracking (Armijo) line search; the objective is
  // strictly convex, so every accepted step gives a curvature pair with sᵀy > 0.
  constexpr int kHistory = 10;
  std::vector<std::vector<double>> s_hist, y_hist;
  std::vector<double> rho_hist;
  // Vectors of dropped pairs, reused: large problems would otherwise map fresh pages every step.
  std::vector<std::vector<double>> spare;
  auto take = [&] {
    if (spare.empty()) return std::vector<double>(th.size());
    std::vector<double> v = std::move(spare.back());
    spare.pop_back();
    return v;
  };
  std::vector<double> g(th.size()), g_new(th.size()), dir(th.size()), th_new(th.size()), alpha_tmp(kHistory);
  double f = obj(th, g);
  const double noise = obj.single_precision() ? kFloatNoise : 0.0;
  double loss = obj.last_loss();
  LogRegModel out;
  int it = 0;
  for (; it < o.max_iterations; ++it) {
    if (max_abs(g) <= o.tolerance) {
      out.converged = true;
      break;
    }
    // two-loop recursion
    for (size_t i = 0; i < th.size(); ++i) dir[i] = -g[i];
    const int m = static_cast<int>(s_hist.size());
    for (int h = m - 1; h >= 0; --h) {
      alpha_tmp[static_cast<size_t>(h)] = rho_hist[static_cast<size_t>(h)] * dot(s_hist[static_cast<size_t>(h)], dir);
      for (size_t i = 0; i < th.size(); ++i) dir[i] -= alpha_tmp[static_cast<size_t>(h)] * y_hist[static_cast<size_t>(h)][i];
    }
    double gamma = 1.0;
    if (m > 0) {
      const auto& sl = s_hist.back();
      const auto& yl = y_hist.back();
      gamma = dot(sl, yl) / dot(yl, yl);
    } else {
      gamma = 1.0 / std::max(1.0, std::sqrt(dot(g, g)));
    }
    for (double& v : dir) v *= gamma;
    for (int h = 0; h < m; ++h) {
      const double beta = rho_hist[static_cast<size_t>(h)] * dot(y_hist[static_cast<size_t>(h)], dir);
      for (size_t i = 0; i < th.size(); ++i)
        dir[i] += s_hist[static_cast<size_t>(h)][i] * (alpha_tmp[static_cast<size_t>(h)] - beta);
    }
    double gd = dot(g, dir);
    if (!(gd < 0.0)) {  // not a descent direction (rounding): restart from steepest descent
      for (auto& v : s_hist) spare.push_back(std::move(v));
      for (auto& v : y_hist) spare.push_back(std::move(v));
      s_hist.clear();
      y_hist.clear();
      rho_hist.clear();
      for (size_t i = 0; i < th.size(); ++i) dir[i] = -g[i] / std::max(1.0, std::sqrt(dot(g, g)));
      gd = dot(g, dir);
    }
    // In float the data term is known to about kFloatNoise of its size: a step predicted to gain
    // less than that cannot be told from rounding, so the fit is at its optimum.
    if (noise > 0.0 && -gd <= noise * loss) {
      out.converged = max_abs(g) <= std::max(o.tolerance, kFloatTolerance);
      break;
    }
    double step = 1.0, f_new = f, loss_new = loss;
    bool accepted = false;
    for (int ls = 0; ls < 20; ++ls) {
      for (size_t i = 0; i < th.size(); ++i) th_new[i] = th[i] + step * dir[i];
      f_new = obj(th_new, g_new);
      if (std::isfinite(f_new) && f_new <= f + 1e-4 * step * gd) {
        accepted = true;
        loss_new = obj.last_loss();
        break;
      }
      // minimiser of the quadratic through f, gd and f_new, kept within [0.1, 0.5] of the step
      double next = std::isfinite(f_new) ? -gd * step * step / (2.0 * (f_new - f - gd * step)) : 0.1 * step;
      step = std::clamp(next, 0.1 * step, 0.5 * step);
    }
    if (!accepted) {
      if (noise > 0.0) out.converged = max_abs(g) <= std::max(o.tolerance, kFloatTolerance);
      break;  // no decrease at the precision of the objective: at the optimum
    }
    std::vector<double> sv = take(), yv = take();
    for (size_t i = 0; i < th.size(); ++i) {
      sv[i] = th_new[i] - th[i];
      yv[i] = g_new[i] - g[i];
    }
    const double sy = dot(sv, yv);
    if (sy > 1e-12 * std::sqrt(dot(sv, sv) * dot(yv, yv))) {
      if (static_cast<int>(s_hist.size()) == kHistory) {
        spare.push_back(std::move(s_hist.front()));
        spare.push_back(std::move(y_hist.front()));
        s_hist.erase(s_hist.begin());
        y_hist.erase(y_hist.begin());
        rho_hist.erase(rho_hist.begin());
      }
      s_hist.push_back(std::move(sv));
      y_hist.push_back(std::move(yv));
      rho_hist.push_back(1.0 / sy);
    } else {
      spare.push_back(std::move(sv));
      spare.push_back(std::move(yv));
    }
    const double f_old = f;
    th.swap(th_new);
    g.swap(g_new);
    f = f_new;
    // scipy's L-BFGS-B rule (ftol = 64·machine epsilon, or the float noise): no relative decrease
    // left to find
    const double loss_old = loss;
    loss = loss_new;
    const bool stalled = noise > 0.0 ? f_old - f <= noise * loss_old
                                     : f_old - f <= 64 * std::numeric_limits<double>::epsilon() *
                                                        std::max({std::fabs(f_old), std::fabs(f), 1.0});
    if (stalled) {
      out.converged = max_abs(g) <= std::max(o.tolerance, noise > 0.0 ? kFloatTolerance : 1e-4);
      ++it;
      break;
    }
  }
  if (!out.converged && max_abs(g) <= o.tolerance) out.converged = true;
  out.iterations = it;
  out.weights = Embeddings(num_classes, d);
  out.bias.assign(static_cast<size_t>(num_classes), 0.0f);
  if (obj.binary()) {
    // P(class 1) = σ(w·x + b) = softmax of the rows (−w/2, w/2) and biases (−b/2, b/2)
    for (int64_t j = 0; j < d; ++j) {
      out.weights.row(0)[j] = static_cast<float>(-0.5 * th[static_cast<size_t>(j)]);
      out.weights.row(1)[j] = static_cast<float>(0.5 * th[static_cast<size_t>(j)]);
    }
    out.bias[0] = static_cast<float>(-0.5 * th[static_cast<size_t>(d)]);
    out.bias[1] = static_cast<float>(0.5 * th[static_cast<size_t>(d)]);
  } else {
    for (size_t i = 0; i < static_cast<size_t>(k * d); ++i) out.weights.data[i] = static_cast<float>(th[i]);
    // The loss does not change when every bias moves by the same amount: centre them.
    double mean = 0.0;
    for (int64_t c = 0; c < k; ++c) mean += th[static_cast<size_t>(k * d + c)];
    mean /= static_cast<double>(k);
    for (int64_t c = 0; c < k; ++c) out.bias[static_cast<size_t>(c)] = static_cast<float>(th[static_cast<size_t>(k * d + c)] - mean);
  }
  return out;
}

Embeddings logistic_logits(const LogRegModel& m, const Embeddings& x) {
  if (x.dim != m.weights.dim) throw Error(ErrorCode::Shape, "logistic regression: feature size differs from the model's");
  Embeddings out(x.rows, m.weights.rows);
  if (x.rows == 0) return out;
  adapt_detail::gemm_nt(x.data.data(), x.rows, x.dim, m.weights.data.data(), m.weights.rows, out.data.data());
  for (int64_t i = 0; i < x.rows; ++i)
    for (int64_t c = 0; c < m.weights.rows; ++c) out.row(i)[c] += m.bias[static_cast<size_t>(c)];
  return out;
}

CSearchResult search_C(const LabeledFeatures& train, const LabeledFeatures& val, const LogRegOptions& options,
                       int refinement_steps) {
  if (val.features.rows == 0) throw Error(ErrorCode::InvalidArgument, "C search: the validation split is empty");
  CSearchResult res;
  std::map<double, LogRegModel> fitted;  // by log10(C)
  auto score = [&](double log_c) {
    auto same = fitted.find(log_c);
    if (same != fitted.end()) {
      for (const auto& [c, acc] : res.tried)
        if (std::fabs(std::log10(c) - log_c) < 1e-12) return acc;
    }
    const LogRegModel* warm = nullptr;
    double best_gap = std::numeric_limits<double>::infinity();
    for (const auto& [lc, model] : fitted)
      if (std::fabs(lc - log_c) < best_gap) {
        best_gap = std::fabs(lc - log_c);
        warm = &model;
      }
    LogRegOptions o = options;
    o.C = std::pow(10.0, log_c);
    LogRegModel m = train_logistic_regression(train.features, train.labels, train.num_classes, o, warm);
    const double acc = adapt_detail::top1_accuracy(logistic_logits(m, val.features), val.labels);
    fitted.emplace(log_c, std::move(m));
    res.tried.emplace_back(o.C, acc);
    return acc;
  };
  double best_lc = -6.0, best_acc = -1.0;
  for (int e = -6; e <= 6; e += 2) {
    const double acc = score(e);
    if (acc > best_acc) {
      best_acc = acc;
      best_lc = e;
    }
  }
  double delta = 2.0;
  for (int s = 0; s < refinement_steps; ++s) {
    delta /= 2.0;
    const double centre = best_lc;
    for (double lc : {centre - delta, centre + delta}) {
      if (lc < -6.0 || lc > 6.0) continue;
      const double acc = score(lc);
      if (acc > best_acc || (acc == best_acc && lc < best_lc)) {
        best_acc = acc;
        best_lc = lc;
      }
    }
  }
  res.C = std::pow(10.0, best_lc);
  res.validation_accuracy = best_acc;
  res.model = std::move(fitted.at(best_lc));
  return res;
}

}  // namespace clipkit
