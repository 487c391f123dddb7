// clipkit::Model: checkpoint → architecture → encoders.
#include "clipkit/model.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>

#include "clipkit/error.h"
#include "clipkit/tokenizer.h"
#include "core/json_limits.h"
#include "io/packed_weights.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"
#include "model/encoder.h"
#include "model/multilingual.h"
#include "model/ingest.h"
#include "model/openclip_archs.h"
#include "model/openclip_config.h"
#include "model/transformer.h"

namespace clipkit {

namespace {

std::function<void(const std::string&)>& default_warning_handler() {
  static std::function<void(const std::string&)> handler;
  return handler;
}

// A load warning: kept in the model's info and passed to the caller's handler (or the default
// one, or stderr).
void warn(ModelInfo& info, const ModelOptions& options, const std::string& w) {
  info.warnings.push_back(w);
  if (options.on_warning)
    options.on_warning(w);
  else if (default_warning_handler())
    default_warning_handler()(w);
  else
    std::fprintf(stderr, "clipkit: warning: %s\n", w.c_str());
}

bool is_buffer(const std::string& name, const Tensor& t) {
  // Parameters as model.parameters() counts them: floating tensors other than BatchNorm statistics.
  if (!t.is_float()) return true;
  auto ends_with = [&](const char* s) {
    const std::string suf(s);
    return name.size() >= suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
  };
  return ends_with("running_mean") || ends_with("running_var") || ends_with("attn_mask");
}

std::string arch_string(const Architecture& a) {
  std::string s = a.kind;
  for (int v : {a.embed_dim, a.image_resolution, a.vision_width, a.vision_layers, a.vision_heads, a.vision_patch_size,
                a.context_length, a.vocab_size, a.text_width, a.text_layers, a.text_heads}) {
    s += ';';
    s += std::to_string(v);
  }
  for (int l : a.resnet_layers) {
    s += ',';
    s += std::to_string(l);
  }
  s += ';';
  s += a.activation;
  return s;
}

// SHA-256 over the architecture and, per parameter tensor (sorted by name): its name, shape and up
// to 256 evenly spaced values converted to float32. Values, not bytes, so the same weights stored as
// F16 or F32, in OpenAI or Hugging Face layout, give the same fingerprint.
}  // namespace

std::string checkpoint_fingerprint(const Checkpoint& ckpt, const Architecture& arch) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx) throw Error(ErrorCode::Internal, "cannot allocate a SHA-256 context");
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  const std::string a = arch_string(arch);
  EVP_DigestUpdate(ctx, a.data(), a.size());
  for (const auto& [name, t] : ckpt.tensors) {
    if (is_buffer(name, t)) continue;
    const std::string head = name + shape_str(t.shape);
    EVP_DigestUpdate(ctx, head.data(), head.size());
    const int64_t n = t.numel();
    const int64_t samples = std::min<int64_t>(n, 256);
    for (int64_t i = 0; i < samples; ++i) {
      const int64_t idx = samples == n ? i : i * (n - 1) / (samples - 1);
      const float v = t.value_f32(idx);  // an int8-stored weight hashes as its dequantised value
      EVP_DigestUpdate(ctx, &v, sizeof v);
    }
    ckpt.release_pages(name);  // sampling faulted in pages around every sample: give them back
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, digest, &len);
  EVP_MD_CTX_free(ctx);
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < 8 && i < len; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", digest[i]);
    hex += buf;
  }
  return hex;
}

