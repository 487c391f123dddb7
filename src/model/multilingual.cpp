// Multilingual CLIP models: M-CLIP text towers, open_clip's XLM-R CLIP checkpoints, and pairs.
#include "model/multilingual.h"

#include <openssl/evp.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "clipkit/error.h"
#include "clipkit/sentencepiece_tokenizer.h"
#include "core/json_limits.h"
#include "kernels/gemm.h"
#include "model/encoder.h"
#include "model/openclip_config.h"
#include "model/transformer.h"
#include "model/xlmr.h"

namespace clipkit {

namespace fs = std::filesystem;

namespace {

const char* const kTokenizerFile = "sentencepiece.bpe.model";

bool is_mclip(const Checkpoint& ckpt) {
  return has_xlmr_tower(ckpt, "transformer.") && ckpt.has("LinearTransformation.weight");
}

bool is_openclip_xlmr(const Checkpoint& ckpt) {
  return has_xlmr_tower(ckpt, "text.transformer.") && ckpt.has("text.proj.0.weight");
}

fs::path folder_of(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) ? fs::path(path) : fs::path(path).parent_path();
}

std::string sha16(const std::string& text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), digest, &len, EVP_sha256(), nullptr);
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < 8 && i < len; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", digest[i]);
    hex += buf;
  }
  return hex;
}

// The base models M-CLIP's configs name whose encoder is XLM-RoBERTa.
bool known_xlmr_base(const std::string& name) {
  return name == "xlm-roberta-large" || name == "xlm-roberta-base" || name == "FacebookAI/xlm-roberta-large" ||
         name == "FacebookAI/xlm-roberta-base";
}

// Reads and checks an M-CLIP config.json beside the weights (none: nothing to check).
void check_mclip_config(const Checkpoint& ckpt, const XlmrSpec& spec, const ModelOptions& options,
                        std::vector<std::string>& warnings) {
  const fs::path cfg = folder_of(ckpt.path) / "config.json";
  std::error_code ec;
  if (!fs::is_regular_file(cfg, ec)) return;
  std::ifstream in(cfg, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = parse_json_bounded(ss.str(), cfg.string());
  } catch (const std::exception& e) {
    throw Error(ErrorCode::Format, "'" + cfg.string() + "' is not valid JSON");
  }
  if (!j.is_object()) throw Error(ErrorCode::Format, "'" + cfg.string() + "' is not a JSON object");
  auto size = [&](const char* key, int64_t found, const char* what) {
    auto it = j.find(key);
    if (it == j.end()) return;
    if (!it->is_number_integer() || it->get<int64_t>() != found)
      throw Error(ErrorCode::Shape, "'" + cfg.string() + "' gives " + key + " " + it->dump() + " but the weights' " +
                                        what + " is " + std::to_string(found));
  };
  size("numDims", spec.embed_dim, "output size (LinearTransformation rows)");
  size("transformerDimensions", spec.width, "encoder width");
  auto base = j.find("modelBase");
  if (base != j.end() && base->is_string()) {
    const std::string name = base->get<std::string>();
    std::string lower;
    for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower.find("roberta") == std::string::npos && (lower.find("labse") != std::string::npos ||
                                                        lower.find("bert") != std::string::npos))
      throw Error(ErrorCode::Format, "'" + cfg.string() + "': modelBase '" + name +
                                         "' is a BERT encoder (WordPiece tokenizer, positions from 0); only "
                                         "XLM-RoBERTa text towers are supported");
    if (!known_xlmr_base(name)) {
      const std::string w = "'" + cfg.string() + "' names modelBase '" + name +
                            "', not a known XLM-RoBERTa model; its sizes are taken from the weights (" +
                            std::to_string(spec.layers) + " layers, width " + std::to_string(spec.width) + ")";
      warnings.push_back(w);
      report_warning(options, w);
    }
  }
}

// What a multilingual checkpoint's text tower is, before anything is built.
struct TextSide {
  XlmrSpec spec;
  bool openclip = false;     // open_clip's tokenization (cleaned, cut and padded to context)
  int context = 0;           // ids per text the tokenizer gives at most
  std::string tokenizer;     // path of the SentencePiece model
  std::string fingerprint;
  int64_t parameters = 0;
  std::vector<std::string> warnings;
};

