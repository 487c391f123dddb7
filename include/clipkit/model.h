// clipkit/model.h — a loaded CLIP model: image tower (ViT or modified ResNet) + text tower.
//
//   auto model = clipkit::Model::load("ViT-B-32.pt");            // .pt, safetensors, HF or open_clip folder
//   clipkit::Embeddings img = model->encode_image_files({"cat.jpg"}, /*normalize=*/true);
//   clipkit::Embeddings txt = model->encode_texts({"a photo of a cat."}, /*normalize=*/true);
//
// A loaded Model is immutable: every encode_* method may be called from several threads at once.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "clipkit/embeddings.h"
#include "clipkit/image.h"

namespace clipkit {

struct ModelOptions {
  int threads = 0;                  // 0 = one per core
  std::string activation = "auto";  // auto | quick_gelu | gelu (states the activation, overriding any config)
  // An open_clip architecture name ("ViT-H-14", "RN50-quickgelu", ...; `clipkit list archs`): its
  // built-in configuration gives the activation, the attention head widths and the default
  // preprocessing (OpenAI's) of a checkpoint that does not carry them; sizes still come from the
  // tensors. Overrides an open_clip_config.json's model_cfg. Empty: none.
  std::string arch;
  // Receives each warning about an assumption made while loading (one line, no prefix). Unset:
  // printed to stderr as "clipkit: warning: ...".
  std::function<void(const std::string&)> on_warning;
  std::string dtype = "f32";        // compute/storage: f32 | f16 (fp16 storage, fp32 math) | int8
  // ResNet convolutions: auto (on AVX-512, blocked nChw16c activations and Winograd for the 3x3
  // layers where oneDNN has Winograd kernels for the CPU: fastest; the Winograd weights take more
  // memory) | direct (the same layout, direct
  // convolutions only: least memory) | nhwc (channels-last, direct: what runs without AVX-512 or
  // with a stem narrower than 16 channels) | blocked (auto's kernels even on narrow models, where
  // the narrow layers fall back to oneDNN's reference kernels: for checking).
  std::string convolution = "auto";
  // A text tower from another file or folder, paired with the image tower of the model loaded: an
  // M-CLIP folder (docs/multilingual.md) or a checkpoint holding an XLM-RoBERTa text tower. Its
  // embedding size must equal the image tower's. Empty: the model's own text tower.
  std::string text_model;
  // The SentencePiece model of an XLM-RoBERTa text tower. Empty: sentencepiece.bpe.model in the
  // text tower's folder (or beside its file).
  std::string tokenizer;
};

struct Architecture {
  std::string kind;                 // "vit" or "resnet"; "none" for a text tower alone (M-CLIP)
  int embed_dim = 0;
  int image_resolution = 0;
  int vision_width = 0;             // ViT width, or ResNet base width (64 for RN50)
  int vision_layers = 0;            // ViT blocks (ResNet: sum of resnet_layers)
  std::vector<int> resnet_layers;   // ResNet blocks per stage
  int vision_heads = 0;
  int vision_patch_size = 0;        // ViT only
  int context_length = 0;
  int vocab_size = 0;
  int text_width = 0;
  int text_layers = 0;
  int text_heads = 0;
  std::string activation;           // "quick_gelu" or "gelu"
  // "xlm-roberta" for a multilingual text tower (context_length is then the most ids a text may
  // have, text_heads width / 64); empty for CLIP's own text Transformer.
  std::string text_kind;
};

struct ModelInfo {
  std::string path;                 // the file or folder read (for an open_clip ARCH/TAG name: its download folder)
  std::string name;                 // the name or path as given to Model::load (e.g. "ViT-H-14/laion2b_s32b_b79k")
  std::string format;               // openai-jit | torch-state-dict | safetensors | hf
  Architecture arch;
  int64_t parameter_count = 0;
  int64_t weight_bytes = 0;         // weights held in memory after load, in the compute dtype's packed form
  std::string weight_dtype;         // dtype(s) stored in the file, e.g. "F16" or "F16+F32"
  std::string compute_dtype;        // f32 | f16 | int8
  std::string fingerprint;          // stable hash of the architecture and weights
  float logit_scale = 0.0f;         // exp(logit_scale) as CLIP.forward uses it
  PreprocessConfig preprocess;
  std::string kernels;              // which GEMM backend/ISA is in use
  // What configured the activation and head widths: "open_clip_config.json", "--arch NAME",
  // "metadata open_clip_config" / "metadata open_clip_arch NAME" (stored by `clipkit convert`),
  // "metadata config" (OpenAI's constructor arguments in the metadata), "config.json" (Hugging
  // Face), "openai-jit" (OpenAI's own archive), "--activation" (activation only) or "assumed"
  // (nothing stated them: OpenAI's QuickGELU and 64-wide heads, with a warning).
  std::string config_source;
  // The open_clip architecture name that configured it (--arch, or the one a converted file
  // stores), empty otherwise; an index records it so that later loads are configured the same.
  std::string arch_name;
  std::vector<std::string> warnings;  // the assumptions warned about while loading
  // A paired text tower (ModelOptions::text_model): its file or folder and its own fingerprint
  // (`fingerprint` then covers both towers). Empty otherwise.
  std::string text_model_path;
  std::string text_fingerprint;
  std::string tokenizer_path;       // the SentencePiece model of an XLM-RoBERTa text tower
};

// Per-layer activations of batch item 0, captured when a trace is passed (for debugging/tests).
// Keys follow the fixture names: "image0.conv1", "image0.block0", "text0.ln_final", ...
using DebugTrace = std::map<std::string, std::vector<float>>;

// Where load warnings go when ModelOptions::on_warning is empty: a process-wide handler (the CLI
// prefixes them with its verb); without one, "clipkit: warning: ..." on stderr.
void set_default_warning_handler(std::function<void(const std::string&)> handler);

class Model {
 public:
  // Detects the format from the file content: OpenAI TorchScript .pt, torch.save zip state dict,
  // safetensors (OpenAI/open_clip or HF names), an open_clip folder (open_clip_config.json beside
  // the weights) or a Hugging Face folder. The activation and head widths come from options.arch,
  // an open_clip_config.json or a Hugging Face config; when nothing states them OpenAI's are
  // assumed, with a warning (ModelOptions::on_warning). Throws Error.
  // options.text_model pairs the image tower with a text tower from another file (M-CLIP).
  // A path that does not exist but is an open_clip name "ARCH/TAG" loads that model from the folder
  // `clipkit models download ARCH/TAG` filled (docs/models.md); nothing is downloaded here.
  static std::shared_ptr<Model> load(const std::string& path, const ModelOptions& options = {});
  // The ModelInfo a load would give, without building the towers (weight_bytes and kernels stay
  // empty): architecture, configuration and preprocessing. Same errors and warnings as load.
  static ModelInfo inspect(const std::string& path, const ModelOptions& options = {});

