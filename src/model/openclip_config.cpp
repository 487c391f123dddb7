// open_clip model_cfg / preprocess_cfg → StatedConfig / PreprocessConfig. The field lists follow
// open_clip's CLIPVisionCfg and CLIPTextCfg dataclasses and the CLIP constructor's arguments.
#include "model/openclip_config.h"

#include <cmath>
#include <set>

#include "clipkit/error.h"

namespace clipkit {

using nlohmann::json;

namespace {

struct Ctx {
  const std::string& source;
  std::string section;  // "", "vision_cfg.", "text_cfg.", "preprocess_cfg."

  Error bad(const std::string& field, const std::string& why) const {
    return Error(ErrorCode::Format, source + ": " + section + field + " " + why);
  }
  // A setting clipkit does not run: one line naming the field and the value.
  Error unsupported(const std::string& field, const json& value) const {
    return Error(ErrorCode::Format, source + ": " + section + field + " = " +
                                        value.dump(-1, ' ', false, json::error_handler_t::replace) +
                                        " is not supported by clipkit (only open_clip's plain CLIP towers run)");
  }
};

int get_int(const Ctx& c, const std::string& key, const json& v, int min_value) {
  if (!v.is_number_integer() || v.get<int64_t>() < min_value || v.get<int64_t>() > (1 << 24))
    throw c.bad(key, "must be an integer >= " + std::to_string(min_value) + ", got " + v.dump());
  return v.get<int>();
}

double get_positive(const Ctx& c, const std::string& key, const json& v) {
  if (!v.is_number() || !(v.get<double>() > 0.0) || !std::isfinite(v.get<double>()))
    throw c.bad(key, "must be a positive number, got " + v.dump());
  return v.get<double>();
}

bool is_off(const json& v) {  // null, false, 0, "" or an empty object/list: the field's default
  if (v.is_null()) return true;
  if (v.is_boolean()) return !v.get<bool>();
  if (v.is_number()) return v.get<double>() == 0.0;
  if (v.is_string()) return v.get<std::string>().empty();
  if (v.is_object() || v.is_array()) return v.empty();
  return false;
}

// Fields accepted only at open_clip's default (or null/false/empty, which mean the same).
void require_default(const Ctx& c, const std::string& key, const json& v, const json& default_value) {
  if (is_off(v) || v == default_value) return;
  throw c.unsupported(key, v);
}

void parse_vision(const Ctx& c, const json& v, StatedConfig& s) {
  if (!v.is_object()) throw c.bad("", "must be an object");
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string& k = it.key();
    const json& x = it.value();
    if (k == "layers") {
      if (x.is_array()) {
        if (x.size() != 4) throw c.bad(k, "must be an integer or a list of 4 integers, got " + x.dump());
        for (const json& n : x) s.resnet_layers.push_back(get_int(c, k, n, 1));
      } else {
        s.vision_layers = get_int(c, k, x, 1);
      }
    } else if (k == "width") {
      s.vision_width = get_int(c, k, x, 1);
    } else if (k == "head_width") {
      s.vision_head_width = get_int(c, k, x, 1);
    } else if (k == "mlp_ratio") {
      s.vision_mlp_ratio = get_positive(c, k, x);
    } else if (k == "patch_size") {
      if (!x.is_null()) s.patch_size = get_int(c, k, x, 1);
    } else if (k == "image_size") {
      if (x.is_array()) {
        if (x.size() != 2 || x[0] != x[1]) throw c.unsupported(k, x);  // non-square inputs
        s.image_size = get_int(c, k, x[0], 1);
      } else {
        s.image_size = get_int(c, k, x, 1);
      }
    } else if (k == "patch_dropout") {
      if (!x.is_number()) throw c.bad(k, "must be a number");  // training only
    } else if (k == "ls_init_value" || k == "attentional_pool" || k == "no_ln_pre" || k == "final_ln_after_pool" ||
               k == "output_tokens" || k == "act_kwargs" || k == "norm_kwargs" || k == "qk_norm" ||
               k == "scaled_cosine_attn" || k == "scale_heads" || k == "scale_attn_inner" || k == "scale_attn" ||
               k == "scale_fc" || k == "timm_model_name" || k == "hf_model_name" || k == "block_type" ||
               k == "use_rope" || k == "rope_kwargs" || k == "embed_cls") {
      require_default(c, k, x, json());
    } else if (k == "attn_pooler_queries") {
      require_default(c, k, x, 256);
    } else if (k == "attn_pooler_heads") {
      require_default(c, k, x, 8);
    } else if (k == "pos_embed_type") {
      require_default(c, k, x, "learnable");
    } else if (k == "pool_type") {
      require_default(c, k, x, "tok");
    } else if (k == "proj_type") {
      require_default(c, k, x, "linear");
    } else if (k == "proj_bias") {
      require_default(c, k, x, false);
    } else if (k.rfind("timm_", 0) == 0) {
      // timm_model_pretrained, timm_pool, timm_proj, ...: read only with timm_model_name (refused above)
    } else {
      throw c.unsupported(k, x);
    }
  }
}

void parse_text(const Ctx& c, const json& t, StatedConfig& s) {
  if (!t.is_object()) throw c.bad("", "must be an object");
  for (auto it = t.begin(); it != t.end(); ++it) {
    const std::string& k = it.key();
    const json& x = it.value();
    if (k == "context_length") {
      s.context_length = get_int(c, k, x, 1);
    } else if (k == "vocab_size") {
      s.vocab_size = get_int(c, k, x, 1);
    } else if (k == "width") {
      s.text_width = get_int(c, k, x, 1);
    } else if (k == "heads") {
      s.text_heads = get_int(c, k, x, 1);
    } else if (k == "layers") {
      s.text_layers = get_int(c, k, x, 1);
    } else if (k == "mlp_ratio") {
      s.text_mlp_ratio = get_positive(c, k, x);
    } else if (k == "ls_init_value" || k == "embed_cls" || k == "no_causal_mask" || k == "final_ln_after_pool" ||
               k == "output_tokens" || k == "act_kwargs" || k == "norm_kwargs" || k == "qk_norm" ||
               k == "scaled_cosine_attn" || k == "scale_heads" || k == "scale_attn_inner" || k == "scale_attn" ||
               k == "scale_fc" || k == "hf_model_name" || k == "hf_tokenizer_name" || k == "tokenizer_kwargs" ||
               k == "ln_post_emb" || k == "block_type" || k == "use_rope" || k == "rope_kwargs") {
      require_default(c, k, x, json());
    } else if (k == "tokenizer_mode") {
      require_default(c, k, x, "clip");
    } else if (k == "pool_type") {
      require_default(c, k, x, "argmax");
    } else if (k == "proj_type") {
      require_default(c, k, x, "linear");
    } else if (k == "proj_bias") {
      require_default(c, k, x, false);
    } else if (k == "pad_id") {
      require_default(c, k, x, 0);
    } else if (k == "eos_id" || k == "hf_model_pretrained" || k == "hf_proj_type" || k == "hf_pooler_type" ||
               k == "hf_trust_remote_code") {
      // eos_id is read only by pool_type "eos"; hf_* only with hf_model_name (refused above)
    } else {
      throw c.unsupported(k, x);
    }
  }
}

}  // namespace