std::string find_tokenizer(const Checkpoint& ckpt, const ModelOptions& options) {
  if (!options.tokenizer.empty()) return options.tokenizer;
  const fs::path p = folder_of(ckpt.path) / kTokenizerFile;
  std::error_code ec;
  if (!fs::is_regular_file(p, ec))
    throw Error(ErrorCode::NotFound, "no tokenizer for the text tower of '" + ckpt.path + "': '" + p.string() +
                                         "' does not exist (give the SentencePiece model with --tokenizer FILE)");
  return p.string();
}

TextSide text_side(const Checkpoint& ckpt, const ModelOptions& options) {
  TextSide t;
  if (is_mclip(ckpt)) {
    t.spec = xlmr_spec(ckpt, "transformer.", "LinearTransformation.", /*mlp_head=*/false, /*mask_pad_ids=*/false);
    check_mclip_config(ckpt, t.spec, options, t.warnings);
    t.context = static_cast<int>(t.spec.max_tokens());
  } else if (is_openclip_xlmr(ckpt)) {
    t.spec = xlmr_spec(ckpt, "text.transformer.", "text.proj.", /*mlp_head=*/true, /*mask_pad_ids=*/true);
    t.openclip = true;
    t.context = 77;  // open_clip's HFTokenizer default (no xlm-roberta config sets another)
    const nlohmann::json& oc = ckpt.openclip_config;
    if (oc.is_object() && oc.contains("model_cfg") && oc["model_cfg"].is_object()) {
      const auto& tc = oc["model_cfg"].value("text_cfg", nlohmann::json::object());
      if (tc.is_object() && tc.contains("context_length") && tc["context_length"].is_number_integer())
        t.context = tc["context_length"].get<int>();
    }
    if (t.context < 2 || t.context > t.spec.max_tokens())
      throw Error(ErrorCode::Format, "'" + ckpt.openclip_config_path + "': text_cfg.context_length " +
                                         std::to_string(t.context) + " is outside [2, " +
                                         std::to_string(t.spec.max_tokens()) + "]");
  } else {
    throw Error(ErrorCode::Format, "'" + ckpt.path +
                                       "' holds no XLM-RoBERTa text tower (expected an M-CLIP folder with "
                                       "transformer.* and LinearTransformation.*, or an open_clip XLM-R checkpoint "
                                       "with text.transformer.* and text.proj.*)");
  }
  t.tokenizer = find_tokenizer(ckpt, options);
  Architecture a;
  a.kind = "xlm-roberta";
  a.embed_dim = static_cast<int>(t.spec.embed_dim);
  a.text_width = static_cast<int>(t.spec.width);
  a.text_layers = static_cast<int>(t.spec.layers);
  a.text_heads = static_cast<int>(t.spec.heads);
  a.vocab_size = static_cast<int>(t.spec.vocab);
  a.context_length = static_cast<int>(t.spec.positions);
  a.activation = "gelu";
  // Only the text tower's tensors (an open_clip checkpoint's image tower has its own fingerprint).
  Checkpoint text_only;
  text_only.path = ckpt.path;
  const std::string& prefix = t.spec.prefix;
  for (const auto& [name, tensor] : ckpt.tensors)
    if (name.rfind(prefix, 0) == 0 || name.rfind(t.spec.head_prefix, 0) == 0) {
      if (name.find("pooler.") != std::string::npos || !tensor.is_float()) continue;  // unused pooler, buffers
      text_only.tensors.emplace(name, tensor);
      t.parameters += tensor.numel();
    }
  t.fingerprint = checkpoint_fingerprint(text_only, a);
  return t;
}

void fill_text_arch(Architecture& a, const TextSide& t) {
  a.text_kind = "xlm-roberta";
  a.text_width = static_cast<int>(t.spec.width);
  a.text_layers = static_cast<int>(t.spec.layers);
  a.text_heads = static_cast<int>(t.spec.heads);
  a.vocab_size = static_cast<int>(t.spec.vocab);
  a.context_length = t.context;
}

