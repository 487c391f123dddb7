// An 8-bit copy of a flat float32 store, scanned before the exact vectors: recommendations read a
// quarter of the memory per pass and keep their results exact through a bound on each product.
//
// Row x (dimension d) is stored as integers xi in [-127, 127] with a per-row scale s = max|x|/127,
// x̃ = s·xi, together with e = ‖x − x̃‖₂ and ‖x‖₂ (both rounded up). A query q is quantized the
// same way (q̃ = t·qi). Since q·x = q̃·x̃ + q̃·(x − x̃) + (q − q̃)·x, Cauchy-Schwarz gives
//   |q·x − t·s·(qi·xi)| ≤ ‖q̃‖·e + ‖q − q̃‖·‖x‖,
// and qi·xi is an exact integer. `bounds` returns [lo, hi] intervals from this (plus a slack for
// the float arithmetic and for the caller's own rounding) that contain the exact product.
//
// Layout: blocks of 16 rows; in a block, dimensions 4g..4g+3 of the 16 rows are 64 consecutive
// bytes (row r at bytes 4r..4r+3), stored as xi + 128 (unsigned), so that one AVX-512 VNNI
// instruction adds four products to each of 16 rows' sums. Memory: d bytes + 12 bytes per row
// (512 MB + 12 MB for 1 M rows of dimension 512). Blocks live in chunks shared between versions,
// so that appending rows copies at most one chunk.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace clipkit::search {

// Whether this CPU runs the 8-bit scan (AVX-512 VNNI); callers use the float scans otherwise.
bool quantized_scan_available();

class QuantizedRows {
 public:
  static constexpr int kBlockRows = 16;
  static constexpr int64_t kChunkBlocks = 1024;  // 16,384 rows per chunk

  // A query as the scan reads it.
  struct Query {
    std::vector<int32_t> groups;  // 4 signed bytes per group of 4 dimensions
    int32_t bias = 0;             // 128 · Σ qi (the unsigned storage adds it)
    float scale = 0;              // t
    float norm_q = 0;             // ‖q̃‖₂, rounded up
    float err_q = 0;              // ‖q − q̃‖₂, rounded up
  };

  explicit QuantizedRows(int dim);

  int dim() const { return dim_; }
  int64_t size() const { return n_; }
  int64_t blocks() const { return (n_ + kBlockRows - 1) / kBlockRows; }
  const std::vector<int64_t>& ids() const { return *ids_; }

  // A copy of this one with rows (n × dim, row-major) and their ids appended.
  std::shared_ptr<const QuantizedRows> appended(const float* rows, int64_t n, const int64_t* ids) const;

  Query quantize(const float* q) const;

  // For block b and queries qs[0..nq): lo[j·16 + r] ≤ qs[j]·row(16b + r) ≤ hi[j·16 + r], widened
  // by `slack` on each side. Rows past size() read as zero vectors.
  void bounds(int64_t b, const Query* const* qs, int nq, float slack, float* lo, float* hi) const;

  // The largest of the upper bounds `bounds` gives block b for queries qs[0..nq): the maximum of
  // hi[j·16 + r] over j and all 16 rows (rows past size() count as zero vectors, so the result
  // bounds the block's rows from above). Cheaper than `bounds` where a block is mostly ruled out.
  float max_upper(int64_t b, const Query* const* qs, int nq, float slack) const;

  // Bytes held (codes and per-row values).
  int64_t bytes() const;

 private:
  struct Chunk {
    std::vector<uint8_t> codes;  // kChunkBlocks × groups × 64
    std::vector<float> scale, err, norm;  // kChunkBlocks × 16
  };
  int dim_;
  int groups_;
  int64_t n_ = 0;
  std::vector<std::shared_ptr<Chunk>> chunks_;
  std::shared_ptr<const std::vector<int64_t>> ids_;
};

// The 8-bit copy of one flat store, kept in step with it: reused while the store holds the same
// rows, extended when rows were only appended (ids are never reused, so equal ids are equal
// vectors), built again otherwise. Safe to call from parallel reads.
class QuantizedCache {
 public:
  // `xb` (n × dim) and `ids` (n) are the store's rows as they are now; `owner` and `version`
  // identify that state cheaply (the same pair means the same rows).
  std::shared_ptr<const QuantizedRows> get(const void* owner, int64_t version, const float* xb, int64_t n, int dim,
                                           const int64_t* ids);
  void clear();

 private:
  std::mutex mu_;
  std::shared_ptr<const QuantizedRows> rows_;
  const void* owner_ = nullptr;
  int64_t version_ = -1;
};

}  // namespace clipkit::search