StatedConfig parse_openclip_model_cfg(const json& model_cfg, const std::string& source, bool from_name) {
  StatedConfig s;
  s.source = source;
  s.from_name = from_name;
  s.activation = "gelu";  // open_clip's act_layer without quick_gelu: nn.GELU
  Ctx top{source, "model_cfg."};
  if (!model_cfg.is_object()) throw top.bad("", "must be an object");
  bool has_vision = false, has_text = false;
  for (auto it = model_cfg.begin(); it != model_cfg.end(); ++it) {
    const std::string& k = it.key();
    const json& x = it.value();
    if (k == "embed_dim") {
      s.embed_dim = get_int(top, k, x, 1);
    } else if (k == "quick_gelu") {
      if (!x.is_boolean() && !x.is_null()) throw top.bad(k, "must be true or false, got " + x.dump());
      s.activation = x.is_boolean() && x.get<bool>() ? "quick_gelu" : "gelu";
    } else if (k == "vision_cfg") {
      has_vision = true;
      parse_vision(Ctx{source, "model_cfg.vision_cfg."}, x, s);
    } else if (k == "text_cfg") {
      has_text = true;
      parse_text(Ctx{source, "model_cfg.text_cfg."}, x, s);
    } else if (k == "init_logit_scale" || k == "cast_dtype" || k == "output_dict") {
      // training / casting only
    } else if (k == "custom_text" || k == "init_logit_bias" || k == "nonscalar_logit_scale" ||
               k == "multimodal_cfg" || k == "text_pool_type" || k == "freeze_logit_scale") {
      require_default(top, k, x, json());
    } else {
      throw top.unsupported(k, x);
    }
  }
  if (!has_vision) throw top.bad("vision_cfg", "is missing");
  if (!has_text) throw top.bad("text_cfg", "is missing");
  s.kind = s.resnet_layers.empty() ? "vit" : "resnet";
  if (s.text_heads == 0) s.text_heads = 8;  // CLIPTextCfg's default
  return s;
}

