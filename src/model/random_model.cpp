#include "model/random_model.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "clipkit/error.h"
#include "core/half.h"
#include "model/openclip_archs.h"

namespace clipkit {

namespace {

ClipConfig vit(int embed, int res, int layers, int width, int patch, int text_width) {
  ClipConfig c;
  c.kind = "vit";
  c.embed_dim = embed;
  c.image_resolution = res;
  c.vision_layers = layers;
  c.vision_width = width;
  c.vision_patch_size = patch;
  c.text_width = text_width;
  c.text_layers = 12;
  return c;
}

ClipConfig resnet(int embed, int res, std::vector<int> layers, int width, int text_width) {
  ClipConfig c;
  c.kind = "resnet";
  c.embed_dim = embed;
  c.image_resolution = res;
  c.resnet_layers = std::move(layers);
  c.vision_width = width;
  c.text_width = text_width;
  c.text_layers = 12;
  return c;
}

const std::vector<std::pair<std::string, ClipConfig>>& presets() {
  static const std::vector<std::pair<std::string, ClipConfig>> p = {
      {"RN50", resnet(1024, 224, {3, 4, 6, 3}, 64, 512)},
      {"RN101", resnet(512, 224, {3, 4, 23, 3}, 64, 512)},
      {"RN50x4", resnet(640, 288, {4, 6, 10, 6}, 80, 640)},
      {"RN50x16", resnet(768, 384, {6, 8, 18, 8}, 96, 768)},
      {"RN50x64", resnet(1024, 448, {3, 15, 36, 10}, 128, 1024)},
      {"ViT-B/32", vit(512, 224, 12, 768, 32, 512)},
      {"ViT-B/16", vit(512, 224, 12, 768, 16, 512)},
      {"ViT-L/14", vit(768, 224, 24, 1024, 14, 768)},
      {"ViT-L/14@336px", vit(768, 336, 24, 1024, 14, 768)},
  };
  return p;
}

int parse_int(const std::string& key, const std::string& v) {
  size_t pos = 0;
  long x = 0;
  try {
    x = std::stol(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos != v.size() || v.empty() || x <= 0 || x > 1000000)
    throw Error(ErrorCode::InvalidArgument, "custom architecture: '" + key + "=" + v + "' is not a positive integer");
  return static_cast<int>(x);
}

void validate(const ClipConfig& c, const std::string& name) {
  auto bad = [&](const std::string& why) { return Error(ErrorCode::InvalidArgument, "architecture '" + name + "': " + why); };
  if (c.kind != "vit" && c.kind != "resnet") throw bad("kind must be vit or resnet");
  if (c.embed_dim <= 0 || c.image_resolution <= 0 || c.vision_width <= 0 || c.text_width <= 0 || c.text_layers <= 0 ||
      c.context_length <= 0 || c.vocab_size <= 0)
    throw bad("embed_dim, image_resolution, vision_width, text_width and text_layers must be given and positive");
  if (c.text_width % 64 != 0) throw bad("text_width must be a multiple of 64 (heads = width / 64)");
  if (c.kind == "vit") {
    if (c.vision_layers <= 0 || c.vision_patch_size <= 0) throw bad("a ViT needs vision_layers and vision_patch_size");
    if (c.image_resolution % c.vision_patch_size != 0) throw bad("image_resolution must be a multiple of vision_patch_size");
    if (c.vision_width % 64 != 0) throw bad("vision_width must be a multiple of 64 (heads = width / 64)");
  } else {
    if (c.resnet_layers.size() != 4) throw bad("a ResNet needs 4 stage sizes, e.g. vision_layers=3-4-6-3");
    for (int l : c.resnet_layers)
      if (l <= 0) throw bad("every ResNet stage needs at least one block");
    if (c.vision_width % 2 != 0) throw bad("the ResNet vision_width must be even");
    if (c.image_resolution % 32 != 0) throw bad("a ResNet image_resolution must be a multiple of 32");
  }
}

// The sizes an open_clip model_cfg gives (built-in names: every field is written).
ClipConfig from_openclip(const nlohmann::json& cfg, const std::string& name) {
  ClipConfig c;
  const nlohmann::json& v = cfg.at("vision_cfg");
  const nlohmann::json& t = cfg.at("text_cfg");
  c.embed_dim = cfg.at("embed_dim").get<int>();
  c.image_resolution = v.at("image_size").get<int>();
  c.vision_width = v.at("width").get<int>();
  if (v.at("layers").is_array()) {
    c.kind = "resnet";
    c.resnet_layers = v.at("layers").get<std::vector<int>>();
  } else {
    c.kind = "vit";
    c.vision_layers = v.at("layers").get<int>();
    c.vision_patch_size = v.at("patch_size").get<int>();
    // open_clip: mlp_width = int(width * mlp_ratio)
    c.vision_mlp_width = static_cast<int>(c.vision_width * v.value("mlp_ratio", 4.0));
  }
  c.context_length = t.at("context_length").get<int>();
  c.vocab_size = t.at("vocab_size").get<int>();
  c.text_width = t.at("width").get<int>();
  c.text_layers = t.at("layers").get<int>();
  validate(c, name);
  return c;
}

ClipConfig parse_custom(const std::string& name) {
  ClipConfig c;
  c.kind = "";
  std::stringstream ss(name.substr(7));
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos)
      throw Error(ErrorCode::InvalidArgument, "custom architecture: '" + item + "' is not key=value");
    const std::string k = item.substr(0, eq), v = item.substr(eq + 1);
    if (k == "kind") {
      c.kind = v;
    } else if (k == "vision_layers") {
      if (v.find('-') != std::string::npos) {
        std::stringstream ls(v);
        std::string part;
        while (std::getline(ls, part, '-')) c.resnet_layers.push_back(parse_int(k, part));
      } else {
        c.vision_layers = parse_int(k, v);
      }
    } else if (k == "embed_dim") c.embed_dim = parse_int(k, v);
    else if (k == "image_resolution") c.image_resolution = parse_int(k, v);
    else if (k == "vision_width") c.vision_width = parse_int(k, v);
    else if (k == "vision_patch_size") c.vision_patch_size = parse_int(k, v);
    else if (k == "context_length") c.context_length = parse_int(k, v);
    else if (k == "vocab_size") c.vocab_size = parse_int(k, v);
    else if (k == "text_width") c.text_width = parse_int(k, v);
    else if (k == "text_layers") c.text_layers = parse_int(k, v);
    else
      throw Error(ErrorCode::InvalidArgument, "custom architecture: unknown key '" + k + "'");
  }
  if (c.kind.empty()) c.kind = c.resnet_layers.empty() ? "vit" : "resnet";
  if (c.kind == "resnet" && c.resnet_layers.empty() && c.vision_layers > 0)
    throw Error(ErrorCode::InvalidArgument, "custom architecture: a ResNet's vision_layers are 4 stage sizes like 3-4-6-3");
  validate(c, name);
  return c;
}

// Layout builder: appends specs in state_dict order.
struct Builder {
  std::vector<TensorSpec> specs;
  void normal(const std::string& n, Shape s, float std, float mean = 0.0f) {
    specs.push_back({n, std::move(s), DType::F32, mean, std, false});
  }
  void uniform(const std::string& n, Shape s, float bound) { specs.push_back({n, std::move(s), DType::F32, 0.0f, bound, true}); }
  void fill(const std::string& n, Shape s, float value) { normal(n, std::move(s), 0.0f, value); }
  void layernorm(const std::string& p, int64_t w) {
    fill(p + ".weight", {w}, 1.0f);
    fill(p + ".bias", {w}, 0.0f);
  }
  void batchnorm(const std::string& p, int64_t c, float gain = 1.0f) {
    fill(p + ".weight", {c}, gain);
    fill(p + ".bias", {c}, 0.0f);
    fill(p + ".running_mean", {c}, 0.0f);
    fill(p + ".running_var", {c}, 1.0f);
    specs.push_back({p + ".num_batches_tracked", {}, DType::I64, 0.0f, 0.0f, false});
  }
  void conv(const std::string& n, int64_t out, int64_t in, int64_t k) {
    normal(n, {out, in, k, k}, static_cast<float>(std::sqrt(2.0 / static_cast<double>(in * k * k))));
  }
  // Residual attention blocks. clip_init: CLIP.initialize_parameters (text tower); otherwise
  // PyTorch defaults (MultiheadAttention: xavier-uniform in_proj, zero biases; Linear: U(±1/sqrt(in))).
  void blocks(const std::string& p, int64_t w, int layers, bool clip_init, int64_t mlp = 0) {
    const int64_t h = mlp > 0 ? mlp : 4 * w;
    const float proj_std = static_cast<float>(1.0 / std::sqrt(static_cast<double>(w)) / std::sqrt(2.0 * layers));
    const float attn_std = static_cast<float>(1.0 / std::sqrt(static_cast<double>(w)));
    const float fc_std = static_cast<float>(1.0 / std::sqrt(2.0 * static_cast<double>(w)));
    const float in_bound = static_cast<float>(1.0 / std::sqrt(static_cast<double>(w)));
    const float hid_bound = static_cast<float>(1.0 / std::sqrt(static_cast<double>(h)));
    for (int i = 0; i < layers; ++i) {
      const std::string b = p + "resblocks." + std::to_string(i) + ".";
      if (clip_init) normal(b + "attn.in_proj_weight", {3 * w, w}, attn_std);
      else uniform(b + "attn.in_proj_weight", {3 * w, w}, static_cast<float>(std::sqrt(6.0 / (4.0 * static_cast<double>(w)))));
      fill(b + "attn.in_proj_bias", {3 * w}, 0.0f);
      if (clip_init) normal(b + "attn.out_proj.weight", {w, w}, proj_std);
      else uniform(b + "attn.out_proj.weight", {w, w}, in_bound);
      fill(b + "attn.out_proj.bias", {w}, 0.0f);
      layernorm(b + "ln_1", w);
      if (clip_init) normal(b + "mlp.c_fc.weight", {h, w}, fc_std);
      else uniform(b + "mlp.c_fc.weight", {h, w}, in_bound);
      uniform(b + "mlp.c_fc.bias", {h}, in_bound);
      if (clip_init) normal(b + "mlp.c_proj.weight", {w, h}, proj_std);
      else uniform(b + "mlp.c_proj.weight", {w, h}, hid_bound);
      uniform(b + "mlp.c_proj.bias", {w}, hid_bound);
      layernorm(b + "ln_2", w);
    }
  }
};

// splitmix64: a small, well-mixed generator; one stream per (seed, tensor, block).
struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform01() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
};

