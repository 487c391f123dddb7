#include "model/model_info_json.h"

#include <charconv>
#include <string>

#include "clipkit/image.h"

namespace clipkit {

namespace {

// A float as the JSON number with its shortest round-trip decimal form (0.48145466, not 0.4814546704...).
double float_for_json(float v) {
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::stod(std::string(buf, res.ptr));
}

}  // namespace

nlohmann::ordered_json model_info_json(const ModelInfo& info) {
  const Architecture& a = info.arch;
  nlohmann::ordered_json arch;
  arch["kind"] = a.kind;
  arch["embed_dim"] = a.embed_dim;
  arch["image_resolution"] = a.image_resolution;
  arch["vision_width"] = a.vision_width;
  arch["vision_layers"] = a.vision_layers;
  arch["vision_heads"] = a.vision_heads;
  // ResNet: the attention pool's heads over the 32 · width features.
  const int vision_features = a.kind == "vit" ? a.vision_width : a.vision_width * 32;
  arch["vision_head_width"] = a.vision_heads > 0 ? vision_features / a.vision_heads : 0;
  if (a.kind == "vit")
    arch["vision_patch_size"] = a.vision_patch_size;
  else
    arch["resnet_layers"] = a.resnet_layers;
  arch["context_length"] = a.context_length;
  arch["vocab_size"] = a.vocab_size;
  arch["text_width"] = a.text_width;
  arch["text_layers"] = a.text_layers;
  arch["text_heads"] = a.text_heads;
  arch["text_head_width"] = a.text_heads > 0 ? a.text_width / a.text_heads : 0;
  arch["activation"] = a.activation;
  if (!a.text_kind.empty()) arch["text_kind"] = a.text_kind;
  nlohmann::ordered_json pre;
  pre["resolution"] = info.preprocess.resolution;
  pre["mean"] = nlohmann::ordered_json::array();
  pre["std"] = nlohmann::ordered_json::array();
  for (float m : info.preprocess.mean) pre["mean"].push_back(float_for_json(m));
  for (float s : info.preprocess.std) pre["std"].push_back(float_for_json(s));
  pre["interpolation"] = interpolation_name(info.preprocess.interpolation);
  pre["resize_mode"] = resize_mode_name(info.preprocess.resize_mode);
  pre["fill_color"] = info.preprocess.fill_color;
  nlohmann::ordered_json j;
  j["path"] = info.path;
  j["format"] = info.format;
  j["config_source"] = info.config_source;
  j["architecture"] = std::move(arch);
  j["parameter_count"] = info.parameter_count;
  j["weight_bytes"] = info.weight_bytes;
  j["weight_dtype"] = info.weight_dtype;
  j["compute_dtype"] = info.compute_dtype;
  j["logit_scale"] = float_for_json(info.logit_scale);
  j["fingerprint"] = info.fingerprint;
  j["kernels"] = info.kernels;
  j["preprocess"] = std::move(pre);
  // A paired text tower and an XLM-RoBERTa tower's tokenizer (only when there is one).
  if (!info.text_model_path.empty()) {
    j["text_model"] = info.text_model_path;
    j["text_fingerprint"] = info.text_fingerprint;
  }
  if (!info.tokenizer_path.empty()) j["tokenizer"] = info.tokenizer_path;
  return j;
}

}  // namespace clipkit
