#include "model/xlmr.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <numeric>
#include <set>

#include "clipkit/error.h"
#include "core/half.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/layernorm.h"

namespace clipkit {

namespace {

constexpr int32_t kPadId = 1;
constexpr float kEps = 1e-5f;

int64_t dim_of(const Checkpoint& ckpt, const std::string& name, size_t rank, size_t axis) {
  const Tensor& t = ckpt.get(name);
  if (t.shape.size() != rank || t.shape[axis] <= 0)
    throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': tensor '" + name + "' has shape " +
                                      shape_str(t.shape) + ", expected " + std::to_string(rank) + " dimensions");
  return t.shape[axis];
}

std::string layer_prefix(const XlmrSpec& s, int64_t i) { return s.prefix + "encoder.layer." + std::to_string(i) + "."; }

// One text's attention over its own L tokens, keys with mask 0 left out (an additive minimum, as
// Hugging Face does; a row whose keys are all masked then attends uniformly). qkv: [L, 3H];
// out: [L, H]. Accumulates in Acc (float for the fast path's rare masked texts, double for the
// reference).
template <typename Acc>
void masked_attention(const float* qkv, int64_t L, int64_t H, int64_t heads, const uint8_t* mask, float* out) {
  const int64_t d = H / heads;
  const Acc scale = Acc(1) / std::sqrt(static_cast<Acc>(d));
  std::vector<Acc> p(static_cast<size_t>(L));
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < L; ++i) {
      const float* q = qkv + i * 3 * H + h * d;
      Acc mx = -std::numeric_limits<Acc>::infinity();
      for (int64_t j = 0; j < L; ++j) {
        const float* k = qkv + j * 3 * H + H + h * d;
        Acc s = 0;
        for (int64_t c = 0; c < d; ++c) s += static_cast<Acc>(q[c]) * static_cast<Acc>(k[c]);
        s *= scale;
        if (!mask[j]) s += static_cast<Acc>(std::numeric_limits<float>::lowest());
        p[j] = s;
        mx = std::max(mx, s);
      }
      Acc sum = 0;
      for (int64_t j = 0; j < L; ++j) sum += (p[j] = std::exp(p[j] - mx));
      for (int64_t c = 0; c < d; ++c) {
        Acc v = 0;
        for (int64_t j = 0; j < L; ++j) v += p[j] * static_cast<Acc>(qkv[j * 3 * H + 2 * H + h * d + c]);
        out[i * H + h * d + c] = static_cast<float>(v / sum);
      }
    }
}

// Drops open_clip's trailing <pad> ids (masked out anyway); keeps at least one id.
std::vector<int32_t> trimmed(const std::vector<int32_t>& row, bool mask_pad_ids) {
  size_t n = row.size();
  if (mask_pad_ids)
    while (n > 1 && row[n - 1] == kPadId) --n;
  return std::vector<int32_t>(row.begin(), row.begin() + static_cast<std::ptrdiff_t>(n));
}

void check_rows(const XlmrSpec& s, const std::vector<std::vector<int32_t>>& rows) {
  for (size_t b = 0; b < rows.size(); ++b) {
    const auto& r = rows[b];
    if (r.empty()) throw Error(ErrorCode::InvalidArgument, "token row " + std::to_string(b) + " is empty");
    if (static_cast<int64_t>(r.size()) > s.max_tokens())
      throw Error(ErrorCode::Limit, "token row " + std::to_string(b) + " has " + std::to_string(r.size()) +
                                        " ids; the text tower's position table allows " +
                                        std::to_string(s.max_tokens()));
    for (size_t t = 0; t < r.size(); ++t)
      if (r[t] < 0 || r[t] >= s.vocab)
        throw Error(ErrorCode::InvalidArgument, "token id " + std::to_string(r[t]) + " (text " + std::to_string(b) +
                                                    ", position " + std::to_string(t) +
                                                    ") is outside the vocabulary [0, " + std::to_string(s.vocab) + ")");
  }
}

}  // namespace