namespace {

// Mean/std from a Hugging Face preprocessor_config.json beside the weights, if there is one.
void read_hf_preprocess(const Checkpoint& ckpt, PreprocessConfig& cfg) {
  const nlohmann::json& j = ckpt.hf_preprocessor;
  if (!j.is_object()) return;
  auto read3 = [&](const char* key, std::array<float, 3>& dst) {
    auto it = j.find(key);
    if (it == j.end()) return;
    if (!it->is_array() || it->size() != 3 || !(*it)[0].is_number() || !(*it)[1].is_number() || !(*it)[2].is_number())
      throw Error(ErrorCode::Format, "checkpoint '" + ckpt.path + "': preprocessor config field '" + key +
                                         "' must be a list of 3 numbers");
    for (size_t i = 0; i < 3; ++i) {
      const double v = (*it)[i].get<double>();
      if (!(std::fabs(v) <= 1e30))  // also NaN; a double beyond float's range has no float value
        throw Error(ErrorCode::Format, "checkpoint '" + ckpt.path + "': preprocessor config field '" + key +
                                           "' holds " + std::to_string(v) + ", out of range");
      dst[i] = static_cast<float>(v);
    }
  };
  read3("image_mean", cfg.mean);
  read3("image_std", cfg.std);
  for (float s : cfg.std)
    if (!(s > 0.0f))
      throw Error(ErrorCode::Format, "checkpoint '" + ckpt.path + "': preprocessor config image_std must be positive");
}

bool hf_states_heads(const Checkpoint& ckpt) {
  if (!ckpt.hf_config.is_object()) return false;
  for (const char* section : {"vision_config", "text_config"}) {
    auto it = ckpt.hf_config.find(section);
    if (it == ckpt.hf_config.end() || !it->is_object()) return false;
    auto h = it->find("num_attention_heads");
    if (h == it->end() || !h->is_number_integer()) return false;
  }
  return true;
}

// OpenAI's CLIP constructor arguments as an export keeps them in the safetensors metadata
// ("config": {"vision_width": …, "transformer_heads": …, …}): the file states OpenAI's architecture,
// QuickGELU with the stated text heads and 64-wide vision heads (or the stated "vision_heads").
// Null when the metadata holds no such object.
std::optional<nlohmann::json> openai_config_in_metadata(const Checkpoint& ckpt) {
  auto it = ckpt.metadata.find("config");
  if (it == ckpt.metadata.end()) return std::nullopt;
  nlohmann::json cfg;
  try {
    cfg = parse_json_bounded(it->second, "checkpoint metadata 'config'");
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (!cfg.is_object() || !cfg.contains("vision_width") || !cfg.contains("transformer_width") ||
      !cfg.contains("transformer_heads") || !cfg["transformer_heads"].is_number_integer())
    return std::nullopt;
  return cfg;
}

// Heads stated by that configuration replace the width / 64 default; they must split the width.
void apply_openai_heads(const nlohmann::json& cfg, const std::string& path, Architecture& arch) {
  auto take = [&](const char* key, int width, int& heads) {
    auto h = cfg.find(key);
    if (h == cfg.end() || !h->is_number_integer()) return;
    const int n = h->get<int>();
    if (n <= 0 || width % n != 0)
      throw Error(ErrorCode::Format, "checkpoint '" + path + "': metadata config " + key + " " + std::to_string(n) +
                                         " does not split width " + std::to_string(width));
    heads = n;
  };
  take("transformer_heads", arch.text_width, arch.text_heads);
  if (arch.kind == "vit") take("vision_heads", arch.vision_width, arch.vision_heads);
}

// The configuration that states activation and head widths, first found of: --arch NAME; the
// open_clip_config.json beside the weights; what `clipkit convert` stored in the safetensors
// metadata (kOpenClipConfigKey: that json's content; kOpenClipArchKey: a built-in name). Also hands
// back the preprocess_cfg that goes with it, where it was read, and the label ModelInfo shows.
struct Stated {
  std::optional<StatedConfig> config;
  nlohmann::json preprocess_cfg;
  std::string preprocess_source;
  std::string label;  // ModelInfo::config_source when `config` is set
  std::string name;   // the built-in name that gave `config`, if one did
};

Stated stated_config(const Checkpoint& ckpt, const ModelOptions& options) {
  Stated out;
  auto from_name = [&](const std::string& name, const std::string& source) {
    const nlohmann::json* cfg = openclip_arch_config(name);
    if (!cfg)
      throw Error(ErrorCode::InvalidArgument, source.rfind("--arch", 0) == 0
                                                  ? "unknown architecture '" + name +
                                                        "' (`clipkit list archs` prints the known names)"
                                                  : "checkpoint '" + ckpt.path + "': " + source +
                                                        " names an unknown architecture (`clipkit list archs`)");
    out.config = parse_openclip_model_cfg(*cfg, source, /*from_name=*/true);
    out.label = source;
    out.name = name;
  };
  // open_clip's hub layout {"model_cfg": ..., "preprocess_cfg": ...}; its model_cfg is used unless
  // a name was given.
  auto from_file = [&](const nlohmann::json& oc, const std::string& src, const std::string& label) {
    if (auto it = oc.find("preprocess_cfg"); it != oc.end()) {
      out.preprocess_cfg = *it;
      out.preprocess_source = src;
    }
    if (out.config) return;
    auto mc = oc.find("model_cfg");
    if (mc == oc.end() || !mc->is_object())
      throw Error(ErrorCode::Format, src + ": no \"model_cfg\" object (expected open_clip's hub layout "
                                           "{\"model_cfg\": ..., \"preprocess_cfg\": ...})");
    out.config = parse_openclip_model_cfg(*mc, src, /*from_name=*/false);
    out.label = label;
  };
  if (!options.arch.empty()) from_name(options.arch, "--arch " + options.arch);
  if (ckpt.openclip_config.is_object()) {
    from_file(ckpt.openclip_config, ckpt.openclip_config_path, "open_clip_config.json");
    return out;
  }
  if (auto it = ckpt.metadata.find(kOpenClipConfigKey); it != ckpt.metadata.end()) {
    const std::string src = "checkpoint '" + ckpt.path + "' metadata " + kOpenClipConfigKey;
    nlohmann::json oc;
    try {
      oc = parse_json_bounded(it->second, src);
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorCode::Format, src + " is not valid JSON: " + e.what());
    }
    if (!oc.is_object()) throw Error(ErrorCode::Format, src + " is not a JSON object");
    from_file(oc, src, std::string("metadata ") + kOpenClipConfigKey);
    return out;
  }
  if (auto it = ckpt.metadata.find(kOpenClipArchKey); it != ckpt.metadata.end() && !out.config)
    from_name(it->second, std::string("metadata ") + kOpenClipArchKey + " " + it->second);
  return out;
}

class ClipModel final : public Model {
 public:
  ClipModel(ModelInfo info, std::unique_ptr<ImageEncoder> image, std::unique_ptr<TextEncoder> text, int threads)
      : info_(std::move(info)), image_(std::move(image)), text_(std::move(text)), threads_(threads) {}

