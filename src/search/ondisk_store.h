// Indexes built by `clipkit index build` for an IVF kind: one faiss index whose inverted lists live
// in a file of their own and are memory-mapped when served (resident memory is the coarse
// quantizer plus the pages queries touch), and a flat file of the exact vectors, memory-mapped
// too, for re-ranking. Read-only: the builder writes them, search, recommend and serve read them.
#pragma once
#include <faiss/IndexIDMap.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace clipkit {
class MappedFile;
}

namespace clipkit::search {

inline constexpr const char* kOnDiskIndexName = "ondisk.faiss";      // the IVF structure and list offsets
inline constexpr const char* kOnDiskListsName = "vectors.ivfdata";   // the inverted lists (codes and ids)
inline constexpr const char* kExactVectorsName = "vectors.f32";      // exact vectors by id

// Opens INDEX_DIR/ondisk.faiss with its lists mapped from the same folder. The inverted lists
// hold the catalog ids themselves, so the returned id map is empty and searches pass labels
// through. Throws Error(Format) naming the file when it is unreadable or holds `ntotal` other than
// `expected_ntotal` vectors of another dim.
std::unique_ptr<faiss::IndexIDMap2> open_ondisk_index(const std::string& dir, int dim, int64_t expected_ntotal);

// Every id an index holds: its id map, or for an on-disk index the ids in its inverted lists.
std::vector<int64_t> stored_ids(const faiss::IndexIDMap2& index);

// The exact vectors of ids first_id .. first_id + count - 1, row by row (float32, unit length).
class ExactVectors {
 public:
  // nullptr when the file is absent; throws Error(Format) naming it when it does not match.
  static std::shared_ptr<const ExactVectors> open_if_present(const std::string& dir, int dim, int64_t count);
  // Writes the header of a file of `count` rows of `dim`; rows follow in id order.
  static std::string header(int dim, int64_t count, int64_t first_id);
  const float* row(int64_t id) const;  // nullptr outside the file's range
  int64_t count() const { return count_; }

 private:
  std::shared_ptr<const MappedFile> file_;
  const float* rows_ = nullptr;
  int dim_ = 0;
  int64_t count_ = 0, first_id_ = 1;
};

}  // namespace clipkit::search