std::vector<uint8_t> xlmr_mask(const std::vector<int32_t>& row, bool mask_pad_ids) {
  std::vector<uint8_t> m(row.size(), 1);
  if (mask_pad_ids)
    for (size_t i = 0; i < row.size(); ++i) m[i] = row[i] != kPadId;
  return m;
}

std::vector<int32_t> xlmr_positions(const std::vector<int32_t>& row) {
  std::vector<int32_t> p(row.size());
  int32_t count = 0;
  for (size_t i = 0; i < row.size(); ++i) {
    const bool real = row[i] != kPadId;
    count += real;
    p[i] = real ? count + kPadId : kPadId;
  }
  return p;
}

bool has_xlmr_tower(const Checkpoint& ckpt, const std::string& prefix) {
  return ckpt.has(prefix + "embeddings.word_embeddings.weight") && ckpt.has(prefix + "encoder.layer.0.attention.self.query.weight");
}

XlmrSpec xlmr_spec(const Checkpoint& ckpt, const std::string& prefix, const std::string& head_prefix, bool mlp_head,
                   bool mask_pad_ids) {
  XlmrSpec s;
  s.prefix = prefix;
  s.head_prefix = head_prefix;
  s.mlp_head = mlp_head;
  s.mask_pad_ids = mask_pad_ids;
  const std::string e = prefix + "embeddings.";
  s.vocab = dim_of(ckpt, e + "word_embeddings.weight", 2, 0);
  s.width = dim_of(ckpt, e + "word_embeddings.weight", 2, 1);
  s.positions = dim_of(ckpt, e + "position_embeddings.weight", 2, 0);
  if (s.positions < 3)
    throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': position table '" + e +
                                      "position_embeddings.weight' has " + std::to_string(s.positions) +
                                      " rows; XLM-RoBERTa needs at least 3 (padding_idx 1 + 1 + one token)");
  std::set<long> seen;
  const std::string lp = prefix + "encoder.layer.";
  for (const auto& [name, t] : ckpt.tensors) {
    if (name.rfind(lp, 0) != 0) continue;
    const std::string idx = name.substr(lp.size(), name.find('.', lp.size()) - lp.size());
    if (idx.empty() || idx.size() > 6 || idx.find_first_not_of("0123456789") != std::string::npos)
      throw Error(ErrorCode::Format, "checkpoint '" + ckpt.path + "': tensor '" + name + "' has no layer index");
    seen.insert(std::stol(idx));
  }
  s.layers = static_cast<int64_t>(seen.size());
  if (s.layers == 0 || *seen.rbegin() != s.layers - 1)
    throw Error(ErrorCode::Format, "checkpoint '" + ckpt.path + "': the layers '" + lp + "N' are not numbered 0.." +
                                       std::to_string(s.layers - 1));
  if (s.width % 64 != 0)
    throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': text width " + std::to_string(s.width) +
                                      " does not split into 64-wide attention heads");
  s.heads = s.width / 64;
  s.intermediate = dim_of(ckpt, lp + "0.intermediate.dense.weight", 2, 0);
  s.embed_dim = dim_of(ckpt, head_prefix + (mlp_head ? "2.weight" : "weight"), 2, 0);
  return s;
}