void generate(const TensorSpec& spec, uint64_t seed, uint64_t tensor_index, float* out) {
  const int64_t n = shape_numel(spec.shape);
  if (spec.std == 0.0f && !spec.uniform) {
    std::fill(out, out + n, spec.mean);
    return;
  }
  const int64_t block = 1 << 16;
  const int64_t blocks = (n + block - 1) / block;
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    SplitMix rng{seed * 0x100000001b3ull ^ (tensor_index << 32) ^ static_cast<uint64_t>(b) * 0x9e3779b97f4a7c15ull};
    rng.next();
    const int64_t lo = b * block, hi = std::min(n, lo + block);
    if (spec.uniform) {
      for (int64_t i = lo; i < hi; ++i) out[i] = static_cast<float>((2.0 * rng.uniform01() - 1.0) * spec.std);
    } else {
      for (int64_t i = lo; i < hi; i += 2) {  // Box–Muller, both outputs used
        const double u1 = 1.0 - rng.uniform01(), u2 = rng.uniform01();
        const double r = std::sqrt(-2.0 * std::log(u1));
        out[i] = static_cast<float>(spec.mean + spec.std * r * std::cos(6.283185307179586 * u2));
        if (i + 1 < hi) out[i + 1] = static_cast<float>(spec.mean + spec.std * r * std::sin(6.283185307179586 * u2));
      }
    }
  }
}

}  // namespace

