// Weight matrices stored in a GEMM kernel's blocked layout (`clipkit convert` writes them so that a
// load uses the bytes in place instead of repacking them; src/io/packed_weights.h is the file side).
//
// A linear layer's weight W [out, in] (PyTorch layout) is fed to the kernel as the [in, out] matrix
// Wᵀ. Its packed form is one or more pieces, each holding the rows [row0, row0 + rows) of W as the
// [in, rows] matrix in a blocked layout: oneDNN's description of such a layout (outer strides of
// the two dimensions and a list of dense inner blocks, outermost first), which is all any reader
// needs to find an element. Nothing here depends on oneDNN; the kernels compare a stored layout
// with the one they would choose themselves and use the bytes only when the two are equal.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace clipkit {

struct BlockedLayout {
  int64_t dims[2] = {0, 0};     // [in, rows]
  int64_t padded[2] = {0, 0};   // each a multiple of its dimension's inner blocks, >= dims
  int64_t strides[2] = {0, 0};  // elements between consecutive outer blocks of each dimension
  std::vector<std::pair<int, int64_t>> blocks;  // (dimension 0 or 1, size), outermost first

  // Element offset of logical [k, n] (k < dims[0], n < dims[1]).
  int64_t offset(int64_t k, int64_t n) const;
  // Elements the layout spans (largest offset of the padded matrix + 1).
  int64_t span() const;
  // Throws Error(Format) starting with `what` unless the layout is well formed and spans at most
  // `capacity` elements; sizes are bounded so that no offset overflows.
  void validate(const std::string& what, int64_t capacity) const;
  bool operator==(const BlockedLayout& o) const;
  bool operator!=(const BlockedLayout& o) const { return !(*this == o); }
};

struct PackedPiece {
  int64_t row0 = 0, rows = 0;
  BlockedLayout layout;
  const void* data = nullptr;  // layout.span() elements of the weight's element type
};

// A whole weight [out, in...] (trailing axes flattened into `in`) as pieces covering its rows in
// order, without gaps or overlaps. Element types: F32, F16 (a float layout holding halves) or I8.
struct PackedWeight {
  DType dtype = DType::F32;
  int64_t out = 0, in = 0;
  std::vector<PackedPiece> pieces;
  // Int8: 128 · scale[o] · Σ_i q[o, i] per output row, as the kernels' u8 activations need it
  // (stored, so that a load does not read every weight to sum it); empty otherwise.
  std::vector<float> zero_shift;
  std::string isa;                     // the CPU features the kernels that chose the layout use
  std::shared_ptr<const void> owner;   // keeps the pieces' data alive

  // The piece covering exactly [row0, row0 + rows), or nullptr.
  const PackedPiece* piece(int64_t row0, int64_t rows) const;
  // Element [o, i] as float (I8: the stored integer, unscaled).
  float value(int64_t o, int64_t i) const;
  // Rows [row0, row0 + rows) as plain [rows, in] values of the element type (F32 floats, F16
  // halves, I8 bytes), written to `dst` (rows · in · element size bytes).
  void unpack_rows(int64_t row0, int64_t rows, void* dst) const;
  // Rows [row0, row0 + rows) as a weight of their own whose pieces point into this one's data
  // (same owner); false when a piece would have to be cut other than at a boundary of its row
  // blocks.
  bool rows_view(int64_t row0, int64_t rows, PackedWeight& out) const;
  // Weights of one element type and input size stacked by rows (parts[0]'s first): their pieces
  // one after the other, and pieces that follow each other in memory in one blocked layout (the
  // views rows_view made of one weight, stored in order) joined into one. The result keeps every
  // part's data alive.
  static PackedWeight stack(const std::vector<const PackedWeight*>& parts);
};

}  // namespace clipkit
