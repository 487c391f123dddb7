// The faiss structure in a vector cache, walked before faiss reads it. faiss 1.7.3 trusts what it
// reads: it throws half-way through a structure it then never frees, allocates whatever a size
// field says, and reads a graph or inverted lists whose entries point outside themselves without
// checking them (out-of-bounds reads at search time). The walk checks every size and count
// against the bytes that remain, and every entry that a search follows, for the kinds clipkit
// builds: flat ("IxFI", "IxF2", "IxFl"), HNSW ("IHNf", "IHNp", "IHN2", "IHNs" over any known
// storage), product quantizer ("IxPq", "IxPo", "IxPQ"), IVF flat ("IwFl") and IVF-PQ ("IwPQ"),
// IVF quantizers of any known kind, array inverted lists ("ilar", full or sparse sizes); and kinds
// of a user's factory string: scalar quantizers ("IxSQ", IVF "IwSq"/"IwSQ", HNSW storage) and
// transforms before a structure ("IxPT": PCA, OPQ and other linear maps, random rotations,
// dimension maps, normalisation, centring).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace clipkit::search {

struct CacheWalk {
  // The fourcc of every structure in the order faiss reads them, e.g. {"IHNf", "IxFI"}.
  std::vector<std::string> kinds;
  // False when the walk met a kind it does not know (the last of `kinds`) and stopped there.
  bool complete = false;
  // Where the walked structure ends (when complete).
  size_t end = 0;
};

// Walks the faiss structure at payload[start..] (`size` payload bytes in all) as faiss's
// read_index will read it: every 8-byte field faiss reads alone obeys the limit BoundedReader
// (vector_store.cpp) enforces, every vector length fits the bytes that remain, every structure
// has dim `dim` and the inner-product metric. Throws Error(Format) "vector cache PATH is corrupt:
// ..." naming the first problem.
CacheWalk walk_cache_structure(const uint8_t* payload, size_t size, size_t start, int dim, const std::string& path);

// Refuses (Error(Format)) a cache header's factory string whose numbers would make faiss build a
// structure far larger than the cache: a number above the payload's size (or 65536), more than 16
// bits per code, a multi-index quantizer of more than 2^20 lists.
void check_factory_sizes(const std::string& factory, uint64_t payload_size, const std::string& path);

}  // namespace clipkit::search