std::vector<std::string> clip_config_names() {
  std::vector<std::string> names;
  for (const auto& [n, c] : presets()) names.push_back(n);
  return names;
}

ClipConfig clip_config(const std::string& name) {
  for (const auto& [n, c] : presets())
    if (n == name) return c;
  if (name.rfind("custom:", 0) == 0) return parse_custom(name);
  if (const nlohmann::json* oc = openclip_arch_config(name)) return from_openclip(*oc, name);
  std::string list;
  for (const auto& n : clip_config_names()) list += (list.empty() ? "" : ", ") + n;
  throw Error(ErrorCode::InvalidArgument, "unknown architecture '" + name + "' (expected one of " + list +
                                              ", an open_clip name from `clipkit list archs`, or custom:key=value,...)");
}

std::vector<TensorSpec> clip_state_dict_layout(const ClipConfig& c) {
  validate(c, "config");
  Builder B;
  const int64_t tw = c.text_width;
  // CLIP's own parameters come first in state_dict order.
  B.normal("positional_embedding", {c.context_length, tw}, 0.01f);
  B.normal("text_projection", {tw, c.embed_dim}, static_cast<float>(1.0 / std::sqrt(static_cast<double>(tw))));
  B.fill("logit_scale", {}, static_cast<float>(std::log(1.0 / 0.07)));
  if (c.kind == "vit") {
    const int64_t w = c.vision_width, p = c.vision_patch_size, grid = c.image_resolution / p;
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(w)));
    B.normal("visual.class_embedding", {w}, scale);
    B.normal("visual.positional_embedding", {grid * grid + 1, w}, scale);
    B.normal("visual.proj", {w, c.embed_dim}, scale);
    B.uniform("visual.conv1.weight", {w, 3, p, p}, static_cast<float>(1.0 / std::sqrt(3.0 * static_cast<double>(p * p))));
    B.layernorm("visual.ln_pre", w);
    B.blocks("visual.transformer.", w, c.vision_layers, /*clip_init=*/false, c.vision_mlp_width);
    B.layernorm("visual.ln_post", w);
  } else {
    const int64_t w = c.vision_width;
    B.conv("visual.conv1.weight", w / 2, 3, 3);
    B.batchnorm("visual.bn1", w / 2);
    B.conv("visual.conv2.weight", w / 2, w / 2, 3);
    B.batchnorm("visual.bn2", w / 2);
    B.conv("visual.conv3.weight", w, w / 2, 3);
    B.batchnorm("visual.bn3", w);
    int64_t inplanes = w;
    for (int s = 0; s < 4; ++s) {
      const int64_t planes = w << s;
      const int stride = s == 0 ? 1 : 2;
      for (int b = 0; b < c.resnet_layers[static_cast<size_t>(s)]; ++b) {
        const std::string p = "visual.layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
        B.conv(p + "conv1.weight", planes, inplanes, 1);
        B.batchnorm(p + "bn1", planes);
        B.conv(p + "conv2.weight", planes, planes, 3);
        B.batchnorm(p + "bn2", planes);
        B.conv(p + "conv3.weight", planes * 4, planes, 1);
        B.batchnorm(p + "bn3", planes * 4, 0.1f);
        if (b == 0 && (stride > 1 || inplanes != planes * 4)) {
          B.conv(p + "downsample.0.weight", planes * 4, inplanes, 1);
          B.batchnorm(p + "downsample.1", planes * 4);
        }
        inplanes = planes * 4;
      }
    }
    const int64_t dim = w * 32, spacial = c.image_resolution / 32;
    const float std = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));
    B.normal("visual.attnpool.positional_embedding", {spacial * spacial + 1, dim}, std);
    for (const char* proj : {"k_proj", "q_proj", "v_proj"}) {
      B.normal(std::string("visual.attnpool.") + proj + ".weight", {dim, dim}, std);
      B.uniform(std::string("visual.attnpool.") + proj + ".bias", {dim}, std);
    }
    B.normal("visual.attnpool.c_proj.weight", {c.embed_dim, dim}, std);
    B.uniform("visual.attnpool.c_proj.bias", {c.embed_dim}, std);
  }
  B.blocks("transformer.", tw, c.text_layers, /*clip_init=*/true);
  B.normal("token_embedding.weight", {c.vocab_size, tw}, 0.02f);
  B.layernorm("ln_final", tw);
  return B.specs;
}

