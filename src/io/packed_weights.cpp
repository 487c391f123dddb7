#include "io/packed_weights.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "core/json_limits.h"

namespace clipkit {

using nlohmann::json;

namespace {

constexpr uint64_t kPieceAlign = 64;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

int64_t get_int(const json& j, const char* key, const std::function<Error(const std::string&)>& bad) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) throw bad(std::string("field \"") + key + "\" is missing or not an integer");
  return it->get<int64_t>();
}

void get_pair(const json& j, const char* key, int64_t (&dst)[2], const std::function<Error(const std::string&)>& bad) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array() || it->size() != 2 || !(*it)[0].is_number_integer() ||
      !(*it)[1].is_number_integer())
    throw bad(std::string("field \"") + key + "\" is not a pair of integers");
  dst[0] = (*it)[0].get<int64_t>();
  dst[1] = (*it)[1].get<int64_t>();
}

json layout_json(const BlockedLayout& l) {
  json blocks = json::array();
  for (const auto& [d, s] : l.blocks) blocks.push_back({d, s});
  return {{"dims", {l.dims[0], l.dims[1]}},
          {"padded", {l.padded[0], l.padded[1]}},
          {"strides", {l.strides[0], l.strides[1]}},
          {"blocks", blocks}};
}

}  // namespace

void attach_packed_weights(std::map<std::string, Tensor>& tensors, const std::map<std::string, std::string>& metadata,
                           const std::string& path) {
  auto version = metadata.find(kPackedLayoutKey);
  if (version == metadata.end()) return;
  if (version->second != kPackedLayoutVersion)
    throw Error(ErrorCode::Format, "checkpoint '" + path + "' stores weights packed in layout version '" +
                                       version->second + "', which this clipkit does not read (it reads version " +
                                       kPackedLayoutVersion + "): convert the original checkpoint again");
  auto desc = metadata.find(kPackedWeightsKey);
  if (desc == metadata.end())
    throw Error(ErrorCode::Format, "checkpoint '" + path + "' has " + kPackedLayoutKey + " but no " + kPackedWeightsKey);
  json all;
  try {
    all = parse_json_bounded(desc->second, "checkpoint '" + path + "' metadata " + kPackedWeightsKey);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::Format, "checkpoint '" + path + "': invalid JSON in metadata " + kPackedWeightsKey + ": " +
                                       e.what());
  }
  if (!all.is_object())
    throw Error(ErrorCode::Format, "checkpoint '" + path + "': metadata " + kPackedWeightsKey + " is not an object");
  const auto isa = metadata.find(kPackedIsaKey);
  for (auto it = all.begin(); it != all.end(); ++it) {
    const std::string name = it.key();
    const std::function<Error(const std::string&)> bad = [&](const std::string& why) {
      return Error(ErrorCode::Format, "checkpoint '" + path + "': packed weight '" + name + "' " + why);
    };
    const json& j = it.value();
    if (!j.is_object()) throw bad("is not described by an object");
    auto blob_it = tensors.find(name + kPackedSuffix);
    if (blob_it == tensors.end()) throw bad("has no tensor '" + name + kPackedSuffix + "'");
    if (tensors.count(name)) throw bad("is also stored unpacked");
    const Tensor blob = blob_it->second;
    if (blob.dtype != DType::U8 || blob.shape.size() != 1) throw bad("is not stored as a one-dimensional U8 tensor");
    auto pw = std::make_shared<PackedWeight>();
    if (!j.contains("dtype") || !j["dtype"].is_string()) throw bad("has no dtype");
    const std::string dt = j["dtype"].get<std::string>();
    if (dt == "F32") pw->dtype = DType::F32;
    else if (dt == "F16") pw->dtype = DType::F16;
    else if (dt == "I8") pw->dtype = DType::I8;
    else throw bad("has dtype '" + dt + "' (expected F32, F16 or I8)");
    Shape shape;
    if (!j.contains("shape") || !j["shape"].is_array() || j["shape"].size() < 2 || j["shape"].size() > 8)
      throw bad("has no shape of 2 to 8 axes");
    for (const json& d : j["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 1 || d.get<int64_t>() > (int64_t{1} << 32))
        throw bad("has an invalid shape");
      shape.push_back(d.get<int64_t>());
    }
    pw->out = shape[0];
    pw->in = 1;
    for (size_t a = 1; a < shape.size(); ++a) {
      pw->in *= shape[a];
      if (pw->in > (int64_t{1} << 32)) throw bad("has an invalid shape");
    }
    const size_t es = dtype_size(pw->dtype);
    const auto* base = static_cast<const uint8_t*>(blob.data);
    const uint64_t blob_bytes = blob.nbytes();
    // Typed reads need element alignment: a blob that lacks it is copied once.
    std::shared_ptr<const void> owner = blob.owner;
    if (reinterpret_cast<uintptr_t>(base) % 8 != 0) {
      auto copy = std::make_shared<std::vector<uint64_t>>((blob_bytes + 7) / 8);
      if (blob_bytes) std::memcpy(copy->data(), base, blob_bytes);
      base = reinterpret_cast<const uint8_t*>(copy->data());
      owner = copy;
    }
    if (!j.contains("pieces") || !j["pieces"].is_array() || j["pieces"].empty() || j["pieces"].size() > 4096)
      throw bad("has no list of pieces");
    int64_t next_row = 0;
    for (const json& pj : j["pieces"]) {
      if (!pj.is_object()) throw bad("has a piece that is not an object");
      PackedPiece p;
      p.row0 = get_int(pj, "row0", bad);
      p.rows = get_int(pj, "rows", bad);
      const int64_t offset = get_int(pj, "offset", bad), bytes = get_int(pj, "bytes", bad);
      if (p.row0 != next_row || p.rows < 1 || p.rows > pw->out - p.row0)
        throw bad("has pieces that do not cover its " + std::to_string(pw->out) + " rows in order");
      next_row = p.row0 + p.rows;
      if (offset < 0 || bytes < 0 || static_cast<uint64_t>(offset) > blob_bytes ||
          static_cast<uint64_t>(bytes) > blob_bytes - static_cast<uint64_t>(offset) || offset % static_cast<int64_t>(es) != 0)
        throw bad("has a piece outside its " + std::to_string(blob_bytes) + " stored bytes");
      get_pair(pj, "dims", p.layout.dims, bad);
      get_pair(pj, "padded", p.layout.padded, bad);
      get_pair(pj, "strides", p.layout.strides, bad);
      if (!pj.contains("blocks") || !pj["blocks"].is_array() || pj["blocks"].size() > 8) throw bad("has no block list");
      for (const json& b : pj["blocks"]) {
        if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer())
          throw bad("has a block that is not a pair of integers");
        const int64_t d = b[0].get<int64_t>();
        if (d != 0 && d != 1) throw bad("has a block of dimension " + std::to_string(d));
        p.layout.blocks.emplace_back(static_cast<int>(d), b[1].get<int64_t>());
      }
      if (p.layout.dims[0] != pw->in || p.layout.dims[1] != p.rows)
        throw bad("has a piece of " + std::to_string(p.layout.dims[0]) + "x" + std::to_string(p.layout.dims[1]) +
                  ", expected " + std::to_string(pw->in) + "x" + std::to_string(p.rows));
      p.layout.validate("checkpoint '" + path + "': packed weight '" + name + "'", bytes / static_cast<int64_t>(es));
      p.data = base + offset;
      pw->pieces.push_back(std::move(p));
    }
    if (next_row != pw->out) throw bad("has pieces that do not cover its " + std::to_string(pw->out) + " rows");
    if (pw->dtype == DType::I8) {
      auto zs = tensors.find(name + kZeroShiftSuffix);
      if (zs == tensors.end()) throw bad("is int8 but has no '" + name + kZeroShiftSuffix + "'");
      if (zs->second.dtype != DType::F32 || zs->second.shape != Shape{pw->out})
        throw bad("has a zero shift that is not F32 [" + std::to_string(pw->out) + "]");
      pw->zero_shift = zs->second.to_f32();
      tensors.erase(zs);
    }
    if (isa != metadata.end()) pw->isa = isa->second;
    pw->owner = owner;
    Tensor t;
    t.dtype = pw->dtype;
    t.shape = shape;
    t.owner = owner;
    t.packed = std::move(pw);
    tensors.erase(name + kPackedSuffix);
    tensors.emplace(name, std::move(t));
  }
  for (const auto& [n, t] : tensors)
    if (ends_with(n, kPackedSuffix) && t.dtype == DType::U8)
      throw Error(ErrorCode::Format, "checkpoint '" + path + "': tensor '" + n + "' is not described in " +
                                         kPackedWeightsKey);
}