// The image-tower half of an open_clip XLM-R checkpoint: open_clip's ViT with nn.GELU (its
// xlm-roberta configurations set no quick_gelu), heads from the configuration's head_width.
Architecture openclip_image_arch(const Checkpoint& ckpt, const ModelOptions& options, std::string& source) {
  Architecture a;
  int head_width = 64;
  bool quick = false;
  source = "assumed";
  const nlohmann::json& oc = ckpt.openclip_config;
  if (oc.is_object() && oc.contains("model_cfg") && oc["model_cfg"].is_object()) {
    const auto& mc = oc["model_cfg"];
    source = "open_clip_config.json";
    if (mc.contains("quick_gelu") && mc["quick_gelu"].is_boolean()) quick = mc["quick_gelu"].get<bool>();
    if (mc.contains("vision_cfg") && mc["vision_cfg"].is_object() && mc["vision_cfg"].contains("head_width") &&
        mc["vision_cfg"]["head_width"].is_number_integer())
      head_width = mc["vision_cfg"]["head_width"].get<int>();
  }
  if (source == "assumed") {
    // open_clip's ViT configurations: 64-wide heads except ViT-H (80), ViT-g (88) and ViT-bigG (104).
    const Tensor& conv = ckpt.get("visual.conv1.weight");
    const int64_t width = conv.shape.empty() ? 0 : conv.shape[0];
    head_width = width == 1280 ? 80 : width == 1408 ? 88 : width == 1664 ? 104 : 64;
  }
  StatedConfig stated;
  stated.source = source;
  stated.from_name = true;  // sizes still come from the tensors
  stated.vision_head_width = head_width;
  infer_image_architecture(ckpt, &stated, a);
  if (a.kind != "vit" || a.vision_layers == 0)
    throw Error(ErrorCode::Format, "'" + ckpt.path + "': the image tower of an open_clip XLM-R model must be a ViT");
  a.embed_dim = static_cast<int>(ckpt.get("visual.proj").shape.at(1));
  const bool explicit_act = options.activation == "quick_gelu" || options.activation == "gelu";
  a.activation = explicit_act ? options.activation : (quick ? "quick_gelu" : "gelu");
  return a;
}

ModelInfo base_info(const Checkpoint& ckpt, const ModelOptions& options) {
  ModelInfo info;
  info.path = ckpt.path;
  info.format = ckpt.format;
  info.compute_dtype = options.dtype.empty() ? "f32" : options.dtype;
  info.weight_dtype = ckpt.weight_dtypes();
  return info;
}

struct Configured {
  ModelInfo info;
  TextSide text;
  bool has_image = false;
};

Configured configure_xlmr(const Checkpoint& ckpt, const ModelOptions& options) {
  Configured c;
  c.info = base_info(ckpt, options);
  c.text = text_side(ckpt, options);
  c.info.tokenizer_path = c.text.tokenizer;
  c.info.warnings = c.text.warnings;
  if (is_openclip_xlmr(ckpt)) {
    c.has_image = true;
    c.info.arch = openclip_image_arch(ckpt, options, c.info.config_source);
    if (c.info.arch.embed_dim != c.text.spec.embed_dim)
      throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': image embeddings have " +
                                        std::to_string(c.info.arch.embed_dim) + " dimensions, text embeddings " +
                                        std::to_string(c.text.spec.embed_dim));
    const Tensor& ls = ckpt.get("logit_scale");
    if (ls.numel() != 1 || !ls.is_float())
      throw Error(ErrorCode::Shape, "checkpoint '" + ckpt.path + "': tensor 'logit_scale' has shape " +
                                        shape_str(ls.shape) + ", expected one value");
    c.info.logit_scale = std::exp(ls.to_f32()[0]);
    c.info.preprocess.resolution = c.info.arch.image_resolution;
    if (ckpt.openclip_config.is_object() && ckpt.openclip_config.contains("preprocess_cfg"))
      apply_openclip_preprocess_cfg(ckpt.openclip_config["preprocess_cfg"], ckpt.openclip_config_path,
                                    c.info.preprocess);
  } else {
    c.info.arch.kind = "none";
    c.info.arch.embed_dim = static_cast<int>(c.text.spec.embed_dim);
    c.info.arch.activation = "gelu";
    c.info.config_source = "config.json";
    c.info.logit_scale = 100.0f;  // CLIP's trained scale; a pair takes its image model's
    c.info.preprocess.resolution = 0;
  }
  fill_text_arch(c.info.arch, c.text);
  for (const auto& [name, t] : ckpt.tensors)
    if (t.is_float() && name.find("pooler.") == std::string::npos) c.info.parameter_count += t.numel();
  c.info.fingerprint = c.has_image ? checkpoint_fingerprint(ckpt, c.info.arch) : c.text.fingerprint;
  return c;
}