  virtual ~Model() = default;
  virtual const ModelInfo& info() const = 0;
  const PreprocessConfig& preprocess_config() const { return info().preprocess; }
  float logit_scale() const { return info().logit_scale; }

  // pixels: [batch, 3, n, n] float32, already preprocessed.
  virtual Embeddings encode_images(const float* pixels, int64_t batch, bool normalize = false,
                                   DebugTrace* trace = nullptr) const = 0;
  // ids: one row per text (usually 77 ids from Tokenizer::tokenize).
  virtual Embeddings encode_tokens(const std::vector<std::vector<int32_t>>& ids, bool normalize = false,
                                   DebugTrace* trace = nullptr) const = 0;

  // The token rows encode_texts feeds encode_tokens: CLIP's tokenizer (context_length ids per text),
  // or an XLM-RoBERTa tower's SentencePiece ids (M-CLIP: <s> ... </s> unpadded; open_clip: cleaned
  // and padded to 77).
  virtual std::vector<std::vector<int32_t>> tokenize(const std::vector<std::string>& texts) const;

  // Convenience: tokenize (truncating, normalising) and encode.
  Embeddings encode_texts(const std::vector<std::string>& texts, bool normalize = false) const;
  // Convenience: decode + preprocess + encode. Throws Error naming the first unreadable file.
  Embeddings encode_image_files(const std::vector<std::string>& paths, bool normalize = false) const;
};

}  // namespace clipkit