  const ModelInfo& info() const override { return info_; }

  Embeddings encode_images(const float* pixels, int64_t batch, bool normalize, DebugTrace* trace) const override {
    if (batch < 0) throw Error(ErrorCode::InvalidArgument, "negative image batch size");
    if (batch > 0 && !pixels) throw Error(ErrorCode::InvalidArgument, "encode_images: no pixel data");
    apply_threads();
    Embeddings e(batch, info_.arch.embed_dim);
    image_->encode(pixels, batch, e.data.data(), trace);
    if (trace && batch > 0) trace_store(trace, "image0.embed", e.row(0), e.dim);
    if (normalize) e.normalize();
    return e;
  }

  Embeddings encode_tokens(const std::vector<std::vector<int32_t>>& ids, bool normalize,
                           DebugTrace* trace) const override {
    const int64_t batch = static_cast<int64_t>(ids.size());
    Embeddings e(batch, info_.arch.embed_dim);
    if (batch == 0) return e;
    size_t len = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i].empty()) throw Error(ErrorCode::InvalidArgument, "token row " + std::to_string(i) + " is empty");
      if (ids[i].size() > static_cast<size_t>(info_.arch.context_length))
        throw Error(ErrorCode::Limit, "token row " + std::to_string(i) + " has " + std::to_string(ids[i].size()) +
                                          " ids; the model's context length is " +
                                          std::to_string(info_.arch.context_length));
      len = std::max(len, ids[i].size());
    }
    std::vector<int32_t> flat(ids.size() * len, 0);  // shorter rows are zero-padded like clip.tokenize
    for (size_t i = 0; i < ids.size(); ++i) std::copy(ids[i].begin(), ids[i].end(), flat.begin() + i * len);
    apply_threads();
    text_->encode(flat.data(), batch, static_cast<int64_t>(len), e.data.data(), trace);
    if (trace) trace_store(trace, "text0.embed", e.row(0), e.dim);
    if (normalize) e.normalize();
    return e;
  }

 private:
  void apply_threads() const {
    if (threads_ > 0) set_num_threads(threads_);
  }

  ModelInfo info_;
  std::unique_ptr<ImageEncoder> image_;
  std::unique_ptr<TextEncoder> text_;
  int threads_;
};