class XlmrModel final : public Model {
 public:
  XlmrModel(ModelInfo info, std::shared_ptr<Model> paired_image, std::unique_ptr<ImageEncoder> image,
            std::unique_ptr<XlmrTextTower> text, std::shared_ptr<const SentencePieceTokenizer> tok, bool openclip,
            int context, ModelOptions options)
      : info_(std::move(info)),
        paired_image_(std::move(paired_image)),
        image_(std::move(image)),
        text_(std::move(text)),
        tok_(std::move(tok)),
        openclip_(openclip),
        context_(context),
        options_(std::move(options)) {}

  const ModelInfo& info() const override { return info_; }

  Embeddings encode_images(const float* pixels, int64_t batch, bool normalize, DebugTrace* trace) const override {
    if (paired_image_) return paired_image_->encode_images(pixels, batch, normalize, trace);
    if (!image_)
      throw Error(ErrorCode::InvalidArgument,
                  "model '" + info_.path +
                      "' is a text tower only (M-CLIP): pair it with its image model (--model IMAGE_MODEL "
                      "--text-model " + info_.path + ") to embed images");
    if (batch < 0) throw Error(ErrorCode::InvalidArgument, "negative image batch size");
    if (batch > 0 && !pixels) throw Error(ErrorCode::InvalidArgument, "encode_images: no pixel data");
    apply_threads();
    Embeddings e(batch, info_.arch.embed_dim);
    image_->encode(pixels, batch, e.data.data(), trace);
    if (normalize) e.normalize();
    return e;
  }

  std::vector<std::vector<int32_t>> tokenize(const std::vector<std::string>& texts) const override {
    std::vector<std::vector<int32_t>> rows;
    rows.reserve(texts.size());
    for (const auto& t : texts) rows.push_back(openclip_ ? tok_->encode_openclip(t, context_) : tok_->encode(t));
    return rows;
  }

  Embeddings encode_tokens(const std::vector<std::vector<int32_t>>& ids, bool normalize,
                           DebugTrace* trace) const override {
    Embeddings e(static_cast<int64_t>(ids.size()), info_.arch.embed_dim);
    if (ids.empty()) return e;
    const size_t max = static_cast<size_t>(text_->spec().max_tokens());
    std::vector<std::vector<int32_t>> cut;
    const std::vector<std::vector<int32_t>>* rows = &ids;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i].size() <= max) continue;
      if (cut.empty()) cut = ids;
      const size_t n = cut[i].size();
      cut[i].resize(max);
      cut[i].back() = SentencePieceTokenizer::kEos;
      rows = &cut;
      if (!warned_.exchange(true))
        report_warning(options_, "a text of " + std::to_string(n) + " tokens is longer than the text tower's " +
                                     "position table allows (" + std::to_string(max) +
                                     " tokens); such texts are cut to their first " + std::to_string(max - 1) +
                                     " tokens and </s>");
    }
    apply_threads();
    text_->encode(*rows, e.data.data(), trace);
    if (normalize) e.normalize();
    return e;
  }

 private:
  void apply_threads() const {
    if (options_.threads > 0) set_num_threads(options_.threads);
  }

  ModelInfo info_;
  std::shared_ptr<Model> paired_image_;
  std::unique_ptr<ImageEncoder> image_;
  std::unique_ptr<XlmrTextTower> text_;
  std::shared_ptr<const SentencePieceTokenizer> tok_;
  bool openclip_;
  int context_;
  ModelOptions options_;
  mutable std::atomic<bool> warned_{false};
};

