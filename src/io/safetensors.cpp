#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "core/json_limits.h"
#include "core/mapped_file.h"

namespace clipkit {

using nlohmann::json;

bool looks_like_safetensors(const uint8_t* data, size_t size) {
  if (size < 10) return false;
  uint64_t n = 0;
  std::memcpy(&n, data, 8);
  return n > 1 && n <= size - 8 && n < (100ull << 20) && data[8] == '{';
}

SafetensorsFile read_safetensors(const std::string& path) {
  auto f = MappedFile::open(path, MapHint::Weights);
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::Format, "invalid safetensors file '" + path + "': " + why);
  };
  if (f->size() < 8) throw bad("file is shorter than its 8-byte header length (truncated?)");
  uint64_t hlen = 0;
  std::memcpy(&hlen, f->data(), 8);
  if (hlen > f->size() - 8) throw bad("header length " + std::to_string(hlen) + " runs past the end of the " +
                                      std::to_string(f->size()) + "-byte file (truncated?)");
  json header;
  try {
    header = parse_json_bounded(reinterpret_cast<const char*>(f->data()) + 8,
                                reinterpret_cast<const char*>(f->data()) + 8 + hlen,
                                "invalid safetensors file '" + path + "': header");
  } catch (const json::exception& e) {
    throw bad(std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) throw bad("header is not a JSON object");
  const uint8_t* base = f->data() + 8 + hlen;
  const uint64_t data_size = f->size() - 8 - hlen;
  SafetensorsFile out;
  std::vector<std::pair<uint64_t, std::string>> by_offset;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) throw bad("__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m)
        out.metadata[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    const json& e = it.value();
    const std::string& name = it.key();
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      throw bad("entry '" + name + "' lacks dtype, shape or data_offsets");
    Tensor t;
    try {
      t.dtype = dtype_from_name(e["dtype"].get<std::string>());
      if (!e["shape"].is_array()) throw bad("tensor '" + name + "' has a shape that is not a list");
      int64_t count = 1;
      for (const auto& d : e["shape"]) {
        const int64_t v = d.get<int64_t>();
        if (v < 0) throw bad("tensor '" + name + "' has a negative dimension");
        // Element counts beyond the data section cannot fit (and would overflow below).
        if (__builtin_mul_overflow(count, v, &count) || static_cast<uint64_t>(count) > data_size)
          throw bad("tensor '" + name + "' has a shape too large for the " + std::to_string(data_size) +
                    "-byte data section");
        t.shape.push_back(v);
      }
      const auto& off = e["data_offsets"];
      if (!off.is_array() || off.size() != 2) throw bad("tensor '" + name + "' has malformed data_offsets");
      const uint64_t b = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
      if (b > end || end > data_size)
        throw bad("tensor '" + name + "' data_offsets [" + std::to_string(b) + ", " + std::to_string(end) +
                  "] lie outside the " + std::to_string(data_size) + "-byte data section (truncated?)");
      if (end - b != t.nbytes())
        throw bad("tensor '" + name + "' occupies " + std::to_string(end - b) + " bytes but shape " +
                  shape_str(t.shape) + " of " + dtype_name(t.dtype) + " needs " + std::to_string(t.nbytes()));
      t.data = base + b;
      by_offset.emplace_back(b, name);
    } catch (const json::exception& ex) {
      throw bad("entry '" + name + "' is malformed: " + ex.what());
    } catch (const Error& ex) {
      if (ex.code() == ErrorCode::Format && std::string(ex.what()).rfind("invalid safetensors", 0) == 0) throw;
      throw bad("tensor '" + name + "': " + ex.what());
    }
    t.owner = f;
    t.mapped = true;
    out.tensors.emplace(name, std::move(t));
  }
  std::sort(by_offset.begin(), by_offset.end());
  uint64_t prev_end = 0;
  std::string prev;
  for (auto& [o, n] : by_offset) {
    const uint64_t sz = out.tensors.at(n).nbytes();
    if (sz > 0 && o < prev_end)
      throw bad("tensor '" + n + "' data_offsets start at " + std::to_string(o) + ", inside tensor '" + prev +
                "' (which ends at " + std::to_string(prev_end) + ")");
    if (sz > 0) {
      prev_end = o + sz;
      prev = n;
    }
    out.order.push_back(n);
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata, size_t align) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    const uint64_t n = t.nbytes();
    header[name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string h = header.dump();
  if (align < 8 || align % 8 != 0) align = 8;
  h.append((align - (8 + h.size()) % align) % align, ' ');  // the data starts `align`-aligned
  std::string out(8, '\0');
  const uint64_t hl = h.size();
  std::memcpy(out.data(), &hl, 8);
  out += h;
  out.reserve(out.size() + off);
  for (const auto& [name, t] : tensors) {
    if (t.packed || (t.data == nullptr && t.nbytes() > 0))
      throw Error(ErrorCode::Internal, "tensor '" + name + "' has no plain data to write");
    out.append(static_cast<const char*>(t.data), t.nbytes());
  }
  write_file_atomic(path, out.data(), out.size());
}

}  // namespace clipkit
