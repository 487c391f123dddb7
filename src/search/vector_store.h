// The faiss side of an index: kinds, factory strings, training, (de)serialisation of the cache.
#pragma once
#include <faiss/IndexIDMap.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace clipkit::search {

// Validates a kind ("flat", "hnsw", "ivfpq" or a faiss factory string) for `dim`; returns it
// trimmed. Throws Error(InvalidArgument) naming the kind and faiss's complaint.
std::string check_kind(const std::string& kind, int dim);

// The factory string for `kind` once `n` vectors are there (ivfpq is sized from n).
std::string resolve_factory(const std::string& kind, int dim, int64_t n);
// Whether the kind needs training; the automatic number of vectors to train with.
bool kind_needs_training(const std::string& kind, int dim);
int64_t auto_train_min(const std::string& kind, int dim);

// An inner-product faiss index for `factory`, wrapped in an IndexIDMap2.
std::unique_ptr<faiss::IndexIDMap2> make_index(const std::string& factory, int dim);
// Trains on `n` vectors (subsampled evenly to what the quantizers need).
void train_index(faiss::IndexIDMap2& index, const float* data, int64_t n);
// Sets efSearch / nprobe for a query that needs `fetch` results (0 = automatic).
void set_search_params(faiss::IndexIDMap2& index, int64_t fetch, int ef_search, int nprobe);
// Searches for `k` neighbours of one query with the parameters given per call (efSearch for HNSW,
// nprobe for IVF; 0 = automatic as set_search_params), so that several threads may search one
// structure at once. `stored` (optional) restricts the search to the vectors it selects, named as
// the wrapped structure names them (positions in the id map; catalog ids for an on-disk build):
// faiss's ID selector, which IVF and flat structures honour while they scan. Labels come back as
// catalog ids, -1 past the results. Returns false, searching nothing, when a selector is given
// for a structure that cannot take one (HNSW, or one with a transform in front).
bool search_one(const faiss::IndexIDMap2& index, const float* q, int64_t k, int ef_search, int nprobe,
                const faiss::IDSelector* stored, float* distances, faiss::Index::idx_t* labels);
// Whether search_one can restrict `index` by a selector.
bool takes_selector(const faiss::IndexIDMap2& index);
// Whether remove_ids works for the wrapped structure (HNSW does not).
bool supports_remove(const faiss::IndexIDMap2& index);

// Cache file: magic, version, trained flag, catalog generation, vector count, payload checksum.
struct CacheHeader {
  uint32_t version = 1;
  uint32_t trained = 0;  // 1 when it holds the requested (trained) kind, 0 when staged flat
  int64_t generation = 0;
  int64_t ntotal = 0;
  std::string factory;   // factory string the structure was built from
  uint64_t checksum = 0; // of the faiss payload (read back from the file; set by save_cache)
};
// Writes the cache atomically and returns its payload checksum (the catalog keeps it, so that a
// cache changed behind its back is rebuilt instead of being read).
uint64_t save_cache(const std::string& path, const faiss::IndexIDMap2& index, const CacheHeader& header);
// Throws Error(Format) naming the file and what is wrong: a bad header, a checksum mismatch, a
// payload checksum other than `expected_checksum` (when given), a vector count the payload cannot
// hold, or a faiss structure whose sizes do not fit the file. Nothing is allocated from a size
// field before it is checked against the bytes that remain.
std::unique_ptr<faiss::IndexIDMap2> load_cache(const std::string& path, int dim, CacheHeader* header,
                                               const uint64_t* expected_checksum = nullptr);
// Reads only the header (for verify); throws Error(Format/NotFound).
CacheHeader read_cache_header(const std::string& path);

// Where the cache file keeps each header field: magic 8 bytes, version 4, trained 4, generation 8,
// ntotal 8, payload size 8, payload checksum 8, factory length 4, then the factory and the payload.
namespace cache_layout {
constexpr size_t kNtotal = 24, kPayloadSize = 32, kChecksum = 40, kFactoryLength = 48, kFixed = 52;
}
// The checksum stored in the header, over the faiss payload's bytes.
uint64_t cache_payload_checksum(const uint8_t* p, size_t n);

}  // namespace clipkit::search
