// Internal interfaces between clipkit::Model and its towers.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "clipkit/model.h"
#include "io/checkpoint.h"

namespace clipkit {

class ImageEncoder {
 public:
  virtual ~ImageEncoder() = default;
  // pixels [batch, 3, n, n] -> out [batch, embed_dim] (unnormalised). Thread-safe (const).
  // When trace != nullptr, store batch item 0's intermediate activations under fixture names
  // ("image0.conv1", "image0.embeddings", "image0.ln_pre", "image0.block{i}", "image0.ln_post";
  //  ResNet: "image0.stem", "image0.layer{1..4}", "image0.attnpool_tokens").
  virtual void encode(const float* pixels, int64_t batch, float* out, DebugTrace* trace) const = 0;
  virtual int64_t parameter_count() const = 0;
  // Bytes of weights held in memory in their packed compute format (f32 by default).
  virtual int64_t weight_bytes() const { return parameter_count() * static_cast<int64_t>(sizeof(float)); }
  // Which kernels this tower runs beyond the shared GEMM backend (empty when nothing to add).
  virtual std::string kernels() const { return {}; }
};

class TextEncoder {
 public:
  virtual ~TextEncoder() = default;
  // ids [batch, context] -> out [batch, embed_dim] (unnormalised); pooled at the first argmax id.
  // Trace keys: "text0.embeddings", "text0.block{i}", "text0.ln_final", "text0.pooled".
  virtual void encode(const int32_t* ids, int64_t batch, int64_t context, float* out, DebugTrace* trace) const = 0;
  virtual int64_t parameter_count() const = 0;
  virtual int64_t weight_bytes() const { return parameter_count() * static_cast<int64_t>(sizeof(float)); }
};

struct StatedConfig;  // model/openclip_config.h

// Architecture inference from OpenAI-layout tensor shapes (as clip.model.build_model does).
// Fills everything except `activation`. Sizes come from the tensors; head counts from `stated`
// (an open_clip configuration: vision heads = width / head_width, text heads as written) when
// given, else from a Hugging Face config.json, else width / 64. With `stated`, the MLP widths must
// equal int(width · mlp_ratio) and, for a folder's own config, every size it writes must match.
// Throws Error naming a missing/odd tensor or the disagreeing field.
Architecture infer_architecture(const Checkpoint& ckpt, const StatedConfig* stated = nullptr);
// Its image-tower part alone (kind, image resolution, vision sizes and heads) into `arch`.
void infer_image_architecture(const Checkpoint& ckpt, const StatedConfig* stated, Architecture& arch);

// Stable hash of the architecture and a sample of every parameter tensor (16 hex digits).
std::string checkpoint_fingerprint(const Checkpoint& ckpt, const Architecture& arch);

// The MLP activation: `requested` ("quick_gelu" / "gelu") wins; "auto" reads the HF config's
// hidden_act or an activation named in the safetensors metadata, else QuickGELU (OpenAI weights).
std::string resolve_activation(const Checkpoint& ckpt, const std::string& requested);
// The activation a Hugging Face config.json or the safetensors metadata names; "" when neither does.
std::string stated_activation(const Checkpoint& ckpt);

// Factories (src/model/vit.cpp, src/model/resnet.cpp, src/model/text_transformer.cpp).
std::unique_ptr<ImageEncoder> make_vit_encoder(const Checkpoint& ckpt, const Architecture& arch,
                                               const ModelOptions& options);
std::unique_ptr<ImageEncoder> make_resnet_encoder(const Checkpoint& ckpt, const Architecture& arch,
                                                  const ModelOptions& options);
std::unique_ptr<TextEncoder> make_text_encoder(const Checkpoint& ckpt, const Architecture& arch,
                                               const ModelOptions& options);

}  // namespace clipkit
