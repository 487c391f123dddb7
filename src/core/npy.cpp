#include "core/npy.h"

#include <cstdint>
#include <cstring>

#include "clipkit/error.h"
#include "core/mapped_file.h"

namespace clipkit {

static const char* npy_descr(DType t) {
  switch (t) {
    case DType::F32: return "<f4";
    case DType::F64: return "<f8";
    case DType::F16: return "<f2";
    case DType::I32: return "<i4";
    case DType::I64: return "<i8";
    case DType::U8: return "|u1";
    default: throw Error(ErrorCode::InvalidArgument, std::string("cannot write dtype ") + dtype_name(t) + " to .npy");
  }
}

std::string npy_encode(DType dtype, const Shape& shape, const void* data) {
  std::string header = "{'descr': '" + std::string(npy_descr(dtype)) + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) {
    header += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) header += ",";
    if (i + 1 < shape.size()) header += " ";
  }
  header += "), }";
  // magic(6) + version(2) + len(2) + header + '\n' must be a multiple of 64
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.push_back(static_cast<char>(len & 0xff));
  out.push_back(static_cast<char>(len >> 8));
  out += header;
  const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  out.append(static_cast<const char*>(data), nbytes);
  return out;
}

void write_npy(const std::string& path, DType dtype, const Shape& shape, const void* data) {
  const std::string bytes = npy_encode(dtype, shape, data);
  write_file_atomic(path, bytes.data(), bytes.size());
}

Tensor read_npy(const std::string& path) {
  auto f = MappedFile::open(path);
  const uint8_t* p = f->data();
  const size_t n = f->size();
  auto bad = [&](const std::string& why) { return Error(ErrorCode::Format, "'" + path + "' is not a valid .npy file: " + why); };
  if (n < 10 || std::memcmp(p, "\x93NUMPY", 6) != 0) throw bad("missing magic");
  size_t hlen, hstart;
  if (p[6] == 1) {
    hlen = p[8] | (p[9] << 8);
    hstart = 10;
  } else if (p[6] == 2 || p[6] == 3) {
    if (n < 12) throw bad("truncated header");
    hlen = p[8] | (p[9] << 8) | (static_cast<size_t>(p[10]) << 16) | (static_cast<size_t>(p[11]) << 24);
    hstart = 12;
  } else {
    throw bad("unsupported version");
  }
  if (hstart + hlen > n) throw bad("truncated header");
  const std::string h(reinterpret_cast<const char*>(p + hstart), hlen);
  auto field = [&](const std::string& key) {
    size_t k = h.find("'" + key + "'");
    if (k == std::string::npos) throw bad("header lacks " + key);
    return h.substr(h.find(':', k) + 1);
  };
  std::string descr = field("descr");
  descr = descr.substr(descr.find('\'') + 1);
  descr = descr.substr(0, descr.find('\''));
  DType dt;
  if (descr == "<f4") dt = DType::F32;
  else if (descr == "<f8") dt = DType::F64;
  else if (descr == "<f2") dt = DType::F16;
  else if (descr == "<i4") dt = DType::I32;
  else if (descr == "<i8") dt = DType::I64;
  else if (descr == "|u1" || descr == "<u1") dt = DType::U8;
  else throw bad("unsupported dtype " + descr);
  if (field("fortran_order").find("True") < field("fortran_order").find(','))
    throw bad("Fortran order is not supported");
  std::string s = field("shape");
  s = s.substr(s.find('(') + 1, s.find(')') - s.find('(') - 1);
  Shape shape;
  size_t i = 0;
  // The element count and byte size are checked as the dimensions are read, so that no product
  // overflows; every size is bounded by the file's own length.
  uint64_t numel = 1;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == ',')) ++i;
    if (i >= s.size()) break;
    size_t j = i;
    uint64_t dim = 0;
    while (j < s.size() && s[j] >= '0' && s[j] <= '9') {
      dim = dim * 10 + static_cast<uint64_t>(s[j] - '0');
      if (dim > n) throw bad("shape dimension " + s.substr(i, j - i + 1) + "... exceeds the file size");
      ++j;
    }
    if (j == i) throw bad("malformed shape");
    if (shape.size() >= 32) throw bad("more than 32 dimensions");
    if (dim != 0 && numel > n / dim) throw bad("shape holds more elements than the file");
    numel *= dim;
    shape.push_back(static_cast<int64_t>(dim));
    i = j;
  }
  const size_t data_off = hstart + hlen;
  const size_t need = static_cast<size_t>(numel) * dtype_size(dt);  // numel <= n: no overflow
  if (need > n - data_off) throw bad("truncated data");
  if (reinterpret_cast<uintptr_t>(p + data_off) % dtype_size(dt) != 0)  // odd header length: copy, aligned
    return Tensor::from_bytes(dt, shape, std::vector<uint8_t>(p + data_off, p + data_off + need));
  Tensor t;
  t.dtype = dt;
  t.shape = shape;
  t.data = p + data_off;
  t.owner = f;
  return t;
}

}  // namespace clipkit
