#include "io/checkpoint.h"

#include <cctype>
#include <cstring>
#include <filesystem>
#include <set>

#include "clipkit/error.h"
#include "core/json_limits.h"
#include "core/mapped_file.h"
#include "io/hf_names.h"
#include "io/openclip_pretrained.h"
#include "io/packed_weights.h"
#include "io/quantized_int8.h"
#include "io/safetensors.h"
#include "io/torch_archive.h"
#include "io/zip.h"

namespace clipkit {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

enum class Sniff { Zip, Safetensors, Json, LegacyTorch, Unknown };

Sniff sniff(const uint8_t* d, size_t n) {
  if (looks_like_zip(d, n)) return Sniff::Zip;
  if (n >= 9) {
    uint64_t hl = 0;
    std::memcpy(&hl, d, 8);
    if (hl >= 2 && hl < (100ull << 20) && d[8] == '{') return Sniff::Safetensors;
  }
  // torch.save before 1.6: a pickle protocol 2 stream starting with the magic number 0x1950a86a20f9469cfc6c.
  static const uint8_t legacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  if (n >= sizeof legacy && std::memcmp(d, legacy, sizeof legacy) == 0) return Sniff::LegacyTorch;
  size_t i = 0;
  while (i < n && i < 4096 && std::isspace(d[i])) ++i;
  if (i < n && d[i] == '{') return Sniff::Json;
  return Sniff::Unknown;
}

std::string strip_module(const std::string& n) { return n.rfind("module.", 0) == 0 ? n.substr(7) : n; }

json read_json_file(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return parse_json_bounded(text, "'" + path + "'");
  } catch (const json::exception& e) {
    throw Error(ErrorCode::Format, "invalid JSON in '" + path + "': " + e.what());
  }
}

struct Raw {
  std::string format;  // of the container
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

Raw load_sharded(const std::string& index_path, const json& index);

// One weight file (or a shard index), names as stored except for a leading "module.".
Raw load_file(const std::string& path, bool allow_index) {
  Sniff kind;
  {
    auto f = MappedFile::open(path);
    kind = sniff(f->data(), f->size());
    if (f->size() == 0) throw Error(ErrorCode::Format, "checkpoint '" + path + "' is empty");
  }
  Raw raw;
  switch (kind) {
    case Sniff::Zip: {
      TorchArchive a = read_torch_archive(path);
      raw.format = a.torchscript ? "openai-jit" : "torch-state-dict";
      raw.tensors = std::move(a.tensors);  // "module." already stripped
      raw.metadata = std::move(a.metadata);
      return raw;
    }
    case Sniff::Safetensors: {
      SafetensorsFile s = read_safetensors(path);
      raw.format = "safetensors";
      for (auto& [n, t] : s.tensors)
        if (!raw.tensors.emplace(strip_module(n), t).second)
          throw Error(ErrorCode::Format, "checkpoint '" + path + "' holds tensor '" + strip_module(n) + "' twice");
      raw.metadata = std::move(s.metadata);
      return raw;
    }
    case Sniff::Json: {
      json j = read_json_file(path);
      if (allow_index && j.is_object() && j.contains("weight_map")) return load_sharded(path, j);
      throw Error(ErrorCode::Format, "unsupported checkpoint '" + path +
                                         "': a JSON file that is not a sharded-weights index (no \"weight_map\")");
    }
    case Sniff::LegacyTorch:
      throw Error(ErrorCode::Format, "unsupported checkpoint '" + path +
                                         "': legacy PyTorch serialization (torch < 1.6); re-save it with a newer "
                                         "torch.save or convert it to safetensors");
    case Sniff::Unknown: break;
  }
  throw Error(ErrorCode::Format, "unrecognised checkpoint format '" + path +
                                     "': not a PyTorch zip archive, safetensors file or Hugging Face folder");
}

Raw load_sharded(const std::string& index_path, const json& index) {
  auto bad = [&](const std::string& why) { return Error(ErrorCode::Format, "invalid shard index '" + index_path + "': " + why); };
  const json& wm = index["weight_map"];
  if (!wm.is_object() || wm.empty()) throw bad("\"weight_map\" is not a non-empty object");
  std::map<std::string, std::vector<std::string>> by_shard;
  for (auto it = wm.begin(); it != wm.end(); ++it) {
    if (!it.value().is_string()) throw bad("shard of tensor '" + it.key() + "' is not a string");
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
        shard == "." || shard == "..")
      throw bad("shard '" + shard + "' of tensor '" + it.key() + "' is not a plain file name");
    by_shard[shard].push_back(it.key());
  }
  const fs::path dir = fs::path(index_path).parent_path();
  Raw raw;
  for (const auto& [shard, names] : by_shard) {
    const std::string sp = (dir / shard).string();
    std::error_code ec;  // non-throwing: a hostile index may name an impossible path
    if (!fs::exists(sp, ec))
      throw Error(ErrorCode::NotFound, "shard '" + sp + "' listed in '" + index_path + "' does not exist");
    Raw part = load_file(sp, /*allow_index=*/false);
    if (raw.format.empty()) raw.format = part.format;
    for (const auto& n : names) {
      auto t = part.tensors.find(strip_module(n));
      if (t == part.tensors.end())
        throw Error(ErrorCode::Format, "shard '" + sp + "' lacks tensor '" + n + "', which '" + index_path + "' places there");
      if (!raw.tensors.emplace(t->first, t->second).second) throw bad("tensor '" + n + "' is listed twice");
    }
    for (auto& [k, v] : part.metadata) raw.metadata.emplace(k, v);
  }
  return raw;
}