int64_t clip_parameter_count(const std::vector<TensorSpec>& layout) {
  int64_t n = 0;
  for (const auto& s : layout) {
    if (s.dtype != DType::F32) continue;
    const std::string& nm = s.name;
    auto ends = [&](const std::string& suf) {
      return nm.size() >= suf.size() && nm.compare(nm.size() - suf.size(), suf.size(), suf) == 0;
    };
    if (ends("running_mean") || ends("running_var")) continue;
    n += shape_numel(s.shape);
  }
  return n;
}

void write_random_clip(const std::string& path, const ClipConfig& config, uint64_t seed, DType dtype,
                       const std::map<std::string, std::string>& metadata) {
  write_random_layout(path, clip_state_dict_layout(config), seed, dtype, metadata);
}

const std::vector<std::string>& mclip_random_names() {
  static const std::vector<std::string> names = {"mclip-xlmr-base", "mclip-xlmr-large"};
  return names;
}

std::vector<TensorSpec> mclip_state_dict_layout(const std::string& name, int64_t* embed_dim, int64_t* width) {
  int64_t layers = 0, H = 0, I = 0, out = 0;
  if (name == "mclip-xlmr-large") {
    layers = 24, H = 1024, I = 4096, out = 768;  // M-CLIP/XLM-Roberta-Large-Vit-L-14
  } else if (name == "mclip-xlmr-base") {
    layers = 12, H = 768, I = 3072, out = 512;
  } else {
    throw Error(ErrorCode::InvalidArgument, "unknown M-CLIP architecture '" + name + "' (mclip-xlmr-base, mclip-xlmr-large)");
  }
  if (embed_dim) *embed_dim = out;
  if (width) *width = H;
  const int64_t V = 250002, P = 514;
  std::vector<TensorSpec> l;
  // Hugging Face's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms.
  auto lin = [&](const std::string& p, int64_t o, int64_t i) {
    l.push_back({p + "weight", {o, i}, DType::F32, 0.0f, 0.02f});
    l.push_back({p + "bias", {o}, DType::F32, 0.0f, 0.0f});
  };
  auto ln = [&](const std::string& p) {
    l.push_back({p + "weight", {H}, DType::F32, 1.0f, 0.0f});
    l.push_back({p + "bias", {H}, DType::F32, 0.0f, 0.0f});
  };
  const std::string e = "transformer.embeddings.";
  l.push_back({e + "word_embeddings.weight", {V, H}, DType::F32, 0.0f, 0.02f});
  l.push_back({e + "position_embeddings.weight", {P, H}, DType::F32, 0.0f, 0.02f});
  l.push_back({e + "token_type_embeddings.weight", {1, H}, DType::F32, 0.0f, 0.02f});
  ln(e + "LayerNorm.");
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = "transformer.encoder.layer." + std::to_string(i) + ".";
    lin(p + "attention.self.query.", H, H);
    lin(p + "attention.self.key.", H, H);
    lin(p + "attention.self.value.", H, H);
    lin(p + "attention.output.dense.", H, H);
    ln(p + "attention.output.LayerNorm.");
    lin(p + "intermediate.dense.", I, H);
    lin(p + "output.dense.", H, I);
    ln(p + "output.LayerNorm.");
  }
  lin("LinearTransformation.", out, H);
  return l;
}

