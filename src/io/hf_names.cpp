#include "io/hf_names.h"

#include <cstring>

#include "clipkit/error.h"

namespace clipkit {

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

// Strips `prefix` from `s` into `rest`.
bool eat(const std::string& s, const std::string& prefix, std::string& rest) {
  if (!starts_with(s, prefix)) return false;
  rest = s.substr(prefix.size());
  return true;
}

Tensor transpose2d(const Tensor& t, const std::string& path, const std::string& name) {
  if (t.shape.size() != 2)
    throw Error(ErrorCode::Shape, "Hugging Face checkpoint '" + path + "': tensor '" + name + "' has shape " +
                                      shape_str(t.shape) + ", expected a matrix");
  const int64_t r = t.shape[0], c = t.shape[1];
  const size_t es = dtype_size(t.dtype);
  std::vector<uint8_t> out(t.nbytes());
  const uint8_t* src = static_cast<const uint8_t*>(t.data);
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j)
      std::memcpy(out.data() + static_cast<size_t>(j * r + i) * es, src + static_cast<size_t>(i * c + j) * es, es);
  return Tensor::from_bytes(t.dtype, {c, r}, std::move(out));
}

struct Qkv {
  const Tensor* part[3] = {nullptr, nullptr, nullptr};
  std::string hf_name[3];
};

}  // namespace

bool has_hf_clip_names(const std::map<std::string, Tensor>& tensors) {
  for (const auto& [n, t] : tensors)
    if (starts_with(n, "text_model.") || starts_with(n, "vision_model.") || n == "visual_projection.weight" ||
        n == "text_projection.weight")
      return true;
  return false;
}

std::map<std::string, Tensor> map_hf_clip_names(const std::map<std::string, Tensor>& hf, const std::string& path) {
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::Format, "Hugging Face checkpoint '" + path + "': " + why);
  };
  std::map<std::string, Tensor> out;
  std::map<std::string, Qkv> qkv;  // OpenAI in_proj name -> parts
  auto put = [&](const std::string& name, const Tensor& t, const std::string& from) {
    if (!out.emplace(name, t).second) throw bad("tensor '" + from + "' maps to '" + name + "', which is already set");
  };
  for (const auto& [name, t] : hf) {
    std::string rest, sub;
    bool vision = false;
    if (eat(name, "vision_model.", rest)) vision = true;
    else if (!eat(name, "text_model.", rest)) {
      if (name == "visual_projection.weight") put("visual.proj", transpose2d(t, path, name), name);
      else if (name == "text_projection.weight") put("text_projection", transpose2d(t, path, name), name);
      else if (name == "logit_scale") put("logit_scale", t, name);
      else throw bad("unexpected tensor '" + name + "' (not part of a CLIPModel)");
      continue;
    }
    const std::string tower = vision ? "visual." : "";
    if (rest == "embeddings.position_ids") continue;  // index buffer saved by older transformers
    if (rest == "embeddings.position_embedding.weight") put(tower + "positional_embedding", t, name);
    else if (!vision && rest == "embeddings.token_embedding.weight") put("token_embedding.weight", t, name);
    else if (vision && rest == "embeddings.class_embedding") put("visual.class_embedding", t, name);
    else if (vision && rest == "embeddings.patch_embedding.weight") put("visual.conv1.weight", t, name);
    else if (vision && eat(rest, "pre_layrnorm.", sub)) put("visual.ln_pre." + sub, t, name);
    else if (vision && eat(rest, "post_layernorm.", sub)) put("visual.ln_post." + sub, t, name);
    else if (!vision && eat(rest, "final_layer_norm.", sub)) put("ln_final." + sub, t, name);
    else if (eat(rest, "encoder.layers.", sub)) {
      const size_t dot = sub.find('.');
      const std::string idx = sub.substr(0, dot);
      if (dot == std::string::npos || idx.empty() || idx.find_first_not_of("0123456789") != std::string::npos)
        throw bad("unexpected tensor '" + name + "'");
      const std::string block = tower + "transformer.resblocks." + idx + ".";
      const std::string leaf = sub.substr(dot + 1);
      std::string p;
      if (eat(leaf, "self_attn.q_proj.", p) || eat(leaf, "self_attn.k_proj.", p) || eat(leaf, "self_attn.v_proj.", p)) {
        if (p != "weight" && p != "bias") throw bad("unexpected tensor '" + name + "'");
        const int which = leaf[10] == 'q' ? 0 : leaf[10] == 'k' ? 1 : 2;
        Qkv& q = qkv[block + "attn.in_proj_" + p];
        q.part[which] = &t;
        q.hf_name[which] = name;
      } else if (eat(leaf, "self_attn.out_proj.", p)) put(block + "attn.out_proj." + p, t, name);
      else if (eat(leaf, "layer_norm1.", p)) put(block + "ln_1." + p, t, name);
      else if (eat(leaf, "layer_norm2.", p)) put(block + "ln_2." + p, t, name);
      else if (eat(leaf, "mlp.fc1.", p)) put(block + "mlp.c_fc." + p, t, name);
      else if (eat(leaf, "mlp.fc2.", p)) put(block + "mlp.c_proj." + p, t, name);
      else throw bad("unexpected tensor '" + name + "'");
    } else {
      throw bad("unexpected tensor '" + name + "'");
    }
  }
  static const char* kParts[3] = {"q_proj", "k_proj", "v_proj"};
  for (auto& [oname, q] : qkv) {
    int have = -1;
    for (int i = 0; i < 3; ++i)
      if (q.part[i]) have = i;
    for (int i = 0; i < 3; ++i)
      if (!q.part[i]) {
        std::string hn = q.hf_name[have];
        hn.replace(hn.find(kParts[have]), 6, kParts[i]);
        throw bad("tensor '" + hn + "' is missing (needed with '" + q.hf_name[have] + "' for '" + oname + "')");
      }
    const Tensor& a = *q.part[0];
    for (int i = 1; i < 3; ++i) {
      const Tensor& b = *q.part[i];
      if (b.shape != a.shape || b.dtype != a.dtype)
        throw bad("tensor '" + q.hf_name[i] + "' is " + dtype_name(b.dtype) + " " + shape_str(b.shape) + " but '" +
                  q.hf_name[0] + "' is " + dtype_name(a.dtype) + " " + shape_str(a.shape));
    }
    if (a.shape.empty() || a.shape.size() > 2)
      throw bad("tensor '" + q.hf_name[0] + "' has shape " + shape_str(a.shape) + ", expected a vector or matrix");
    std::vector<uint8_t> buf;
    buf.reserve(3 * a.nbytes());
    for (int i = 0; i < 3; ++i) {
      const uint8_t* p = static_cast<const uint8_t*>(q.part[i]->data);
      buf.insert(buf.end(), p, p + q.part[i]->nbytes());
    }
    Shape s = a.shape;
    s[0] *= 3;
    out.emplace(oname, Tensor::from_bytes(a.dtype, s, std::move(buf)));
  }
  return out;
}

}  // namespace clipkit
