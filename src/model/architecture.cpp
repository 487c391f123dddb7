// Architecture inference from tensor shapes, following clip.model.build_model.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <set>
#include <string>

#include "clipkit/error.h"
#include "core/json_limits.h"
#include "model/encoder.h"
#include "model/openclip_config.h"

namespace clipkit {

namespace {

const Shape& shape_of(const Checkpoint& ckpt, const std::string& name, size_t rank) {
  const Tensor& t = ckpt.get(name);
  if (t.shape.size() != rank)
    throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': tensor '" + name + "' has shape " +
                                      shape_str(t.shape) + ", expected " + std::to_string(rank) + " dimensions");
  for (int64_t d : t.shape)
    if (d <= 0)
      throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': tensor '" + name + "' has an empty dimension " +
                                        shape_str(t.shape));
  return t.shape;
}

// Number of blocks named `prefix<N>.` (N = 0, 1, ...); checks that the indices are 0..n-1.
int count_blocks(const Checkpoint& ckpt, const std::string& prefix) {
  std::set<long> seen;
  for (const auto& [name, t] : ckpt.tensors) {
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    const size_t dot = rest.find('.');
    const std::string idx = rest.substr(0, dot);
    if (idx.empty() || idx.find_first_not_of("0123456789") != std::string::npos || idx.size() > 6)
      throw Error(ErrorCode::Format, "checkpoint '" + ckpt.path + "': tensor '" + name + "' has no block index after '" +
                                         prefix + "'");
    seen.insert(std::stol(idx));
  }
  long expect = 0;
  for (long i : seen) {
    if (i != expect)
      throw Error(ErrorCode::Format, "checkpoint '" + ckpt.path + "': block '" + prefix + std::to_string(expect) +
                                         "' is missing (found block " + std::to_string(i) + ")");
    ++expect;
  }
  return static_cast<int>(seen.size());
}

// round((rows - 1) ** 0.5), checking that rows = grid² + 1.
int square_grid(const Checkpoint& ckpt, const std::string& name, int64_t rows) {
  const int grid = static_cast<int>(std::lround(std::sqrt(static_cast<double>(rows - 1))));
  if (grid <= 0 || static_cast<int64_t>(grid) * grid + 1 != rows)
    throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': tensor '" + name + "' has " + std::to_string(rows) +
                                      " rows, expected a square grid of positions plus one class token");
  return grid;
}

int hf_heads(const Checkpoint& ckpt, const char* section, int width) {
  if (!ckpt.hf_config.is_object()) return 0;
  auto it = ckpt.hf_config.find(section);
  if (it == ckpt.hf_config.end() || !it->is_object()) return 0;
  auto h = it->find("num_attention_heads");
  if (h == it->end() || !h->is_number_integer()) return 0;
  const int heads = h->get<int>();
  return heads > 0 && width % heads == 0 ? heads : 0;
}

void require_heads(const Checkpoint& ckpt, const char* what, int width, int heads, const std::string& rule) {
  if (heads <= 0 || width % heads != 0)
    throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': " + what + " width " + std::to_string(width) +
                                      " does not split into " + std::to_string(heads) + " attention heads (" + rule +
                                      ")");
}

std::string head_rule(const StatedConfig* stated, int head_width) {
  if (!stated) return "heads of 64 channels";
  return "head_width " + std::to_string(head_width) + " from " + stated->source;
}

// A size the configuration states must match the tensors (a folder's own config; a built-in
// name gives no sizes).
void check_size(const Checkpoint& ckpt, const StatedConfig* stated, const char* field, int stated_value, int found) {
  if (!stated || stated->from_name || stated_value == 0 || stated_value == found) return;
  throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': " + stated->source + " gives " + field + " " +
                                    std::to_string(stated_value) + " but the weights have " + std::to_string(found));
}

// MLP width int(width · mlp_ratio) as open_clip builds it, against c_fc's rows.
void check_mlp(const Checkpoint& ckpt, const StatedConfig* stated, const std::string& prefix, const char* field,
               int width, double ratio) {
  if (!stated) return;
  const std::string name = prefix + "resblocks.0.mlp.c_fc.weight";
  if (!ckpt.has(name)) return;
  const Shape& fc = ckpt.get(name).shape;
  const int64_t expect = static_cast<int64_t>(static_cast<double>(width) * ratio);
  if (fc.empty() || fc[0] != expect)
    throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': " + stated->source + " gives " + field + " " +
                                      nlohmann::json(ratio).dump() + " (MLP width int(" + std::to_string(width) +
                                      " * ratio) = " + std::to_string(expect) + ") but tensor '" + name +
                                      "' has shape " + shape_str(fc));
}

}  // namespace