// Copies any tensor whose data is not aligned to its element size (safetensors and zip entries
// do not guarantee alignment) so that consumers may read it through typed pointers.
void align_tensors(std::map<std::string, Tensor>& tensors) {
  for (auto& [n, t] : tensors) {
    const size_t es = dtype_size(t.dtype);
    if (t.numel() > 0 && reinterpret_cast<uintptr_t>(t.data) % es != 0) {
      const uint8_t* p = static_cast<const uint8_t*>(t.data);
      t = Tensor::from_bytes(t.dtype, t.shape, std::vector<uint8_t>(p, p + t.nbytes()));
    }
  }
}

void attach_hf_configs(Checkpoint& ck, const fs::path& dir) {
  const fs::path cfg = dir / "config.json";
  std::error_code ec;
  if (fs::is_regular_file(cfg, ec)) {
    ck.hf_config = read_json_file(cfg.string());
    if (!ck.hf_config.is_object()) throw Error(ErrorCode::Format, "'" + cfg.string() + "' is not a JSON object");
  }
  const fs::path pre = dir / "preprocessor_config.json";
  if (fs::is_regular_file(pre, ec)) {
    ck.hf_preprocessor = read_json_file(pre.string());
    if (!ck.hf_preprocessor.is_object()) throw Error(ErrorCode::Format, "'" + pre.string() + "' is not a JSON object");
  }
}

void attach_openclip_config(Checkpoint& ck, const fs::path& dir) {
  const fs::path cfg = dir / "open_clip_config.json";
  std::error_code ec;
  if (!fs::is_regular_file(cfg, ec)) return;
  ck.openclip_config = read_json_file(cfg.string());
  ck.openclip_config_path = cfg.string();
  if (!ck.openclip_config.is_object()) throw Error(ErrorCode::Format, "'" + cfg.string() + "' is not a JSON object");
}

Checkpoint finish(const std::string& path, Raw raw, const fs::path& config_dir, bool force_hf) {
  Checkpoint ck;
  ck.path = path;
  ck.metadata = std::move(raw.metadata);
  if (force_hf || has_hf_clip_names(raw.tensors)) {
    ck.tensors = map_hf_clip_names(raw.tensors, path);
    ck.format = "hf";
    attach_hf_configs(ck, config_dir);
  } else {
    ck.tensors = std::move(raw.tensors);
    ck.format = raw.format;
  }
  if (ck.tensors.empty()) throw Error(ErrorCode::Format, "checkpoint '" + path + "' holds no tensors");
  align_tensors(ck.tensors);
  attach_packed_weights(ck.tensors, ck.metadata, path);  // `clipkit convert` files in the kernels' layouts
  attach_int8_scales(ck.tensors, path);  // `clipkit convert --dtype int8` files
  attach_openclip_config(ck, config_dir);
  return ck;
}

Checkpoint load_folder(const std::string& path) {
  const fs::path dir(path);
  std::error_code ec;
  // A folder with open_clip_config.json (an open_clip hub repository) takes open_clip's own weights
  // first: such repositories may also hold a Hugging Face CLIPModel copy or a timm image-tower
  // checkpoint under model.safetensors / pytorch_model.bin.
  static const char* openclip_candidates[] = {"open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                                              "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth"};
  if (fs::is_regular_file(dir / "open_clip_config.json", ec))
    for (const char* c : openclip_candidates) {
      const fs::path f = dir / c;
      if (!fs::is_regular_file(f, ec)) continue;
      Raw raw = load_file(f.string(), /*allow_index=*/false);
      return finish(path, std::move(raw), dir, false);
    }
  static const char* candidates[] = {"model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                                     "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"};
  for (const char* c : candidates) {
    const fs::path f = dir / c;
    if (!fs::is_regular_file(f, ec)) continue;
    Raw raw = load_file(f.string(), /*allow_index=*/true);
    return finish(path, std::move(raw), dir, false);
  }
  throw Error(ErrorCode::NotFound, "folder '" + path +
                                       "' holds no model.safetensors, model.safetensors.index.json, pytorch_model.bin, "
                                       "open_clip_model.safetensors or open_clip_pytorch_model.bin "
                                       "(expected a Hugging Face or open_clip model folder)");
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    // An open_clip name (ARCH/TAG) resolves to its downloaded folder; an existing path wins.
    if (const auto dir = resolve_openclip_model(path)) return load_checkpoint(*dir);
    throw Error(ErrorCode::NotFound, "checkpoint '" + path + "' does not exist");
  }
  try {
    if (fs::is_directory(st)) return load_folder(path);
    Raw raw = load_file(path, /*allow_index=*/true);
    return finish(path, std::move(raw), fs::path(path).parent_path(), false);
  } catch (const fs::filesystem_error& e) {  // keep the library's one error type
    throw Error(ErrorCode::Io, "checkpoint '" + path + "': " + e.what());
  }
}

}  // namespace clipkit