XlmrTextTower::XlmrTextTower(const Checkpoint& ckpt, const XlmrSpec& spec, WeightFormat format) : spec_(spec) {
  const int64_t H = spec.width;
  const std::string e = spec.prefix + "embeddings.";
  const Tensor& word = ckpt.get(e + "word_embeddings.weight");
  if (word.dtype == DType::F16 && word.shape == Shape{spec.vocab, H}) {
    const size_t n = static_cast<size_t>(spec.vocab * H);
    if (word.owner && reinterpret_cast<uintptr_t>(word.data) % alignof(uint16_t) == 0) {
      word_f16_ = static_cast<const uint16_t*>(word.data);  // the file's own bytes (a mapping, read on lookup)
      word_f16_owner_ = word.owner;
    } else {
      auto copy = std::make_shared<std::vector<uint16_t>>(n);
      std::memcpy(copy->data(), word.data, n * sizeof(uint16_t));
      word_f16_ = copy->data();
      word_f16_owner_ = std::move(copy);
    }
    word_.size = static_cast<int64_t>(n);
  } else {
    word_ = ckpt.f32_shared(e + "word_embeddings.weight", {spec.vocab, H});
  }
  position_ = ckpt.f32(e + "position_embeddings.weight", {spec.positions, H});
  const Tensor& tt = ckpt.get(e + "token_type_embeddings.weight");
  if (tt.shape.size() != 2 || tt.shape[0] < 1 || tt.shape[1] != H)
    throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': tensor '" + e + "token_type_embeddings.weight' has shape " +
                                      shape_str(tt.shape) + ", expected [types, " + std::to_string(H) + "]");
  token_type_ = ckpt.f32(e + "token_type_embeddings.weight");
  token_type_.resize(static_cast<size_t>(H));  // row 0: token_type_ids default to zeros
  ln_embed_ = LayerNormParams(ckpt, e + "LayerNorm.", H);
  layers_.resize(static_cast<size_t>(spec.layers));
  // One layer per thread at a time: every step of a layer's load (reading the mapped weights,
  // packing, the biases and norms) then runs on all cores, where a layer split across the
  // threads left its serial steps to one of them.
  std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1) if (spec.layers > 1)
  for (int64_t i = 0; i < spec.layers; ++i) {
    try {
      load_layer(ckpt, i, format);
    } catch (...) {
#pragma omp critical(clipkit_xlmr_load)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  const std::string& hp = spec.head_prefix;
  if (spec.mlp_head) {
    const int64_t mid = dim_of(ckpt, hp + "0.weight", 2, 0);
    head0_ = load_linear(ckpt, hp + "0.weight", "", H, mid, format);
    head1_ = load_linear(ckpt, hp + "2.weight", "", mid, spec.embed_dim, format);
  } else {
    head0_ = load_linear(ckpt, hp + "weight", hp + "bias", H, spec.embed_dim, format);
  }
}

void XlmrTextTower::load_layer(const Checkpoint& ckpt, int64_t i, WeightFormat format) {
  const int64_t H = spec_.width, I = spec_.intermediate;
  const std::string p = layer_prefix(spec_, i);
  Layer& l = layers_[static_cast<size_t>(i)];
  // q, k and v as one [3H, H] layer: one GEMM, the packed layout attention reads.
  l.qkv = load_linear_stacked(ckpt, {p + "attention.self.query.", p + "attention.self.key.", p + "attention.self.value."},
                              H, H, format);
  l.attn_out = load_linear(ckpt, p + "attention.output.dense.weight", p + "attention.output.dense.bias", H, H, format);
  l.ln_attn = LayerNormParams(ckpt, p + "attention.output.LayerNorm.", H);
  l.inter = load_linear(ckpt, p + "intermediate.dense.weight", p + "intermediate.dense.bias", H, I, format);
  l.out = load_linear(ckpt, p + "output.dense.weight", p + "output.dense.bias", I, H, format);
  l.ln_out = LayerNormParams(ckpt, p + "output.LayerNorm.", H);
}

int64_t XlmrTextTower::parameter_count() const {
  int64_t n = word_.size + static_cast<int64_t>(position_.size() + token_type_.size()) + ln_embed_.parameter_count();
  for (const auto& l : layers_)
    n += l.qkv.parameter_count() + l.attn_out.parameter_count() + l.inter.parameter_count() +
         l.out.parameter_count() + l.ln_attn.parameter_count() + l.ln_out.parameter_count();
  return n + head0_.parameter_count() + head1_.parameter_count();
}

int64_t XlmrTextTower::weight_bytes() const {
  const int64_t f = static_cast<int64_t>(sizeof(float));
  int64_t n = word_.size * (word_f16_ ? 2 : f) +
              (static_cast<int64_t>(position_.size() + token_type_.size()) + ln_embed_.parameter_count()) * f;
  for (const auto& l : layers_)
    n += linear_bytes(l.qkv) + linear_bytes(l.attn_out) + linear_bytes(l.inter) + linear_bytes(l.out) +
         (l.ln_attn.parameter_count() + l.ln_out.parameter_count()) * f;
  n += linear_bytes(head0_);
  if (head1_.out_features() > 0) n += linear_bytes(head1_);
  return n;
}

void XlmrTextTower::encode(const std::vector<std::vector<int32_t>>& rows, float* out, DebugTrace* trace) const {
  if (rows.empty()) return;
  std::vector<std::vector<int32_t>> trimmed_rows;
  trimmed_rows.reserve(rows.size());
  for (const auto& r : rows) trimmed_rows.push_back(trimmed(r, spec_.mask_pad_ids));
  check_rows(spec_, trimmed_rows);
  // Shortest first, so that texts of one length sit side by side (one attention call for them),
  // in chunks of at most ~4096 tokens.
  std::vector<size_t> order(rows.size());
  std::iota(order.begin(), order.end(), 0);
  if (!trace)
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return trimmed_rows[a].size() < trimmed_rows[b].size(); });
  const int64_t E = spec_.embed_dim;
  std::vector<float> chunk_out;
  for (size_t i = 0; i < order.size();) {
    size_t j = i, tokens = 0;
    while (j < order.size() && (j == i || tokens + trimmed_rows[order[j]].size() <= 4096)) tokens += trimmed_rows[order[j++]].size();
    std::vector<const std::vector<int32_t>*> part;
    for (size_t k = i; k < j; ++k) part.push_back(&trimmed_rows[order[k]]);
    chunk_out.resize(part.size() * static_cast<size_t>(E));
    run(part, chunk_out.data(), i == 0 ? trace : nullptr);
    for (size_t k = i; k < j; ++k) std::copy_n(chunk_out.data() + (k - i) * E, E, out + order[k] * E);
    i = j;
  }
}

