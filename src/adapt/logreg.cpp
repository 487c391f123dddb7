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

namespace clipkit {

namespace {

// The objective, divided by C·N so that its size does not grow with the data:
//   F(θ) = (1/N)·Σᵢ lossᵢ + 1/(2·C·N)·‖W − A‖².
// θ packs W row-major then b. Multinomial: W [K, D], b [K], lossᵢ the cross-entropy of softmax(W·xᵢ + b).
// Binary: w [D], b [1], lossᵢ = log(1 + exp(−sᵢ·(w·xᵢ + b))), sᵢ = ±1 (class 1 positive).
class Objective {
 public:
  Objective(const Embeddings& x, const std::vector<int>& y, int classes, const LogRegOptions& o)
      : x_(x), y_(y), n_(x.rows), d_(x.dim), binary_(classes == 2 && o.anchor == nullptr && !o.penalize_bias),
        k_(binary_ ? 1 : classes), reg_(1.0 / (o.C * static_cast<double>(x.rows))), anchor_(o.anchor),
        penalize_bias_(o.penalize_bias) {
    small_ = n_ * d_ * k_ <= 4'000'000;
    rows_.resize(static_cast<size_t>(n_ * k_));
    gw_.resize(static_cast<size_t>(k_ * d_));
    if (!small_) {
      rows_f_.resize(rows_.size());
      wf_.resize(gw_.size());
      gwf_.resize(gw_.size());
    }
    row_loss_.resize(static_cast<size_t>(n_));
  }
  size_t size() const { return static_cast<size_t>(k_ * d_ + k_); }
  int64_t k() const { return k_; }
  bool binary() const { return binary_; }

  double operator()(const std::vector<double>& th, std::vector<double>& g) {
    const double* b = th.data() + k_ * d_;
    // rows_ = X·Wᵀ, then the loss and its derivative by the logits, divided by N, in place. Small
    // problems stay in double throughout (their optimum is then found to double precision).
    if (small_) {
      for (int64_t i = 0; i < n_; ++i)
        for (int64_t c = 0; c < k_; ++c) {
          double acc = 0.0;
          for (int64_t j = 0; j < d_; ++j) acc += static_cast<double>(x_.row(i)[j]) * th[static_cast<size_t>(c * d_ + j)];
          rows_[static_cast<size_t>(i * k_ + c)] = acc;
        }
    } else {
      for (size_t i = 0; i < wf_.size(); ++i) wf_[i] = static_cast<float>(th[i]);
      adapt_detail::gemm_nt(x_.data.data(), n_, d_, wf_.data(), k_, rows_f_.data());
      for (size_t i = 0; i < rows_.size(); ++i) rows_[i] = rows_f_[i];
    }
    const double inv_n = 1.0 / static_cast<double>(n_);
    const int64_t k = k_;
#pragma omp parallel for schedule(static) if (n_ * k > 20000)
    for (int64_t i = 0; i < n_; ++i) {
      double* z = rows_.data() + i * k;
      const int yi = y_[static_cast<size_t>(i)];
      if (binary_) {
        const double t = static_cast<double>(z[0]) + b[0];
        const double s = yi == 1 ? 1.0 : -1.0;
        const double m = -s * t;  // loss = log(1 + exp(m))
        row_loss_[static_cast<size_t>(i)] = m > 0 ? m + std::log1p(std::exp(-m)) : std::log1p(std::exp(m));
        const double sig = 1.0 / (1.0 + std::exp(-t));  // P(class 1)
        z[0] = (sig - (yi == 1 ? 1.0 : 0.0)) * inv_n;
        continue;
      }
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t c = 0; c < k; ++c) mx = std::max(mx, static_cast<double>(z[c]) + b[c]);
      double sum = 0.0;
      for (int64_t c = 0; c < k; ++c) sum += std::exp(static_cast<double>(z[c]) + b[c] - mx);
      row_loss_[static_cast<size_t>(i)] = std::log(sum) + mx - (static_cast<double>(z[yi]) + b[yi]);
      for (int64_t c = 0; c < k; ++c) {
        const double p = std::exp(static_cast<double>(z[c]) + b[c] - mx) / sum;
        z[c] = (p - (c == yi ? 1.0 : 0.0)) * inv_n;
      }
    }
    double f = 0.0;
    for (double v : row_loss_) f += v;
    f *= inv_n;
    // ∂/∂W = Gᵀ·X + reg·(W − A); ∂/∂b = column sums of G (in fixed blocks of rows, summed in order).
    if (small_) {
      std::fill(gw_.begin(), gw_.end(), 0.0);
      for (int64_t i = 0; i < n_; ++i)
        for (int64_t c = 0; c < k_; ++c) {
          const double gv = rows_[static_cast<size_t>(i * k_ + c)];
          for (int64_t j = 0; j < d_; ++j) gw_[static_cast<size_t>(c * d_ + j)] += gv * x_.row(i)[j];
        }
    } else {
      for (size_t i = 0; i < rows_.size(); ++i) rows_f_[i] = static_cast<float>(rows_[i]);
      adapt_detail::gemm_tn(rows_f_.data(), n_, k_, x_.data.data(), d_, gwf_.data());
      for (size_t i = 0; i < gw_.size(); ++i) gw_[i] = gwf_[i];
    }
    double pen = 0.0;
    for (int64_t c = 0; c < k_; ++c)
      for (int64_t j = 0; j < d_; ++j) {
        const size_t idx = static_cast<size_t>(c * d_ + j);
        const double diff = th[idx] - (anchor_ ? static_cast<double>(anchor_->row(c)[j]) : 0.0);
        pen += diff * diff;
        g[idx] = gw_[idx] + reg_ * diff;
      }
    f += 0.5 * reg_ * pen;
    double* gb = g.data() + k_ * d_;
    std::fill(gb, gb + k_, 0.0);
    for (int64_t i = 0; i < n_; ++i)
      for (int64_t c = 0; c < k_; ++c) gb[c] += rows_[static_cast<size_t>(i * k_ + c)];
    if (penalize_bias_)
      for (int64_t c = 0; c < k_; ++c) {
        gb[c] += reg_ * b[c];
        f += 0.5 * reg_ * b[c] * b[c];
      }
    return f;
  }

