// Full CLIP models with random weights, in OpenAI's state_dict layout (names, shapes and order
// exactly as clip/model.py's CLIP(...).state_dict()), for tests and benchmarks of real sizes.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace clipkit {

// The arguments of clip.model.CLIP(...).
struct ClipConfig {
  std::string kind = "vit";        // "vit" or "resnet"
  int embed_dim = 0;
  int image_resolution = 0;
  int vision_width = 0;
  int vision_layers = 0;           // ViT
  std::vector<int> resnet_layers;  // ResNet: blocks per stage (4)
  int vision_patch_size = 0;       // ViT
  int vision_mlp_width = 0;        // ViT MLP hidden width; 0: 4 * vision_width (open_clip's mlp_ratio 4)
  int context_length = 77;
  int vocab_size = 49408;
  int text_width = 0;
  int text_layers = 0;
};

// The released configurations: ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px, RN50, RN101,
// RN50x4, RN50x16, RN50x64; every open_clip name of `clipkit list archs` (ViT-H-14, ViT-bigG-14,
// ...: the sizes of open_clip's config, its MLP ratio included). Also "custom:key=value,..." with the ClipConfig field names (kind,
// embed_dim, image_resolution, vision_width, vision_layers — "3-4-6-3" for ResNet —,
// vision_patch_size, context_length, vocab_size, text_width, text_layers).
// Throws Error(InvalidArgument) naming the bad name, key or value.
ClipConfig clip_config(const std::string& name);
std::vector<std::string> clip_config_names();

// How one tensor is initialised: N(mean, std) or, when `uniform`, U(-bound, bound) with bound = std.
struct TensorSpec {
  std::string name;
  Shape shape;
  DType dtype = DType::F32;  // F32 (parameters, BatchNorm statistics) or I64 (num_batches_tracked)
  float mean = 0.0f;
  float std = 0.0f;
  bool uniform = false;
};

// Every tensor of the state dict, in state_dict order, with PyTorch's default init followed by
// CLIP.initialize_parameters (ResNet convolutions get Kaiming-normal weights and the last BatchNorm of
// each bottleneck a gain of 0.1 instead of 0, so that every branch contributes and activations stay
// bounded without trained BatchNorm statistics).
std::vector<TensorSpec> clip_state_dict_layout(const ClipConfig& config);

// Parameters as model.parameters() counts them (BatchNorm statistics excluded).
int64_t clip_parameter_count(const std::vector<TensorSpec>& layout);

// Generates the weights (deterministic in `seed`, independent of the thread count) and streams
// them into a safetensors file, one tensor at a time, in state_dict order. dtype: F32 or F16 for
// the floating tensors. Writes atomically (temporary file + rename).
void write_random_clip(const std::string& path, const ClipConfig& config, uint64_t seed, DType dtype,
                       const std::map<std::string, std::string>& metadata = {});

// The same for any layout (streamed in its order).
void write_random_layout(const std::string& path, const std::vector<TensorSpec>& layout, uint64_t seed, DType dtype,
                         const std::map<std::string, std::string>& metadata = {});

// M-CLIP text towers of real sizes ("mclip-xlmr-base": 12 layers, width 768, 512 outputs;
// "mclip-xlmr-large": 24 layers, width 1024, 768 outputs as M-CLIP/XLM-Roberta-Large-Vit-L-14;
// vocabulary 250002, 514 positions), in M-CLIP's key names, with Hugging Face's initialisation.
const std::vector<std::string>& mclip_random_names();
std::vector<TensorSpec> mclip_state_dict_layout(const std::string& name, int64_t* embed_dim = nullptr,
                                                int64_t* width = nullptr);

// [batch, 3, n, n] synthetic images that differ in structure, not only in noise: per-image channel
// offsets, a gradient of per-image direction, and a little noise (pure-noise images pool to nearly
// the same features in a ResNet, which would flatter a comparison). Deterministic for a seed.
std::vector<float> structured_pixels(int64_t batch, int64_t n, uint32_t seed);

}  // namespace clipkit