const float* XlmrTextTower::word_row(int32_t id, float* scratch) const {
  const int64_t H = spec_.width;
  if (!word_f16_) return word_.data + static_cast<int64_t>(id) * H;
  const uint16_t* src = word_f16_ + static_cast<int64_t>(id) * H;
  for (int64_t c = 0; c < H; ++c) scratch[c] = half_to_float(src[c]);
  return scratch;
}

void XlmrTextTower::run(const std::vector<const std::vector<int32_t>*>& rows, float* out, DebugTrace* trace) const {
  const int64_t H = spec_.width, B = static_cast<int64_t>(rows.size());
  std::vector<int64_t> offset(rows.size() + 1, 0);
  for (size_t b = 0; b < rows.size(); ++b) offset[b + 1] = offset[b] + static_cast<int64_t>(rows[b]->size());
  const int64_t R = offset.back();
  std::vector<std::vector<uint8_t>> masks(rows.size());
  std::vector<bool> all_attended(rows.size());
  for (size_t b = 0; b < rows.size(); ++b) {
    masks[b] = xlmr_mask(*rows[b], spec_.mask_pad_ids);
    all_attended[b] = std::all_of(masks[b].begin(), masks[b].end(), [](uint8_t m) { return m != 0; });
  }
  std::vector<float> x(static_cast<size_t>(R * H)), word_scratch(static_cast<size_t>(H));
  for (size_t b = 0; b < rows.size(); ++b) {
    const std::vector<int32_t> pos = xlmr_positions(*rows[b]);
    for (size_t t = 0; t < pos.size(); ++t) {
      const float* we = word_row((*rows[b])[t], word_scratch.data());
      const float* pe = position_.data() + static_cast<int64_t>(pos[t]) * H;
      float* dst = x.data() + (offset[b] + static_cast<int64_t>(t)) * H;
      for (int64_t c = 0; c < H; ++c) dst[c] = (we[c] + token_type_[c]) + pe[c];
    }
  }
  ln_embed_.apply(x.data(), R, x.data());
  trace_store(trace, "text0.embeddings", x.data(), offset[1] * H);
  std::vector<float> qkv(static_cast<size_t>(R * 3 * H)), attn(static_cast<size_t>(R * H)),
      hidden(static_cast<size_t>(R * spec_.intermediate));
  for (size_t li = 0; li < layers_.size(); ++li) {
    const Layer& l = layers_[li];
    l.qkv.forward(x.data(), R, qkv.data());
    for (size_t b = 0; b < rows.size();) {
      const int64_t L = offset[b + 1] - offset[b];
      if (!all_attended[b]) {
        masked_attention<float>(qkv.data() + offset[b] * 3 * H, L, H, spec_.heads, masks[b].data(),
                                attn.data() + offset[b] * H);
        ++b;
        continue;
      }
      size_t e = b + 1;  // the following texts of the same length without masked tokens
      while (e < rows.size() && all_attended[e] && offset[e + 1] - offset[e] == L) ++e;
      multi_head_attention(qkv.data() + offset[b] * 3 * H, static_cast<int64_t>(e - b), L, H, spec_.heads,
                           /*causal=*/false, attn.data() + offset[b] * H);
      b = e;
    }
    l.attn_out.forward_accumulate(attn.data(), R, x.data());
    l.ln_attn.apply(x.data(), R, x.data());
    l.inter.forward(x.data(), R, hidden.data(), Activation::Gelu);
    l.out.forward_accumulate(hidden.data(), R, x.data());
    l.ln_out.apply(x.data(), R, x.data());
    trace_store(trace, "text0.layer" + std::to_string(li), x.data(), offset[1] * H);
  }
  std::vector<float> pooled(static_cast<size_t>(B * H), 0.0f);
  for (size_t b = 0; b < rows.size(); ++b) {
    float* p = pooled.data() + static_cast<int64_t>(b) * H;
    int64_t n = 0;
    for (int64_t t = 0; t < offset[b + 1] - offset[b]; ++t) {
      if (!masks[b][static_cast<size_t>(t)]) continue;
      const float* r = x.data() + (offset[b] + t) * H;
      for (int64_t c = 0; c < H; ++c) p[c] += r[c];
      ++n;
    }
    const float inv = n > 0 ? 1.0f / static_cast<float>(n) : 0.0f;
    for (int64_t c = 0; c < H; ++c) p[c] *= inv;
  }
  trace_store(trace, "text0.pooled", pooled.data(), H);
  if (spec_.mlp_head) {
    std::vector<float> mid(static_cast<size_t>(B * head0_.out_features()));
    head0_.forward(pooled.data(), B, mid.data(), Activation::Gelu);
    head1_.forward(mid.data(), B, out);
  } else {
    head0_.forward(pooled.data(), B, out);
  }
}