PackedTensors packed_tensors(const std::map<std::string, PackedWeight>& weights, const std::map<std::string, Shape>& shapes,
                             const std::vector<std::string>& order) {
  PackedTensors out;
  json desc = json::object();
  std::vector<std::string> names = order;
  if (names.empty())
    for (const auto& nw : weights) names.push_back(nw.first);
  std::vector<std::pair<std::string, Tensor>> shifts;
  for (const std::string& name : names) {
    const PackedWeight& w = weights.at(name);
    const size_t es = dtype_size(w.dtype);
    std::vector<uint8_t> bytes;
    json pieces = json::array();
    for (const PackedPiece& p : w.pieces) {
      const uint64_t offset = (bytes.size() + kPieceAlign - 1) / kPieceAlign * kPieceAlign;
      const uint64_t n = static_cast<uint64_t>(p.layout.span()) * es;
      bytes.resize(offset + n);
      std::memcpy(bytes.data() + offset, p.data, n);
      json pj = layout_json(p.layout);
      pj["row0"] = p.row0;
      pj["rows"] = p.rows;
      pj["offset"] = offset;
      pj["bytes"] = n;
      pieces.push_back(std::move(pj));
    }
    bytes.resize((bytes.size() + kPieceAlign - 1) / kPieceAlign * kPieceAlign);
    const Shape& shape = shapes.at(name);
    desc[name] = {{"dtype", dtype_name(w.dtype)}, {"shape", shape}, {"pieces", std::move(pieces)}};
    const int64_t size = static_cast<int64_t>(bytes.size());
    out.tensors.emplace_back(name + kPackedSuffix, Tensor::from_bytes(DType::U8, Shape{size}, std::move(bytes)));
    if (w.dtype == DType::I8) shifts.emplace_back(name + kZeroShiftSuffix, Tensor::from_f32(w.zero_shift, Shape{w.out}));
  }
  for (auto& s : shifts) out.tensors.push_back(std::move(s));
  out.description = desc.dump();
  return out;
}

}  // namespace clipkit