void infer_image_architecture(const Checkpoint& ckpt, const StatedConfig* stated, Architecture& a) {
  const bool vit = ckpt.has("visual.proj");
  const int head_width = stated ? stated->vision_head_width : 64;
  if (stated && !stated->kind.empty() && stated->kind != (vit ? "vit" : "resnet") &&
      (vit || ckpt.has("visual.layer1.0.conv1.weight")))
    throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "' holds a " + (vit ? "ViT" : "ResNet") +
                                      " image tower but " + stated->source + " describes a " +
                                      (stated->kind == "vit" ? "ViT" : "ResNet"));
  if (vit) {
    a.kind = "vit";
    const Shape& conv = shape_of(ckpt, "visual.conv1.weight", 4);
    if (conv[1] != 3 || conv[2] != conv[3])
      throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': tensor 'visual.conv1.weight' has shape " +
                                        shape_str(conv) + ", expected [width, 3, patch, patch]");
    a.vision_width = static_cast<int>(conv[0]);
    a.vision_patch_size = static_cast<int>(conv[3]);
    a.vision_layers = count_blocks(ckpt, "visual.transformer.resblocks.");
    const Shape& pos = shape_of(ckpt, "visual.positional_embedding", 2);
    const int grid = square_grid(ckpt, "visual.positional_embedding", pos[0]);
    a.image_resolution = a.vision_patch_size * grid;
    a.vision_heads = a.vision_width / head_width;  // open_clip: width // head_width
    if (!stated) a.vision_heads = std::max(1, a.vision_heads);  // assumed 64-wide heads: at least one
    if (stated) {
      check_size(ckpt, stated, "vision_cfg.patch_size", stated->patch_size, a.vision_patch_size);
      check_size(ckpt, stated, "vision_cfg.image_size", stated->image_size, a.image_resolution);
      check_size(ckpt, stated, "vision_cfg.width", stated->vision_width, a.vision_width);
      check_size(ckpt, stated, "vision_cfg.layers", stated->vision_layers, a.vision_layers);
      check_mlp(ckpt, stated, "visual.transformer.", "vision_cfg.mlp_ratio", a.vision_width, stated->vision_mlp_ratio);
    } else if (int h = hf_heads(ckpt, "vision_config", a.vision_width)) {
      a.vision_heads = h;
    }
    require_heads(ckpt, "vision", a.vision_width, a.vision_heads, head_rule(stated, head_width));
  } else if (ckpt.has("visual.layer1.0.conv1.weight") || ckpt.has("visual.attnpool.positional_embedding")) {
    a.kind = "resnet";
    for (int b = 1; b <= 4; ++b) {
      const int n = count_blocks(ckpt, "visual.layer" + std::to_string(b) + ".");
      if (n == 0)
        throw Error(ErrorCode::NotFound, "checkpoint '" + ckpt.path + "' has no blocks in ResNet stage 'visual.layer" +
                                             std::to_string(b) + "'");
      a.resnet_layers.push_back(n);
      a.vision_layers += n;
    }
    a.vision_width = static_cast<int>(shape_of(ckpt, "visual.layer1.0.conv1.weight", 4)[0]);
    const Shape& pos = shape_of(ckpt, "visual.attnpool.positional_embedding", 2);
    const int output_width = square_grid(ckpt, "visual.attnpool.positional_embedding", pos[0]);
    a.image_resolution = output_width * 32;
    a.vision_heads = a.vision_width * 32 / head_width;  // open_clip: width * 32 // head_width
    if (stated) {
      check_size(ckpt, stated, "vision_cfg.image_size", stated->image_size, a.image_resolution);
      check_size(ckpt, stated, "vision_cfg.width", stated->vision_width, a.vision_width);
      if (!stated->from_name && !stated->resnet_layers.empty() && stated->resnet_layers != a.resnet_layers)
        throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': " + stated->source +
                                          " gives vision_cfg.layers " + nlohmann::json(stated->resnet_layers).dump() +
                                          " but the weights have " + nlohmann::json(a.resnet_layers).dump());
    }
    require_heads(ckpt, "ResNet attention-pool", a.vision_width * 32, a.vision_heads, head_rule(stated, head_width));
  } else {
    throw Error(ErrorCode::Format, "checkpoint '" + ckpt.path +
                                       "' has neither 'visual.proj' (ViT) nor 'visual.layer1.0.conv1.weight' (ResNet): "
                                       "not a CLIP model");
  }
}