void xlmr_reference_encode(const Checkpoint& ckpt, const XlmrSpec& s, const std::vector<std::vector<int32_t>>& in_rows,
                           float* out, DebugTrace* trace) {
  const int64_t H = s.width, I = s.intermediate;
  const std::string e = s.prefix + "embeddings.";
  const std::vector<float> word = ckpt.f32(e + "word_embeddings.weight", {s.vocab, H});
  const std::vector<float> pos_table = ckpt.f32(e + "position_embeddings.weight", {s.positions, H});
  const std::vector<float> tt = ckpt.f32(e + "token_type_embeddings.weight");
  auto lnp = [&](const std::string& p, std::vector<float>& g, std::vector<float>& b) {
    g = ckpt.f32(p + "weight", {H});
    b = ckpt.f32(p + "bias", {H});
  };
  auto linear = [&](const std::string& p, const float* x, int64_t rows, int64_t in, int64_t outn, bool bias,
                    Activation act, std::vector<float>& y) {
    const std::vector<float> w = ckpt.f32(p + "weight", {outn, in});
    std::vector<float> bv;
    if (bias) bv = ckpt.f32(p + "bias", {outn});
    y.assign(static_cast<size_t>(rows * outn), 0.0f);
    linear_reference(x, rows, w.data(), bias ? bv.data() : nullptr, in, outn, y.data(), act);
  };
  std::vector<std::vector<int32_t>> rows;
  for (const auto& r : in_rows) rows.push_back(trimmed(r, s.mask_pad_ids));
  check_rows(s, rows);
  std::vector<float> g, bta;
  for (size_t b = 0; b < rows.size(); ++b) {
    const auto& row = rows[b];
    const int64_t L = static_cast<int64_t>(row.size());
    const std::vector<uint8_t> mask = xlmr_mask(row, s.mask_pad_ids);
    const std::vector<int32_t> pos = xlmr_positions(row);
    std::vector<float> x(static_cast<size_t>(L * H));
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < H; ++c)
        x[t * H + c] = static_cast<float>(static_cast<double>(word[row[t] * H + c]) + tt[c] + pos_table[pos[t] * H + c]);
    lnp(e + "LayerNorm.", g, bta);
    layernorm_reference(x.data(), L, H, g.data(), bta.data(), kEps, x.data());
    if (b == 0) trace_store(trace, "text0.embeddings", x.data(), L * H);
    for (int64_t li = 0; li < s.layers; ++li) {
      const std::string p = layer_prefix(s, li);
      std::vector<float> q, k, v, qkv(static_cast<size_t>(L * 3 * H)), attn(static_cast<size_t>(L * H)), y, h;
      linear(p + "attention.self.query.", x.data(), L, H, H, true, Activation::None, q);
      linear(p + "attention.self.key.", x.data(), L, H, H, true, Activation::None, k);
      linear(p + "attention.self.value.", x.data(), L, H, H, true, Activation::None, v);
      for (int64_t t = 0; t < L; ++t) {
        std::copy_n(q.data() + t * H, H, qkv.data() + t * 3 * H);
        std::copy_n(k.data() + t * H, H, qkv.data() + t * 3 * H + H);
        std::copy_n(v.data() + t * H, H, qkv.data() + t * 3 * H + 2 * H);
      }
      masked_attention<double>(qkv.data(), L, H, s.heads, mask.data(), attn.data());
      linear(p + "attention.output.dense.", attn.data(), L, H, H, true, Activation::None, y);
      for (size_t i = 0; i < x.size(); ++i) x[i] += y[i];
      lnp(p + "attention.output.LayerNorm.", g, bta);
      layernorm_reference(x.data(), L, H, g.data(), bta.data(), kEps, x.data());
      linear(p + "intermediate.dense.", x.data(), L, H, I, true, Activation::Gelu, h);
      linear(p + "output.dense.", h.data(), L, I, H, true, Activation::None, y);
      for (size_t i = 0; i < x.size(); ++i) x[i] += y[i];
      lnp(p + "output.LayerNorm.", g, bta);
      layernorm_reference(x.data(), L, H, g.data(), bta.data(), kEps, x.data());
      if (b == 0) trace_store(trace, "text0.layer" + std::to_string(li), x.data(), L * H);
    }
    std::vector<double> acc(static_cast<size_t>(H), 0.0);
    int64_t n = 0;
    for (int64_t t = 0; t < L; ++t)
      if (mask[t]) {
        for (int64_t c = 0; c < H; ++c) acc[c] += x[t * H + c];
        ++n;
      }
    std::vector<float> pooled(static_cast<size_t>(H));
    for (int64_t c = 0; c < H; ++c) pooled[c] = static_cast<float>(n ? acc[c] / n : 0.0);
    if (b == 0) trace_store(trace, "text0.pooled", pooled.data(), H);
    std::vector<float> res;
    if (s.mlp_head) {
      const int64_t mid = ckpt.get(s.head_prefix + "0.weight").shape[0];
      std::vector<float> m;
      linear(s.head_prefix + "0.", pooled.data(), 1, H, mid, false, Activation::Gelu, m);
      linear(s.head_prefix + "2.", m.data(), 1, mid, s.embed_dim, false, Activation::None, res);
    } else {
      linear(s.head_prefix, pooled.data(), 1, H, s.embed_dim, true, Activation::None, res);
    }
    std::copy(res.begin(), res.end(), out + static_cast<int64_t>(b) * s.embed_dim);
  }
}

}  // namespace clipkit