void apply_openclip_preprocess_cfg(const json& pre, const std::string& source, PreprocessConfig& config) {
  Ctx c{source, "preprocess_cfg."};
  if (pre.is_null()) return;
  if (!pre.is_object()) throw c.bad("", "must be an object");
  auto read3 = [&](const char* key, std::array<float, 3>& dst) {
    auto it = pre.find(key);
    if (it == pre.end() || it->is_null()) return;
    if (it->is_number()) {  // one value for every channel
      dst.fill(it->get<float>());
    } else if (it->is_array() && it->size() == 3 && (*it)[0].is_number() && (*it)[1].is_number() &&
               (*it)[2].is_number()) {
      for (size_t i = 0; i < 3; ++i) dst[i] = (*it)[i].get<float>();
    } else {
      throw c.bad(key, "must be a number or a list of 3 numbers, got " + it->dump());
    }
    for (float v : dst)
      if (!std::isfinite(v)) throw c.bad(key, "must be finite");
  };
  read3("mean", config.mean);
  read3("std", config.std);
  for (float v : config.std)
    if (!(v != 0.0f)) throw c.bad("std", "must be non-zero");
  if (auto it = pre.find("mode"); it != pre.end() && !it->is_null() && *it != "RGB") throw c.unsupported("mode", *it);
  if (auto it = pre.find("interpolation"); it != pre.end() && !it->is_null()) {
    if (!it->is_string()) throw c.bad("interpolation", "must be a string, got " + it->dump());
    const std::string v = it->get<std::string>();
    // open_clip accepts bicubic, bilinear and random; "random" resizes bicubic at inference.
    if (v == "random")
      config.interpolation = Interpolation::Bicubic;
    else if (v == "bicubic" || v == "bilinear")
      config.interpolation = parse_interpolation(v);
    else
      throw c.unsupported("interpolation", *it);
  }
  if (auto it = pre.find("resize_mode"); it != pre.end() && !it->is_null()) {
    if (!it->is_string()) throw c.bad("resize_mode", "must be a string, got " + it->dump());
    const std::string v = it->get<std::string>();
    if (v != "shortest" && v != "squash" && v != "longest") throw c.unsupported("resize_mode", *it);
    config.resize_mode = parse_resize_mode(v);
  }
  if (auto it = pre.find("fill_color"); it != pre.end() && !it->is_null()) {
    if (!it->is_number_integer()) throw c.bad("fill_color", "must be an integer, got " + it->dump());
    config.fill_color = it->get<int>();
  }
}

}  // namespace clipkit