std::shared_ptr<const SentencePieceTokenizer> load_tokenizer_for(const TextSide& t) {
  auto tok = SentencePieceTokenizer::load(t.tokenizer);
  if (tok->vocab_size() > t.spec.vocab)
    throw Error(ErrorCode::Mismatch, "tokenizer '" + t.tokenizer + "' has " + std::to_string(tok->vocab_size()) +
                                         " ids but the text tower's vocabulary only " + std::to_string(t.spec.vocab) +
                                         " rows: not this model's tokenizer");
  return tok;
}

void check_pair(const ModelInfo& image, const TextSide& text, const std::string& text_path) {
  if (image.arch.kind == "none")
    throw Error(ErrorCode::InvalidArgument,
                "model '" + image.path + "' has no image tower to pair with the text tower of '" + text_path + "'");
  if (image.arch.embed_dim != text.spec.embed_dim)
    throw Error(ErrorCode::Mismatch, "the image model '" + image.path + "' embeds in " +
                                         std::to_string(image.arch.embed_dim) + " dimensions but the text tower '" +
                                         text_path + "' in " + std::to_string(text.spec.embed_dim) +
                                         ": they are not a pair");
}

ModelInfo pair_info(const ModelInfo& image, const TextSide& text, const std::string& text_path) {
  ModelInfo info = image;
  fill_text_arch(info.arch, text);
  info.text_model_path = text_path;
  info.text_fingerprint = text.fingerprint;
  info.tokenizer_path = text.tokenizer;
  info.fingerprint = sha16(image.fingerprint + "+" + text.fingerprint);
  info.parameter_count = image.parameter_count + text.parameters;  // the image model's own text tower is not used
  for (const auto& w : text.warnings) info.warnings.push_back(w);
  return info;
}

}  // namespace

bool is_xlmr_checkpoint(const Checkpoint& ckpt) { return is_mclip(ckpt) || is_openclip_xlmr(ckpt); }

ModelInfo inspect_xlmr_model(const Checkpoint& ckpt, const std::string& name, const ModelOptions& options) {
  ModelInfo info = configure_xlmr(ckpt, options).info;
  info.name = name;
  return info;
}

std::shared_ptr<Model> load_xlmr_model(const Checkpoint& ckpt, const std::string& name, const ModelOptions& options) {
  Configured c = configure_xlmr(ckpt, options);
  c.info.name = name;
  auto tok = load_tokenizer_for(c.text);
  const WeightFormat fmt = weight_format_from(options);
  c.info.kernels = kernel_description();
  std::unique_ptr<ImageEncoder> image;
  if (c.has_image) image = make_vit_encoder(ckpt, c.info.arch, options);
  auto text = std::make_unique<XlmrTextTower>(ckpt, c.text.spec, fmt);
  c.info.weight_bytes = text->weight_bytes() + (image ? image->weight_bytes() : 0);
  if (const std::string w = repacked_warning(ckpt, ckpt.path); !w.empty()) {
    c.info.warnings.push_back(w);
    report_warning(options, w);
  }
  return std::make_shared<XlmrModel>(std::move(c.info), nullptr, std::move(image), std::move(text), std::move(tok),
                                     c.text.openclip, c.text.context, options);
}

ModelInfo inspect_pair(const ModelInfo& image, const ModelOptions& options) {
  const Checkpoint ckpt = load_checkpoint(options.text_model);
  const TextSide text = text_side(ckpt, options);
  check_pair(image, text, options.text_model);
  return pair_info(image, text, options.text_model);
}

std::shared_ptr<Model> pair_text_model(std::shared_ptr<Model> image, const ModelOptions& options) {
  const Checkpoint ckpt = load_checkpoint(options.text_model);
  const TextSide text = text_side(ckpt, options);
  check_pair(image->info(), text, options.text_model);
  auto tok = load_tokenizer_for(text);
  ModelInfo info = pair_info(image->info(), text, options.text_model);
  auto tower = std::make_unique<XlmrTextTower>(ckpt, text.spec, weight_format_from(options));
  info.weight_bytes += tower->weight_bytes();
  if (const std::string w = repacked_warning(ckpt, options.text_model); !w.empty()) {
    info.warnings.push_back(w);
    report_warning(options, w);
  }
  return std::make_shared<XlmrModel>(std::move(info), std::move(image), nullptr, std::move(tower), std::move(tok),
                                     text.openclip, text.context, options);
}

}  // namespace clipkit