void write_random_layout(const std::string& path, const std::vector<TensorSpec>& layout, uint64_t seed, DType dtype,
                         const std::map<std::string, std::string>& metadata) {
  if (dtype != DType::F32 && dtype != DType::F16)
    throw Error(ErrorCode::InvalidArgument, std::string("random weights can be F32 or F16, not ") + dtype_name(dtype));
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& s : layout) {
    const DType dt = s.dtype == DType::F32 ? dtype : s.dtype;
    const uint64_t bytes = static_cast<uint64_t>(shape_numel(s.shape)) * dtype_size(dt);
    header[s.name] = {{"dtype", dtype_name(dt)}, {"shape", s.shape}, {"data_offsets", {off, off + bytes}}};
    off += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');

  const std::string tmp = path + ".tmp-" + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(ErrorCode::Io, "cannot create '" + tmp + "': " + std::strerror(errno));
  auto fail = [&](const std::string& what) {
    const std::string err = std::strerror(errno);
    std::fclose(f);
    std::remove(tmp.c_str());
    return Error(ErrorCode::Io, "cannot write '" + path + "': " + what + " (" + err + ")");
  };
  const uint64_t hl = h.size();
  if (std::fwrite(&hl, 8, 1, f) != 1 || std::fwrite(h.data(), 1, h.size(), f) != h.size()) throw fail("header");
  std::vector<float> values;
  std::vector<uint16_t> halves;
  for (size_t i = 0; i < layout.size(); ++i) {
    const TensorSpec& s = layout[i];
    const int64_t n = shape_numel(s.shape);
    const void* data = nullptr;
    size_t bytes = 0;
    int64_t zero = 0;
    if (s.dtype == DType::I64) {
      data = &zero;
      bytes = 8;
    } else {
      values.resize(static_cast<size_t>(n));
      generate(s, seed, i, values.data());
      if (dtype == DType::F16) {
        halves.resize(values.size());
        for (size_t k = 0; k < values.size(); ++k) halves[k] = float_to_half(values[k]);
        data = halves.data();
        bytes = halves.size() * 2;
      } else {
        data = values.data();
        bytes = values.size() * 4;
      }
    }
    if (bytes && std::fwrite(data, 1, bytes, f) != bytes) throw fail("tensor '" + s.name + "'");
  }
  if (std::fflush(f) != 0 || fsync(fileno(f)) != 0) throw fail("flush");
  if (std::fclose(f) != 0) {
    std::remove(tmp.c_str());
    throw Error(ErrorCode::Io, "cannot write '" + path + "': " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    std::remove(tmp.c_str());
    throw Error(ErrorCode::Io, "cannot rename '" + tmp + "' to '" + path + "': " + err);
  }
}

std::vector<float> structured_pixels(int64_t batch, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(batch * 3 * n * n));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < 3; ++c) {
      const float offset = d(rng), gx = d(rng), gy = d(rng);
      for (int64_t y = 0; y < n; ++y)
        for (int64_t x = 0; x < n; ++x)
          v[static_cast<size_t>(((b * 3 + c) * n + y) * n + x)] =
              offset + 1.5f * (gx * static_cast<float>(x) + gy * static_cast<float>(y)) / static_cast<float>(n) +
              0.3f * d(rng);
    }
  return v;
}

}  // namespace clipkit