// Everything ModelInfo says that does not need the towers built: format, configuration,
// architecture, activation, parameters, logit scale, fingerprint, preprocessing; warns (once)
// about what had to be assumed.
ModelInfo configure(const Checkpoint& ckpt, const std::string& path, const ModelOptions& options) {
  ModelInfo info;
  info.path = ckpt.path;  // the given path, or the download folder an open_clip name (ARCH/TAG) resolved to
  info.name = path;
  info.format = ckpt.format;
  const Stated st = stated_config(ckpt, options);
  const std::optional<StatedConfig>& stated = st.config;
  info.arch = infer_architecture(ckpt, stated ? &*stated : nullptr);
  // The activation: --activation states it; else the configuration; else a Hugging Face config or
  // the metadata; else OpenAI's QuickGELU (known for OpenAI's own archives, assumed otherwise).
  const bool explicit_act = options.activation == "quick_gelu" || options.activation == "gelu";
  std::string act = resolve_activation(ckpt, options.activation);  // validates the option
  bool act_known = explicit_act || ckpt.format == "openai-jit";
  if (!explicit_act && stated) {
    act = stated->activation;
    act_known = true;
  } else if (!explicit_act && !stated_activation(ckpt).empty()) {
    act_known = true;
  }
  const std::optional<nlohmann::json> openai_cfg = stated ? std::nullopt : openai_config_in_metadata(ckpt);
  if (openai_cfg) {
    act_known = true;  // OpenAI's architecture: QuickGELU unless --activation or the metadata say otherwise
    apply_openai_heads(*openai_cfg, ckpt.path, info.arch);
  }
  info.arch.activation = act;
  const bool heads_known = stated || openai_cfg || hf_states_heads(ckpt) || ckpt.format == "openai-jit";
  info.arch_name = st.name;
  if (stated)
    info.config_source = st.label;
  else if (ckpt.format == "openai-jit")
    info.config_source = "openai-jit";
  else if (openai_cfg)
    info.config_source = "metadata config";
  else if (heads_known)
    info.config_source = "config.json";
  else if (explicit_act)
    info.config_source = "--activation";
  else
    info.config_source = "assumed";
  if (!act_known || !heads_known) {
    std::string what, assumed;
    if (!act_known && !heads_known) {
      what = "its MLP activation or attention head widths";
      assumed = "OpenAI's QuickGELU and 64-wide heads";
    } else if (!act_known) {
      what = "its MLP activation";
      assumed = "OpenAI's QuickGELU";
    } else {
      what = "its attention head widths";
      assumed = "64-wide heads (" + std::to_string(info.arch.vision_heads) + " vision, " +
                std::to_string(info.arch.text_heads) + " text)";
    }
    const std::string w = "'" + path + "' does not state " + what + "; assuming " + assumed +
                          ". State them with --arch NAME (`clipkit list archs`) or an open_clip_config.json "
                          "beside the weights";
    warn(info, options, w);
  }
  info.compute_dtype = options.dtype.empty() ? "f32" : options.dtype;
  info.weight_dtype = ckpt.weight_dtypes();
  for (const auto& [name, t] : ckpt.tensors)
    if (!is_buffer(name, t)) info.parameter_count += t.numel();
  const Tensor& ls = ckpt.get("logit_scale");
  if (ls.numel() != 1 || !ls.is_float())
    throw Error(ErrorCode::Shape, "checkpoint '" + path + "': tensor 'logit_scale' has shape " + shape_str(ls.shape) +
                                      ", expected one floating-point value");
  info.logit_scale = std::exp(ls.to_f32()[0]);
  if (!std::isfinite(info.logit_scale))
    throw Error(ErrorCode::Format, "checkpoint '" + path + "': logit_scale is not finite");
  info.fingerprint = checkpoint_fingerprint(ckpt, info.arch);
  info.preprocess.resolution = info.arch.image_resolution;
  read_hf_preprocess(ckpt, info.preprocess);
  apply_openclip_preprocess_cfg(st.preprocess_cfg, st.preprocess_source, info.preprocess);
  return info;
}

}  // namespace

