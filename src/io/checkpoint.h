// Checkpoint loading: every supported file layout is read into one map of tensors named as in
// OpenAI's clip/model.py state_dict ("visual.conv1.weight", "transformer.resblocks.0.attn.in_proj_weight",
// "logit_scale", ...). Hugging Face names are mapped (q/k/v concatenated into in_proj, projections
// transposed), so the encoders only ever see OpenAI names.
#pragma once
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace clipkit {

struct Checkpoint {
  std::string path;
  std::string format;  // "openai-jit" | "torch-state-dict" | "safetensors" | "hf"
  std::map<std::string, Tensor> tensors;        // OpenAI names
  std::map<std::string, std::string> metadata;  // safetensors __metadata__, if any
  nlohmann::json hf_config;                     // config.json for HF checkpoints (null otherwise)
  nlohmann::json hf_preprocessor;               // preprocessor_config.json beside it, if any (null otherwise)
  nlohmann::json openclip_config;               // open_clip_config.json beside the weights, if any (null otherwise)
  std::string openclip_config_path;             // its path (empty when there is none)
  // Layers whose weights were stored in a kernel layout other than this CPU's, and were therefore
  // packed again while a model was built from this checkpoint (src/model/transformer.h).
  mutable int64_t packed_repacked = 0;

  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  // Throws Error(NotFound) naming the tensor and the file.
  const Tensor& get(const std::string& name) const;
  // Float32 copy of a tensor after checking its shape; throws Error(Shape) with expected vs found.
  std::vector<float> f32(const std::string& name, const Shape& expected) const;
  // Float32 copy without a shape check.
  std::vector<float> f32(const std::string& name) const;
  // Float32 data of a tensor after the same checks, without a copy when it is stored as F32
  // (`data` then points into the checkpoint, valid while it lives); otherwise converted into `owned`.
  struct F32Span {
    const float* data = nullptr;
    std::vector<float> owned;
  };
  F32Span f32_span(const std::string& name, const Shape& expected) const;
  // The same data kept alive by `owner` beyond the checkpoint's life: a view into the file mapping
  // when the tensor is stored as aligned F32 (its pages are read in only where it is used, e.g. the
  // rows of a token-embedding table that texts actually use), otherwise an owned converted copy.
  struct SharedF32 {
    const float* data = nullptr;
    int64_t size = 0;
    std::shared_ptr<const void> owner;
  };
  SharedF32 f32_shared(const std::string& name, const Shape& expected) const;
  // A lookup table read a row at a time (a token-embedding table), kept alive by `owner`: a view
  // into the file mapping when the tensor is stored as aligned F32 or F16 (F16 rows are widened as
  // they are read, to the values a converted copy would hold), otherwise an owned F32 copy. An F16
  // table is thus neither converted nor faulted in whole at load.
  struct SharedTable {
    const float* f32 = nullptr;     // set unless the table is F16
    const uint16_t* f16 = nullptr;  // set for an F16 table
    int64_t size = 0;               // values
    std::shared_ptr<const void> owner;
    // Row `r` of a table of rows of `width` values: in place, or widened into `scratch` (width floats).
    const float* row(int64_t r, int64_t width, float* scratch) const;
    // Bytes the table takes (2 or 4 per value).
    int64_t bytes() const { return size * (f16 ? 2 : 4); }
  };
  SharedTable table_shared(const std::string& name, const Shape& expected) const;
  // Drops the tensor's pages from this process's memory when it is a view into the file mapping
  // (e.g. right after a layer has packed its own copy): keeps the peak resident memory of a load
  // near the size of the packed weights. The data stays readable (it is read back from the file).
  void release_pages(const std::string& name) const;
  // "F16", "F32", "F16+F32", "F32+I8": the floating dtypes present (I8: weights stored int8).
  std::string weight_dtypes() const;
};

// Detects the layout from the content (never from the name) and loads it:
//  - a zip archive: OpenAI TorchScript `.pt` ("openai-jit") or a torch.save state dict
//    ("torch-state-dict"; an open_clip {"state_dict": ...} wrapper and a "module." prefix are removed);
//  - a safetensors file ("safetensors", "module." prefix removed);
//  - a sharded-weights index JSON (`*.index.json` with a "weight_map"), shards beside it;
//  - a directory: an open_clip folder (open_clip_config.json beside open_clip_model.safetensors,
//    open_clip_pytorch_model.safetensors, open_clip_pytorch_model.bin or open_clip_pytorch_model.pth,
//    taken in that order before any other weights file) or a Hugging Face folder
//    (model.safetensors[.index.json] or pytorch_model.bin[.index.json], config.json and
//    preprocessor_config.json beside them).
// An open_clip_config.json beside the weights (in the folder, or beside a file) is read into
// `openclip_config` whatever the layout.
// A path that does not exist but names an open_clip model (`ARCH/TAG`, src/io/openclip_pretrained.h)
// is read from that model's download folder; a model not downloaded is a NotFound error naming the
// command that fetches it.
// Whatever the container, Hugging Face CLIPModel names are mapped to OpenAI names (format "hf"),
// and hf_config / hf_preprocessor are read from the JSON files beside the weights when present.
// TorchScript's top-level int buffers (input_resolution, context_length, vocab_size) go to `metadata`.
// Tensors are views into the memory-mapped file where the layout allows (safetensors, stored zip
// entries), with their stored dtype. Throws Error naming the file and what was expected vs found.
Checkpoint load_checkpoint(const std::string& path);

}  // namespace clipkit
