#include "core/packed_weight.h"

#include <algorithm>
#include <cstring>

#include "clipkit/error.h"
#include "core/half.h"

namespace clipkit {

namespace {

constexpr int64_t kMaxDim = int64_t{1} << 32;
constexpr int64_t kMaxStride = int64_t{1} << 40;
constexpr size_t kMaxBlocks = 8;
constexpr int64_t kMaxBlock = 4096;

int64_t block_total(const BlockedLayout& l, int d) {
  int64_t t = 1;
  for (const auto& [dim, size] : l.blocks)
    if (dim == d) t *= size;
  return t;
}

int64_t inner_total(const BlockedLayout& l) {
  int64_t t = 1;
  for (const auto& b : l.blocks) t *= b.second;
  return t;
}

}  // namespace

int64_t BlockedLayout::offset(int64_t k, int64_t n) const {
  int64_t idx[2] = {k, n};
  int64_t off = 0;
  for (int d = 0; d < 2; ++d) off += idx[d] / block_total(*this, d) * strides[d];
  int64_t rem[2] = {k % block_total(*this, 0), n % block_total(*this, 1)};
  int64_t mult = 1;
  for (size_t b = blocks.size(); b-- > 0;) {
    const int d = blocks[b].first;
    const int64_t size = blocks[b].second;
    off += rem[d] % size * mult;
    rem[d] /= size;
    mult *= size;
  }
  return off;
}

int64_t BlockedLayout::span() const {
  __int128 s = inner_total(*this);
  for (int d = 0; d < 2; ++d) s += static_cast<__int128>(padded[d] / block_total(*this, d) - 1) * strides[d];
  return s > static_cast<__int128>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(s);
}

void BlockedLayout::validate(const std::string& what, int64_t capacity) const {
  auto bad = [&](const std::string& why) { return Error(ErrorCode::Format, what + ": " + why); };
  if (blocks.size() > kMaxBlocks) throw bad("more than " + std::to_string(kMaxBlocks) + " inner blocks");
  for (const auto& [d, size] : blocks) {
    if (d != 0 && d != 1) throw bad("an inner block names dimension " + std::to_string(d) + " (expected 0 or 1)");
    if (size < 1 || size > kMaxBlock) throw bad("an inner block of size " + std::to_string(size));
  }
  for (int d = 0; d < 2; ++d) {
    if (dims[d] < 1 || dims[d] > kMaxDim || padded[d] < dims[d] || padded[d] > kMaxDim)
      throw bad("dimension " + std::to_string(d) + " is " + std::to_string(dims[d]) + " padded to " +
                std::to_string(padded[d]));
    if (padded[d] % block_total(*this, d) != 0)
      throw bad("padded dimension " + std::to_string(d) + " is not a multiple of its inner blocks");
    if (strides[d] < 0 || strides[d] > kMaxStride) throw bad("stride " + std::to_string(strides[d]) + " out of range");
  }
  // A dense layout spans its padded matrix: also bounds what a reader of the values allocates.
  if (static_cast<__int128>(padded[0]) * padded[1] > capacity)
    throw bad("the padded matrix of " + std::to_string(padded[0]) + "x" + std::to_string(padded[1]) +
              " elements exceeds the stored data (" + std::to_string(capacity) + " elements)");
  const int64_t s = span();
  if (s > capacity)
    throw bad("the layout spans " + std::to_string(s) + " elements, the stored data holds " + std::to_string(capacity));
}

bool BlockedLayout::operator==(const BlockedLayout& o) const {
  for (int d = 0; d < 2; ++d)
    if (dims[d] != o.dims[d] || padded[d] != o.padded[d] || strides[d] != o.strides[d]) return false;
  return blocks == o.blocks;
}

const PackedPiece* PackedWeight::piece(int64_t row0, int64_t rows) const {
  for (const PackedPiece& p : pieces)
    if (p.row0 == row0 && p.rows == rows) return &p;
  return nullptr;
}

float PackedWeight::value(int64_t o, int64_t i) const {
  for (const PackedPiece& p : pieces) {
    if (o < p.row0 || o >= p.row0 + p.rows) continue;
    const int64_t off = p.layout.offset(i, o - p.row0);
    switch (dtype) {
      case DType::F32: return static_cast<const float*>(p.data)[off];
      case DType::F16: return half_to_float(static_cast<const uint16_t*>(p.data)[off]);
      case DType::I8: return static_cast<float>(static_cast<const int8_t*>(p.data)[off]);
      default: break;
    }
    throw Error(ErrorCode::Internal, std::string("packed weight of dtype ") + dtype_name(dtype));
  }
  throw Error(ErrorCode::Internal, "packed weight has no piece for row " + std::to_string(o));
}

void PackedWeight::unpack_rows(int64_t row0, int64_t rows, void* dst) const {
  const size_t es = dtype_size(dtype);
  char* out_bytes = static_cast<char*>(dst);
  for (const PackedPiece& p : pieces) {
    const int64_t lo = std::max(row0, p.row0), hi = std::min(row0 + rows, p.row0 + p.rows);
    if (lo >= hi) continue;
    const char* src = static_cast<const char*>(p.data);
    for (int64_t o = lo; o < hi; ++o) {
      char* row = out_bytes + static_cast<size_t>((o - row0) * in) * es;
      for (int64_t i = 0; i < in; ++i)
        std::memcpy(row + static_cast<size_t>(i) * es, src + static_cast<size_t>(p.layout.offset(i, o - p.row0)) * es, es);
    }
  }
}

bool PackedWeight::rows_view(int64_t row0, int64_t rows, PackedWeight& out) const {
  if (row0 < 0 || rows < 1 || rows > this->out - row0) return false;
  PackedWeight v;
  v.dtype = dtype;
  v.out = rows;
  v.in = in;
  v.isa = isa;
  v.owner = owner;
  const size_t es = dtype_size(dtype);
  for (const PackedPiece& p : pieces) {
    const int64_t lo = std::max(row0, p.row0), hi = std::min(row0 + rows, p.row0 + p.rows);
    if (lo >= hi) continue;
    PackedPiece c = p;
    c.row0 = lo - row0;
    c.rows = hi - lo;
    if (lo != p.row0 || hi != p.row0 + p.rows) {
      // Cut along its rows: only at block boundaries, where an element keeps its place in the block.
      const int64_t step = block_total(p.layout, 1), begin = lo - p.row0, end = hi - p.row0;
      if (begin % step != 0 || (end % step != 0 && end != p.rows)) return false;
      c.layout.dims[1] = end - begin;
      c.layout.padded[1] = (end == p.rows ? p.layout.padded[1] : end) - begin;
      c.data = static_cast<const char*>(p.data) + static_cast<size_t>(begin / step * p.layout.strides[1]) * es;
    }
    v.pieces.push_back(std::move(c));
  }
  if (dtype == DType::I8 && !zero_shift.empty())
    v.zero_shift.assign(zero_shift.begin() + row0, zero_shift.begin() + row0 + rows);
  out = std::move(v);
  return true;
}

PackedWeight PackedWeight::stack(const std::vector<const PackedWeight*>& parts) {
  PackedWeight w;
  if (parts.empty()) return w;
  w.dtype = parts[0]->dtype;
  w.in = parts[0]->in;
  w.isa = parts[0]->isa;
  auto owners = std::make_shared<std::vector<std::shared_ptr<const void>>>();
  const size_t es = dtype_size(w.dtype);
  for (const PackedWeight* part : parts) {
    if (part->dtype != w.dtype || part->in != w.in)
      throw Error(ErrorCode::Internal, "stacking packed weights of different types or input sizes");
    owners->push_back(part->owner);
    w.zero_shift.insert(w.zero_shift.end(), part->zero_shift.begin(), part->zero_shift.end());
    for (PackedPiece p : part->pieces) {
      p.row0 += w.out;
      if (!w.pieces.empty()) {
        PackedPiece& a = w.pieces.back();
        const BlockedLayout &la = a.layout, &lb = p.layout;
        const int64_t step = block_total(la, 1);
        const bool joins = la.dims[0] == lb.dims[0] && la.padded[0] == lb.padded[0] && la.strides[0] == lb.strides[0] &&
                           la.strides[1] == lb.strides[1] && la.blocks == lb.blocks && la.dims[1] == la.padded[1] &&
                           la.dims[1] % step == 0 &&
                           static_cast<const char*>(a.data) + static_cast<size_t>(la.dims[1] / step * la.strides[1]) * es ==
                               static_cast<const char*>(p.data);
        if (joins) {
          a.layout.dims[1] += lb.dims[1];
          a.layout.padded[1] += lb.padded[1];
          a.rows += p.rows;
          continue;
        }
      }
      w.pieces.push_back(std::move(p));
    }
    w.out += part->out;
  }
  if (w.dtype == DType::I8 && static_cast<int64_t>(w.zero_shift.size()) != w.out) w.zero_shift.clear();
  w.owner = std::shared_ptr<const void>(owners, owners.get());
  return w;
}

}  // namespace clipkit
