// clipkit convert: rewrite a checkpoint (any supported layout) as safetensors with OpenAI tensor
// names, storing the weights as f16 or as int8 with per-output-channel scales.
//
//   clipkit convert --dtype f16|int8|f32 [--arch NAME] [--layout packed|plain] IN OUT
//
// --layout packed (the default) stores every projection the model's encoders run through
// clipkit::Linear in the layout this CPU's kernels use (src/io/packed_weights.h), so that a load
// maps those bytes instead of repacking them; plain keeps the row-major layout of any checkpoint.
//
// The open_clip configuration the input was read with travels in the output's metadata (the
// open_clip_config.json beside it, or the --arch name), so the output loads configured the same.
//
// int8 quantises every floating weight matrix/convolution kernel ("...weight" with two or more
// axes, except the token embedding and XLM-R's embedding tables) per output channel; everything
// else keeps its dtype. In a modified ResNet the convolution kernels and the attention pool's key
// and value projections keep theirs too: an int8 ResNet quantises each convolution after folding
// its BatchNorm in (at load), and runs the key and value projections in f32, so that such a file
// gives the embeddings a plain file gives with --dtype int8. See
// src/io/quantized_int8.h for the naming convention; load_checkpoint reads such files back.
#include <algorithm>
#include <iostream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "core/half.h"
#include "core/mapped_file.h"
#include "core/packed_weight.h"
#include "core/tensor.h"
#include "io/checkpoint.h"
#include "io/packed_weights.h"
#include "io/quantized_int8.h"
#include "io/safetensors.h"
#include "kernels/int8.h"
#include "kernels/linear.h"
#include "model/openclip_config.h"
#include "model/transformer.h"

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Lookup tables stay floats: an int8 table would be read back as a float copy at load (XLM-R's
// word embeddings: 768 MB for the base model, where the stored floats are mapped in place).
// resnet: the checkpoint is a modified ResNet, whose convolutions are quantised after BatchNorm
// folding and whose attention-pool key and value projections stay f32 (src/model/resnet.cpp).
bool quantizable(const std::string& name, const clipkit::Tensor& t, bool resnet) {
  if (resnet && (t.shape.size() == 4 || name == "visual.attnpool.k_proj.weight" ||
                 name == "visual.attnpool.v_proj.weight"))
    return false;
  return t.is_float() && t.shape.size() >= 2 && t.shape[0] > 0 && ends_with(name, "weight") &&
         name != "token_embedding.weight" && !ends_with(name, "embedding") &&
         !ends_with(name, "embeddings.weight");
}

clipkit::Tensor to_f16(const clipkit::Tensor& t) {
  const std::vector<float> v = t.to_f32();
  std::vector<uint8_t> bytes(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = clipkit::float_to_half(v[i]);
    bytes[2 * i] = static_cast<uint8_t>(h & 0xff);
    bytes[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
  return clipkit::Tensor::from_bytes(clipkit::DType::F16, t.shape, std::move(bytes));
}

// A tensor stored in a kernel layout, as a plain row-major copy (row scales kept).
clipkit::Tensor unpacked(const clipkit::Tensor& t) {
  using namespace clipkit;
  std::vector<uint8_t> bytes(static_cast<size_t>(t.numel()) * dtype_size(t.dtype));
  t.packed->unpack_rows(0, t.packed->out, bytes.data());
  Tensor p = Tensor::from_bytes(t.dtype, t.shape, std::move(bytes));
  p.row_scale = t.row_scale;
  return p;
}

// The packed form of every weight the model built from `in` (loaded with `dtype`) runs through its
// linear layers, by tensor name: only weights whose layers cover all their rows, each in a plain
// blocked layout of the element type `dtype` stores.
std::map<std::string, clipkit::PackedWeight> packed_layers(const std::string& in, const std::string& dtype,
                                                           const std::string& arch,
                                                           std::vector<std::shared_ptr<clipkit::Model>>& keep,
                                                           std::vector<std::string>& order) {
  using namespace clipkit;
  ModelOptions mo;
  mo.dtype = dtype;
  mo.arch = arch;
  mo.on_warning = [](const std::string&) {};
  std::vector<LoadedLayer> layers;
  set_loaded_layer_sink(&layers);
  try {
    keep.push_back(Model::load(in, mo));
  } catch (...) {
    set_loaded_layer_sink(nullptr);
    throw;
  }
  set_loaded_layer_sink(nullptr);
  const DType want = dtype == "f32" ? DType::F32 : dtype == "f16" ? DType::F16 : DType::I8;
  // Each record's packed rows; a tensor loaded in parts of different sizes (two models' layers
  // cutting it differently) is left plain.
  struct Part {
    int64_t rows = 0;
    bool ok = false;
    PackedWeight w;
    const void* layer = nullptr;  // the layer the rows belong to
    int64_t layer_row0 = 0;
  };
  std::map<std::string, std::map<int64_t, Part>> by_tensor;
  std::set<std::string> conflicting;
  for (const LoadedLayer& l : layers) {
    Part part;
    part.rows = l.rows > 0 ? l.rows : l.layer.out_features();
    part.layer_row0 = l.layer_row0;
    PackedWeight pw;
    part.ok = l.layer.packed_weight(pw);
    part.layer = pw.owner.get();
    if (part.ok && l.rows > 0) part.ok = pw.rows_view(l.layer_row0, l.rows, part.w);
    else part.w = std::move(pw);
    auto [it, fresh] = by_tensor[l.tensor].emplace(l.row0, part);
    if (!fresh && it->second.rows != part.rows) conflicting.insert(l.tensor);
  }
  std::map<std::string, std::pair<std::string, int64_t>> group;  // tensor -> (its layer's first tensor, rows offset)
  std::map<const void*, std::string> first_of_layer;
  for (const auto& [name, parts] : by_tensor)
    for (const auto& [row0, part] : parts)
      if (part.layer_row0 == 0 && part.layer) first_of_layer.emplace(part.layer, name);
  std::map<std::string, PackedWeight> out;
  for (const auto& [name, parts] : by_tensor) {
    if (conflicting.count(name)) continue;
    PackedWeight w;
    w.dtype = want;
    bool ok = true;
    int64_t next = 0;
    for (const auto& [row0, part] : parts) {
      const PackedWeight& pw = part.w;
      if (row0 != next || !part.ok || pw.dtype != want || (w.in && pw.in != w.in)) {
        ok = false;
        break;
      }
      w.in = pw.in;
      w.isa = pw.isa;
      for (PackedPiece p : pw.pieces) {
        p.row0 += row0;
        w.pieces.push_back(p);
      }
      w.zero_shift.insert(w.zero_shift.end(), pw.zero_shift.begin(), pw.zero_shift.end());
      next = row0 + part.rows;
    }
    if (!ok) continue;
    w.out = next;
    out.emplace(name, std::move(w));
    const Part& first = parts.begin()->second;
    auto f = first_of_layer.find(first.layer);
    group[name] = {f != first_of_layer.end() && first.layer_row0 > 0 ? f->second : name, first.layer_row0};
  }
  // The parts of one stacked layer one after the other, in the layer's row order, so that a load
  // finds their pieces adjacent and uses them as one weight.
  order.clear();
  for (const auto& [name, w] : out) order.push_back(name);
  std::stable_sort(order.begin(), order.end(),
                   [&](const std::string& a, const std::string& b) { return group[a] < group[b]; });
  return out;
}

void run(const std::string& dtype, const std::string& arch, const std::string& layout, const std::string& in,
         const std::string& out) {
  using namespace clipkit;
  if (dtype != "f16" && dtype != "int8" && dtype != "f32")
    throw Error(ErrorCode::InvalidArgument, "--dtype must be f16, int8 or f32, not '" + dtype + "'");
  if (layout != "packed" && layout != "plain")
    throw Error(ErrorCode::InvalidArgument, "--layout must be packed or plain, not '" + layout + "'");
  cli::check_output_path(out, "output");
  if (!arch.empty()) {
    // The name must be known and fit the tensors before it is written into the output.
    ModelOptions mo;
    mo.arch = arch;
    mo.on_warning = [](const std::string&) {};
    (void)Model::inspect(in, mo);
  }
  const Checkpoint ck = load_checkpoint(in);
  std::vector<std::pair<std::string, Tensor>> tensors;
  int64_t quantized = 0, bytes_in = 0, bytes_out = 0;
  const bool resnet = ck.tensors.count("visual.layer1.0.conv1.weight") > 0;
  for (const auto& [name, stored] : ck.tensors) {
    const Tensor t = stored.packed ? unpacked(stored) : stored;
    bytes_in += static_cast<int64_t>(t.nbytes());
    if (t.row_scale) bytes_in += static_cast<int64_t>(t.row_scale->size() * sizeof(float));
    if (!t.is_float()) {
      tensors.emplace_back(name, t);
    } else if (dtype == "f16") {
      tensors.emplace_back(name, t.dtype == DType::F16 ? t : to_f16(t));
    } else if (dtype == "f32") {
      tensors.emplace_back(name, t.dtype == DType::F32 ? t : Tensor::from_f32(t.to_f32(), t.shape));
    } else if (t.is_quantized_int8()) {
      // Already int8 (a converted file converted again): the integers and scales are kept as stored.
      Tensor q = t;
      q.row_scale.reset();
      tensors.emplace_back(name, q);
      tensors.emplace_back(name + kInt8ScaleSuffix, Tensor::from_f32(*t.row_scale, Shape{t.shape[0]}));
      ++quantized;
    } else if (quantizable(name, t, resnet)) {
      const int64_t rows = t.shape[0], cols = t.numel() / rows;
      const std::vector<float> w = t.to_f32();
      QuantizedWeights qw;
      try {
        qw = quantize_weights_int8(w.data(), rows, cols);
      } catch (const Error& e) {
        throw Error(ErrorCode::InvalidArgument, "cannot quantise tensor '" + name + "' of '" + in + "': " + e.what());
      }
      std::vector<uint8_t> qbytes(qw.q.size());
      for (size_t i = 0; i < qw.q.size(); ++i) qbytes[i] = static_cast<uint8_t>(qw.q[i]);
      tensors.emplace_back(name, Tensor::from_bytes(DType::I8, t.shape, std::move(qbytes)));
      tensors.emplace_back(name + kInt8ScaleSuffix, Tensor::from_f32(std::move(qw.scale), Shape{rows}));
      ++quantized;
    } else {
      tensors.emplace_back(name, t);  // biases, norms, embeddings, projections keep their dtype
    }
  }
  std::map<std::string, std::string> meta = ck.metadata;
  meta.erase(kQuantizationKey);
  meta.erase(kPackedLayoutKey);
  meta.erase(kPackedIsaKey);
  meta.erase(kPackedWeightsKey);
  // Packed: the weights of the model's linear layers replaced by the layers' own packed bytes,
  // stored first so that each starts 64-byte aligned in the file.
  std::vector<std::shared_ptr<Model>> keep;
  int64_t packed_count = 0;
  std::string unpacked_why;  // why a --layout packed output holds no packed weight
  if (layout == "packed") {
    std::map<std::string, PackedWeight> packed;
    std::vector<std::string> order;
    try {
      packed = packed_layers(in, dtype, arch, keep, order);
    } catch (const Error& e) {
      // Not loadable as a model on its own (e.g. a partial checkpoint): the tensors are still
      // converted, in the plain layout.
      unpacked_why = e.what();
    }
    std::map<std::string, Shape> shapes;
    std::map<std::string, PackedWeight> used;
    for (const auto& [name, t] : tensors)
      if (auto it = packed.find(name); it != packed.end() && t.numel() == it->second.out * it->second.in &&
                                         !t.shape.empty() && t.shape[0] == it->second.out) {
        shapes[name] = t.shape;
        used.emplace(name, it->second);
      }
    if (!used.empty()) {
      std::vector<std::string> used_order;
      for (const auto& name : order)
        if (used.count(name)) used_order.push_back(name);
      PackedTensors pt = packed_tensors(used, shapes, used_order);
      std::vector<std::pair<std::string, Tensor>> rest;
      for (auto& [name, t] : tensors)
        if (!used.count(name)) rest.emplace_back(name, std::move(t));
      tensors = std::move(pt.tensors);
      for (auto& nt : rest) tensors.push_back(std::move(nt));
      meta[kPackedLayoutKey] = kPackedLayoutVersion;
      meta[kPackedIsaKey] = used.begin()->second.isa;
      meta[kPackedWeightsKey] = std::move(pt.description);
      packed_count = static_cast<int64_t>(used.size());
    }
  }
  for (const auto& [name, t] : tensors) bytes_out += static_cast<int64_t>(t.nbytes());
  if (dtype == "int8") meta[kQuantizationKey] = kQuantizationInt8;
  // The configuration that loading the input would take (Model::load's order: --arch, then the
  // open_clip_config.json beside the weights, then what the input's own metadata stores).
  std::string config_source;
  if (!arch.empty()) {
    meta[kOpenClipArchKey] = arch;
    meta.erase(kOpenClipConfigKey);
    config_source = "--arch " + arch;
  } else if (ck.openclip_config.is_object()) {
    meta[kOpenClipConfigKey] = ck.openclip_config.dump();
    meta.erase(kOpenClipArchKey);
    config_source = "open_clip_config.json";
  } else if (meta.count(kOpenClipConfigKey)) {
    meta.erase(kOpenClipArchKey);  // the input loads with its stored config, not the name
    config_source = std::string("metadata ") + kOpenClipConfigKey;
  } else if (meta.count(kOpenClipArchKey)) {
    config_source = std::string("metadata ") + kOpenClipArchKey;
  }
  write_safetensors(out, tensors, meta, 64);
  // The written file sits in the page cache in the sizes of its writes; read back through a
  // weights mapping, it is cached in huge pages, which a load maps without a fault per 4 KiB page.
  cache_as_huge_pages(out);
  nlohmann::json j{{"input", in},          {"output", out},         {"dtype", dtype},
                   {"source_format", ck.format}, {"tensors", ck.tensors.size()}, {"quantized", quantized},
                   {"bytes_in", bytes_in},  {"bytes_out", bytes_out}, {"layout", layout},
                   {"packed", packed_count}};
  if (packed_count) j["packed_isa"] = meta[kPackedIsaKey];
  if (!unpacked_why.empty()) j["unpacked_because"] = unpacked_why;
  if (!config_source.empty()) j["open_clip_config"] = config_source;
  std::cout << j.dump() << "\n";
}

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "Rewrite a checkpoint as safetensors with f16 or int8 weights");
  auto dtype = std::make_shared<std::string>();
  auto in = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto arch = std::make_shared<std::string>();
  auto layout = std::make_shared<std::string>("packed");
  cmd->add_option("--dtype", *dtype, "Weight storage: f16, int8 (per-channel symmetric + f32 scales) or f32")
      ->required();
  cmd->add_option("input", *in, "Checkpoint to read (.pt, safetensors or Hugging Face folder)")->required();
  cmd->add_option("output", *out, "safetensors file to write")->required();
  clipkit::cli::add_arch_option(cmd, *arch);
  cmd->add_option("--layout", *layout,
                  "packed: the linear layers' weights in this CPU's kernel layouts, loaded without repacking "
                  "(another CPU repacks them at load); plain: row-major, as any checkpoint")
      ->capture_default_str();
  clipkit::cli::add_examples(cmd, {"clipkit convert --dtype int8 ViT-B-32.pt ViT-B-32-int8.safetensors",
                                   "clipkit convert --dtype int8 --arch ViT-H-14 open_clip_model.safetensors vit-h-14-int8.safetensors"});
  cmd->callback([=] { run(*dtype, *arch, *layout, *in, *out); });
});

}  // namespace