Architecture infer_architecture(const Checkpoint& ckpt, const StatedConfig* stated) {
  Architecture a;
  const bool vit = ckpt.has("visual.proj");
  infer_image_architecture(ckpt, stated, a);
  a.embed_dim = static_cast<int>(shape_of(ckpt, "text_projection", 2)[1]);
  a.context_length = static_cast<int>(shape_of(ckpt, "positional_embedding", 2)[0]);
  a.vocab_size = static_cast<int>(shape_of(ckpt, "token_embedding.weight", 2)[0]);
  a.text_width = static_cast<int>(shape_of(ckpt, "ln_final.weight", 1)[0]);
  a.text_heads = std::max(1, a.text_width / 64);  // assumed 64-wide heads: at least one
  if (stated)
    a.text_heads = stated->text_heads;
  else if (int h = hf_heads(ckpt, "text_config", a.text_width))
    a.text_heads = h;
  require_heads(ckpt, "text", a.text_width, a.text_heads,
                stated ? "text_cfg.heads from " + stated->source : std::string("heads of 64 channels"));
  a.text_layers = count_blocks(ckpt, "transformer.resblocks.");
  if (stated) {
    check_size(ckpt, stated, "embed_dim", stated->embed_dim, a.embed_dim);
    check_size(ckpt, stated, "text_cfg.context_length", stated->context_length, a.context_length);
    check_size(ckpt, stated, "text_cfg.vocab_size", stated->vocab_size, a.vocab_size);
    check_size(ckpt, stated, "text_cfg.width", stated->text_width, a.text_width);
    check_size(ckpt, stated, "text_cfg.layers", stated->text_layers, a.text_layers);
    check_mlp(ckpt, stated, "transformer.", "text_cfg.mlp_ratio", a.text_width, stated->text_mlp_ratio);
  }
  if (a.text_layers == 0)
    throw Error(ErrorCode::NotFound, "checkpoint '" + ckpt.path + "' has no text blocks 'transformer.resblocks.*'");
  if (vit && a.vision_layers == 0)
    throw Error(ErrorCode::NotFound, "checkpoint '" + ckpt.path +
                                         "' has no vision blocks 'visual.transformer.resblocks.*'");
  return a;
}

namespace {

// Reads an activation name from a string value ("gelu", "quick_gelu", "QuickGELU", ...); "" if unknown.
std::string normalise_act(std::string v) {
  for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (v == "quick_gelu" || v == "quickgelu") return "quick_gelu";
  if (v == "gelu" || v == "nn.gelu" || v == "torch.nn.gelu") return "gelu";
  return v.empty() ? "" : "?" + v;
}

std::string act_from_json(const nlohmann::json& j) {
  if (!j.is_object()) return "";
  for (const char* key : {"activation", "hidden_act", "act_layer"}) {
    auto it = j.find(key);
    if (it != j.end() && it->is_string()) return normalise_act(it->get<std::string>());
  }
  auto q = j.find("quick_gelu");
  if (q != j.end() && q->is_boolean()) return q->get<bool>() ? "quick_gelu" : "gelu";
  for (const char* sub : {"text_config", "vision_config", "model_cfg", "text_cfg", "vision_cfg"}) {
    auto it = j.find(sub);
    if (it != j.end()) {
      std::string s = act_from_json(*it);
      if (!s.empty()) return s;
    }
  }
  return "";
}

}  // namespace

std::string stated_activation(const Checkpoint& ckpt) {
  std::string found = act_from_json(ckpt.hf_config);
  std::string source = "config.json";
  if (found.empty()) {
    source = "safetensors metadata";
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& [k, v] : ckpt.metadata) {
      nlohmann::json parsed;
      try {
        parsed = parse_json_bounded(v, "checkpoint metadata '" + k + "'");
      } catch (const nlohmann::json::exception&) {
        parsed = nlohmann::json(nlohmann::json::value_t::discarded);  // not JSON: kept as text
      }
      meta[k] = (parsed.is_object() || parsed.is_boolean()) ? parsed : nlohmann::json(v);
    }
    found = act_from_json(meta);
    if (found.empty())
      for (const auto& [k, v] : meta.items())
        if (v.is_object() && (found = act_from_json(v)) != "") break;
  }
  if (!found.empty() && found[0] == '?')
    throw Error(ErrorCode::Format, "checkpoint '" + ckpt.path + "': unsupported activation '" + found.substr(1) +
                                       "' in " + source + " (supported: quick_gelu, gelu)");
  return found;
}

std::string resolve_activation(const Checkpoint& ckpt, const std::string& requested) {
  if (requested == "quick_gelu" || requested == "gelu") return requested;
  if (requested != "auto" && !requested.empty())
    throw Error(ErrorCode::InvalidArgument,
                "unknown activation '" + requested + "' (expected auto, quick_gelu or gelu)");
  const std::string found = stated_activation(ckpt);
  return found.empty() ? "quick_gelu" : found;  // OpenAI's weights
}

}  // namespace clipkit