std::shared_ptr<Model> Model::load(const std::string& path, const ModelOptions& options) {
  if (options.threads < 0)
    throw Error(ErrorCode::InvalidArgument, "thread count must be >= 0, got " + std::to_string(options.threads));
  const WeightFormat fmt = weight_format_from(options);  // validates options.dtype
  (void)fmt;
  if (options.convolution != "auto" && options.convolution != "direct" && options.convolution != "nhwc" &&
      options.convolution != "blocked" && !options.convolution.empty())
    throw Error(ErrorCode::InvalidArgument,
                "unknown convolution mode '" + options.convolution + "' (expected auto, direct, nhwc or blocked)");
  if (options.threads > 0) set_num_threads(options.threads);
  if (!options.text_model.empty()) {  // an image tower paired with a text tower from another file
    ModelOptions image_options = options;
    image_options.text_model.clear();
    image_options.tokenizer.clear();
    return pair_text_model(load(path, image_options), options);
  }
  Checkpoint ckpt = load_checkpoint(path);
  if (is_xlmr_checkpoint(ckpt)) return load_xlmr_model(ckpt, path, options);
  ModelInfo info = configure(ckpt, path, options);
  info.kernels = kernel_description();
  std::unique_ptr<ImageEncoder> image = info.arch.kind == "vit" ? make_vit_encoder(ckpt, info.arch, options)
                                                                : make_resnet_encoder(ckpt, info.arch, options);
  if (const std::string k = image->kernels(); !k.empty()) info.kernels += "; " + k;
  std::unique_ptr<TextEncoder> text = make_text_encoder(ckpt, info.arch, options);
  info.weight_bytes = image->weight_bytes() + text->weight_bytes();
  if (const std::string w = repacked_warning(ckpt, path); !w.empty()) warn(info, options, w);
  return std::make_shared<ClipModel>(std::move(info), std::move(image), std::move(text), options.threads);
}

ModelInfo Model::inspect(const std::string& path, const ModelOptions& options) {
  if (options.threads > 0) set_num_threads(options.threads);
  if (!options.text_model.empty()) {
    ModelOptions image_options = options;
    image_options.text_model.clear();
    image_options.tokenizer.clear();
    return inspect_pair(inspect(path, image_options), options);
  }
  const Checkpoint ckpt = load_checkpoint(path);
  if (is_xlmr_checkpoint(ckpt)) return inspect_xlmr_model(ckpt, path, options);
  return configure(ckpt, path, options);
}

std::vector<std::vector<int32_t>> Model::tokenize(const std::vector<std::string>& texts) const {
  return Tokenizer::instance().tokenize(texts, info().arch.context_length, /*truncate=*/true);
}

Embeddings Model::encode_texts(const std::vector<std::string>& texts, bool normalize) const {
  if (texts.empty()) return Embeddings(0, info().arch.embed_dim);
  return encode_tokens(tokenize(texts), normalize, nullptr);
}

Embeddings Model::encode_image_files(const std::vector<std::string>& paths, bool normalize) const {
  Embeddings out(static_cast<int64_t>(paths.size()), info().arch.embed_dim);
  IngestOptions opt;
  run_image_ingest(
      paths.size(), preprocess_config(), [&](size_t i) { return decode_image_file(paths[i]); },
      [&](IngestBatch& b) {
        if (!b.failures.empty()) std::rethrow_exception(b.failures.front().second);  // the first, in input order
        const Embeddings e = encode_images(b.pixels.data(), b.rows(), normalize, nullptr);
        std::copy(e.data.begin(), e.data.end(), out.row(static_cast<int64_t>(b.begin)));
      },
      opt);
  return out;
}

std::string repacked_warning(const Checkpoint& ckpt, const std::string& path) {
  if (ckpt.packed_repacked == 0) return "";
  // A file converted on another kind of CPU: it works, but starts as slowly as a plain one.
  const auto isa = ckpt.metadata.find(kPackedIsaKey);
  return "'" + path + "' stores " + std::to_string(ckpt.packed_repacked) +
         " weight matrices in the kernel layouts of other CPU features (" +
         (isa == ckpt.metadata.end() ? std::string("unknown") : isa->second) + ") than this CPU's (" +
         packed_layout_isa() + "); they were repacked at load. Convert the original checkpoint "
         "on this machine for a fast start";
}

void report_warning(const ModelOptions& options, const std::string& w) {
  if (options.on_warning)
    options.on_warning(w);
  else if (default_warning_handler())
    default_warning_handler()(w);
  else
    std::fprintf(stderr, "clipkit: warning: %s\n", w.c_str());
}

void set_default_warning_handler(std::function<void(const std::string&)> handler) {
  default_warning_handler() = std::move(handler);
}

}  // namespace clipkit