 private:
  const Embeddings& x_;
  const std::vector<int>& y_;
  int64_t n_, d_;
  bool binary_;
  int64_t k_;
  double reg_;
  const Embeddings* anchor_;
  bool penalize_bias_;
  bool small_ = true;
  std::vector<double> rows_, gw_;
  std::vector<float> rows_f_, wf_, gwf_;
  std::vector<double> row_loss_;
};

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
  std::vector<double> g(th.size()), g_new(th.size()), dir(th.size()), th_new(th.size()), alpha_tmp(kHistory);
  double f = obj(th, g);
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
      s_hist.clear();
      y_hist.clear();
      rho_hist.clear();
      for (size_t i = 0; i < th.size(); ++i) dir[i] = -g[i] / std::max(1.0, std::sqrt(dot(g, g)));
      gd = dot(g, dir);
    }
    double step = 1.0, f_new = f;
    bool accepted = false;
    for (int ls = 0; ls < 20; ++ls) {
      for (size_t i = 0; i < th.size(); ++i) th_new[i] = th[i] + step * dir[i];
      f_new = obj(th_new, g_new);
      if (std::isfinite(f_new) && f_new <= f + 1e-4 * step * gd) {
        accepted = true;
        break;
      }
      // minimiser of the quadratic through f, gd and f_new, kept within [0.1, 0.5] of the step
      double next = std::isfinite(f_new) ? -gd * step * step / (2.0 * (f_new - f - gd * step)) : 0.1 * step;
      step = std::clamp(next, 0.1 * step, 0.5 * step);
    }
    if (!accepted) {
      
      break;  // no decrease at the precision of the objective: at the optimum
    }
    std::vector<double> sv(th.size()), yv(th.size());
    for (size_t i = 0; i < th.size(); ++i) {
      sv[i] = th_new[i] - th[i];
      yv[i] = g_new[i] - g[i];
    }
    const double sy = dot(sv, yv);
    if (sy > 1e-12 * std::sqrt(dot(sv, sv) * dot(yv, yv))) {
      if (static_cast<int>(s_hist.size()) == kHistory) {
        s_hist.erase(s_hist.begin());
        y_hist.erase(y_hist.begin());
        rho_hist.erase(rho_hist.begin());
      }
      s_hist.push_back(std::move(sv));
      y_hist.push_back(std::move(yv));
      rho_hist.push_back(1.0 / sy);
    }
    const double f_old = f;
    th.swap(th_new);
    g.swap(g_new);
    f = f_new;
    // scipy's L-BFGS-B rule (ftol = 64·machine epsilon): no relative decrease left to find
    if (f_old - f <= 64 * std::numeric_limits<double>::epsilon() * std::max({std::fabs(f_old), std::fabs(f), 1.0})) {
      out.converged = max_abs(g) <= std::max(o.tolerance, 1e-4);
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
