#include "search/vector_store.h"

#include <faiss/utils/distances.h>

#include <faiss/IVFlib.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <typeinfo>

#include "clipkit/error.h"
#include "core/mapped_file.h"
#include "search/cache_check.h"

namespace clipkit::search {

namespace {

constexpr char kMagic[8] = {'C', 'K', 'V', 'E', 'C', 'I', 'D', 'X'};

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

int pq_subquantizers(int dim) {
  // 8 bytes per 64 dimensions (PQ64 for 512-d), a divisor of dim.
  int m = std::max(1, dim / 8);
  while (m > 1 && dim % m != 0) --m;
  return m;
}

int64_t ivf_nlist(int64_t n) {
  // A power of two near 4*sqrt(n), at least 16, with >= 39 training points per list.
  const double target = 4.0 * std::sqrt(static_cast<double>(std::max<int64_t>(n, 1)));
  int64_t nlist = 16;
  while (nlist * 2 <= target) nlist *= 2;
  while (nlist > 16 && nlist * 39 > n) nlist /= 2;
  return nlist;
}

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  const auto* b = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), b, b + sizeof(T));
}

template <typename T>
T get(const uint8_t*& p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  p += sizeof(T);
  return v;
}

faiss::Index* make_raw(const std::string& factory, int dim) {
  try {
    return faiss::index_factory(dim, factory.c_str(), faiss::METRIC_INNER_PRODUCT);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    // faiss messages carry a multi-line stack context: keep the first line.
    const auto nl = msg.find('\n');
    if (nl != std::string::npos) msg = msg.substr(0, nl);
    throw Error(ErrorCode::InvalidArgument, "index kind '" + factory + "' is not a valid faiss factory string for dim " +
                                                std::to_string(dim) + ": " + msg);
  }
}

constexpr size_t kHeaderFixed = 8 + 4 + 4 + 8 + 8 + 8 + 8 + 4;  // + factory bytes

}  // namespace

std::string check_kind(const std::string& kind_in, int dim) {
  const std::string kind = trim(kind_in);
  if (kind.empty()) throw Error(ErrorCode::InvalidArgument, "index kind is empty (use flat, hnsw, ivfpq or a faiss factory string)");
  if (kind == "flat" || kind == "hnsw" || kind == "ivfpq") return kind;
  if (kind.find("IDMap") != std::string::npos)
    throw Error(ErrorCode::InvalidArgument, "index kind '" + kind + "': leave out IDMap (ids are always mapped)");
  std::unique_ptr<faiss::Index> probe(make_raw(kind, dim));
  return kind;
}

std::string resolve_factory(const std::string& kind, int dim, int64_t n) {
  if (kind == "flat") return "Flat";
  if (kind == "hnsw") return "HNSW32";
  if (kind == "ivfpq") return "IVF" + std::to_string(ivf_nlist(n)) + ",PQ" + std::to_string(pq_subquantizers(dim));
  return kind;
}

bool kind_needs_training(const std::string& kind, int dim) {
  if (kind == "flat" || kind == "hnsw") return false;
  if (kind == "ivfpq") return true;
  std::unique_ptr<faiss::Index> probe(make_raw(kind, dim));
  return !probe->is_trained;
}

int64_t auto_train_min(const std::string& kind, int dim) {
  if (!kind_needs_training(kind, dim)) return 0;
  if (kind == "ivfpq") return 10000;
  std::unique_ptr<faiss::Index> probe(make_raw(kind, dim));
  int64_t nlist = 0;
  if (const faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(probe.get())) nlist = static_cast<int64_t>(ivf->nlist);
  return std::max<int64_t>(39 * nlist, 10000);
}

std::unique_ptr<faiss::IndexIDMap2> make_index(const std::string& factory, int dim) {
  // Exact searches of two or more queries at once go through GEMM (faiss's default waits for 20);
  // clipkit programs answer faiss's GEMM with oneDNN (src/blas/sgemm_override.cpp), which beats
  // one scan per query from 2 queries on.
  faiss::distance_compute_blas_threshold = 2;
  faiss::Index* raw = make_raw(factory, dim);
  // Polysemous codes are only used for Hamming pre-filtering, which we never enable; their
  // training dominates build time, so skip it.
  if (auto* ivfpq = dynamic_cast<faiss::IndexIVFPQ*>(faiss::ivflib::try_extract_index_ivf(raw)))
    ivfpq->do_polysemous_training = false;
  if (auto* pq = dynamic_cast<faiss::IndexPQ*>(raw)) pq->do_polysemous_training = false;
  auto idx = std::make_unique<faiss::IndexIDMap2>(raw);
  idx->own_fields = true;
  return idx;
}

void train_index(faiss::IndexIDMap2& index, const float* data, int64_t n) {
  const int64_t d = index.d;
  int64_t nlist = 0;
  if (const faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(index.index)) nlist = static_cast<int64_t>(ivf->nlist);
  const int64_t cap = 50 * std::max<int64_t>(nlist, 256);
  try {
    if (n <= cap) {
      index.train(n, data);
      return;
    }
    std::vector<float> sample(static_cast<size_t>(cap * d));
    for (int64_t i = 0; i < cap; ++i) {
      const int64_t src = i * n / cap;
      std::memcpy(sample.data() + i * d, data + src * d, static_cast<size_t>(d) * sizeof(float));
    }
    index.train(cap, sample.data());
  } catch (const faiss::FaissException& e) {
    std::string msg = e.what();
    const auto nl = msg.find('\n');
    if (nl != std::string::npos) msg = msg.substr(0, nl);
    throw Error(ErrorCode::Internal, "training the faiss index failed: " + msg);
  }
}

void set_search_params(faiss::IndexIDMap2& index, int64_t fetch, int ef_search, int nprobe) {
  if (auto* h = dynamic_cast<faiss::IndexHNSW*>(index.index)) {
    h->hnsw.efSearch = ef_search > 0 ? ef_search : static_cast<int>(std::max<int64_t>(64, 2 * fetch));
  }
  if (faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(index.index)) {
    size_t p = nprobe > 0 ? static_cast<size_t>(nprobe) : std::max<size_t>(8, ivf->nlist / 16);
    ivf->nprobe = std::min(p, ivf->nlist);
  }
}

bool takes_selector(const faiss::IndexIDMap2& index) {
  return dynamic_cast<const faiss::IndexIVF*>(index.index) || dynamic_cast<const faiss::IndexFlat*>(index.index);
}

bool search_one(const faiss::IndexIDMap2& index, const float* q, int64_t k, int ef_search, int nprobe,
                const faiss::IDSelector* stored, float* distances, faiss::Index::idx_t* labels) {
  const faiss::Index* inner = index.index;
  if (const auto* h = dynamic_cast<const faiss::IndexHNSW*>(inner)) {
    if (stored) return false;
    faiss::SearchParametersHNSW p;
    p.efSearch = ef_search > 0 ? ef_search : static_cast<int>(std::max<int64_t>(64, 2 * k));
    h->search(1, q, k, distances, labels, &p);
  } else if (const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(inner)) {
    faiss::SearchParametersIVF p;
    const size_t probe = nprobe > 0 ? static_cast<size_t>(nprobe) : std::max<size_t>(8, ivf->nlist / 16);
    p.nprobe = std::min(probe, ivf->nlist);
    p.sel = const_cast<faiss::IDSelector*>(stored);
    ivf->search(1, q, k, distances, labels, &p);
  } else if (dynamic_cast<const faiss::IndexFlat*>(inner)) {
    faiss::SearchParameters p;
    p.sel = const_cast<faiss::IDSelector*>(stored);
    inner->search(1, q, k, distances, labels, stored ? &p : nullptr);
  } else {
    if (stored) return false;
    // Parameters that faiss only takes on the structure itself: one search at a time sets them.
    static std::mutex mu;
    std::lock_guard<std::mutex> lock(mu);
    set_search_params(const_cast<faiss::IndexIDMap2&>(index), k, ef_search, nprobe);
    index.search(1, q, k, distances, labels);
    return true;
  }
  if (!index.id_map.empty())
    for (int64_t i = 0; i < k; ++i)
      if (labels[i] >= 0) labels[i] = index.id_map[static_cast<size_t>(labels[i])];
  return true;
}

bool supports_remove(const faiss::IndexIDMap2& index) {
  return dynamic_cast<const faiss::IndexHNSW*>(index.index) == nullptr;
}

uint64_t save_cache(const std::string& path, const faiss::IndexIDMap2& index, const CacheHeader& header) {
  faiss::VectorIOWriter w;
  try {
    faiss::write_index(&index, &w);
  } catch (const faiss::FaissException& e) {
    throw Error(ErrorCode::Internal, std::string("serialising the faiss index failed: ") + e.what());
  }
  std::vector<uint8_t> out;
  out.reserve(kHeaderFixed + header.factory.size() + w.data.size());
  out.insert(out.end(), kMagic, kMagic + 8);
  put<uint32_t>(out, header.version);
  put<uint32_t>(out, header.trained);
  put<int64_t>(out, header.generation);
  put<int64_t>(out, header.ntotal);
  const uint64_t sum = cache_payload_checksum(w.data.data(), w.data.size());
  put<uint64_t>(out, w.data.size());
  put<uint64_t>(out, sum);
  put<uint32_t>(out, static_cast<uint32_t>(header.factory.size()));
  out.insert(out.end(), header.factory.begin(), header.factory.end());
  out.insert(out.end(), w.data.begin(), w.data.end());
  write_file_atomic(path, out.data(), out.size());
  return sum;
}

namespace {
struct Parsed {
  CacheHeader header;
  uint64_t payload_size = 0, sum = 0;
  size_t payload_offset = 0;
};

Parsed parse_header(const std::string& path, const uint8_t* data, size_t size) {
  if (size < kHeaderFixed || std::memcmp(data, kMagic, 8) != 0)
    throw Error(ErrorCode::Format, "vector cache " + path + " is not a clipkit vector file (bad header)");
  const uint8_t* p = data + 8;
  Parsed r;
  r.header.version = get<uint32_t>(p);
  r.header.trained = get<uint32_t>(p);
  r.header.generation = get<int64_t>(p);
  r.header.ntotal = get<int64_t>(p);
  r.payload_size = get<uint64_t>(p);
  r.sum = get<uint64_t>(p);
  const uint32_t flen = get<uint32_t>(p);
  if (r.header.version != 1) throw Error(ErrorCode::Format, "vector cache " + path + " has unsupported version " + std::to_string(r.header.version));
  if (flen > 4096 || kHeaderFixed + flen > size) throw Error(ErrorCode::Format, "vector cache " + path + " is truncated (header)");
  r.header.factory.assign(reinterpret_cast<const char*>(p), flen);
  r.header.checksum = r.sum;
  r.payload_offset = kHeaderFixed + flen;
  return r;
}

// faiss reads each vector's length as one 8-byte value and resizes the vector before reading its
// elements, so a length changed in the file makes it allocate (and zero) whatever it says. Every
// element takes at least one byte, so a genuine length never exceeds the bytes that remain; the
// only other 8-byte values faiss reads alone are counts of the same kind and two fixed 2^20
// placeholders in every index header. This reader refuses larger values before faiss sees them.
class BoundedReader : public faiss::IOReader {
 public:
  BoundedReader(const uint8_t* data, size_t size) : p_(data), n_(size) {}
  size_t operator()(void* ptr, size_t size, size_t nitems) override {
    if (size == 0 || pos_ >= n_) return 0;
    nitems = std::min(nitems, (n_ - pos_) / size);
    if (nitems == 0) return 0;  // (ptr may be null: an empty vector's data)
    std::memcpy(ptr, p_ + pos_, size * nitems);
    pos_ += size * nitems;
    if (size == 8 && nitems == 1) {
      uint64_t v;
      std::memcpy(&v, ptr, 8);
      if (v > std::max<uint64_t>(n_ - pos_, kLargestPlaceholder)) {
        bad_count = v;
        bad_offset = pos_ - 8;
        throw faiss::FaissException("size field out of range");
      }
    }
    return nitems;
  }
  bool at_end() const { return pos_ == n_; }
  uint64_t bad_count = 0;
  size_t bad_offset = 0;

 private:
  static constexpr uint64_t kLargestPlaceholder = uint64_t{1} << 20;
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

// The structure `factory` builds for `dim`, empty, as faiss reads it back from its own file (so
// that its types are those a read gives: an inner-product flat structure comes back as
// IndexFlatIP), and the kinds of that file. faiss parses a factory string with regular
// expressions it compiles on every call (milliseconds), so the last few are kept.
struct Reference {
  std::shared_ptr<const faiss::Index> index;
  std::vector<std::string> kinds;
};

Reference reference_structure(const std::string& factory, int dim, uint64_t payload_size, const std::string& path) {
  check_factory_sizes(factory, payload_size, path);
  static std::mutex mu;
  static std::map<std::pair<std::string, int>, Reference> kept;
  const auto key = std::make_pair(factory, dim);
  {
    std::lock_guard<std::mutex> lock(mu);
    const auto it = kept.find(key);
    if (it != kept.end()) return it->second;
  }
  std::unique_ptr<faiss::IndexIDMap2> empty;
  try {
    empty = make_index(factory, dim);
  } catch (const Error& e) {
    throw Error(ErrorCode::Format, "vector cache " + path + " is corrupt: its header's " + e.what());
  }
  faiss::VectorIOWriter w;
  faiss::write_index(empty->index, &w);
  Reference r;
  r.kinds = walk_cache_structure(w.data.data(), w.data.size(), 0, dim, path).kinds;
  faiss::VectorIOReader rd;
  rd.data = std::move(w.data);
  r.index.reset(faiss::read_index(&rd));
  std::lock_guard<std::mutex> lock(mu);
  if (kept.size() >= 8) kept.clear();
  kept.emplace(key, r);
  return r;
}

std::string joined(const std::vector<std::string>& kinds) {
  std::string out;
  for (const auto& k : kinds) out += (out.empty() ? "" : " over ") + k;
  return out;
}

// Whether `got` (read from the cache) has the types of `want` (what the header's factory builds):
// the structure, an HNSW's storage, an IVF's coarse quantizer.
bool same_types(const faiss::Index* got, const faiss::Index* want) {
  if (!got || !want) return got == want;
  if (typeid(*got) != typeid(*want)) return false;
  if (const auto* h = dynamic_cast<const faiss::IndexHNSW*>(got))
    return same_types(h->storage, dynamic_cast<const faiss::IndexHNSW*>(want)->storage);
  if (const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(got))
    return same_types(ivf->quantizer, dynamic_cast<const faiss::IndexIVF*>(want)->quantizer);
  if (const auto* pt = dynamic_cast<const faiss::IndexPreTransform*>(got)) {
    const auto* w = dynamic_cast<const faiss::IndexPreTransform*>(want);
    if (pt->chain.size() != w->chain.size()) return false;
    for (size_t i = 0; i < pt->chain.size(); ++i)
      if (typeid(*pt->chain[i]) != typeid(*w->chain[i])) return false;
    return same_types(pt->index, w->index);
  }
  return true;
}

}  // namespace

CacheHeader read_cache_header(const std::string& path) {
  auto f = MappedFile::open(path);
  return parse_header(path, f->data(), f->size()).header;
}

std::unique_ptr<faiss::IndexIDMap2> load_cache(const std::string& path, int dim, CacheHeader* header,
                                               const uint64_t* expected_checksum) {
  auto f = MappedFile::open(path);
  const Parsed h = parse_header(path, f->data(), f->size());
  if (h.payload_size > f->size() || h.payload_offset + h.payload_size != f->size())
    throw Error(ErrorCode::Format, "vector cache " + path + " is truncated or has trailing bytes (" + std::to_string(f->size()) +
                                       " bytes, header says " + std::to_string(h.payload_offset + h.payload_size) + ")");
  if (expected_checksum && *expected_checksum != h.sum)
    throw Error(ErrorCode::Format, "vector cache " + path + " is not the one the catalog recorded (changed since it was written)");
  const uint8_t* payload = f->data() + h.payload_offset;
  if (cache_payload_checksum(payload, h.payload_size) != h.sum) throw Error(ErrorCode::Format, "vector cache " + path + " is corrupt (checksum mismatch)");
  // Every vector has its 8-byte id in the payload, and an exact (flat) structure all its floats.
  const uint64_t per_vector = 8 + (h.header.factory == "Flat" ? static_cast<uint64_t>(std::max(dim, 0)) * 4 : 0);
  if (h.header.ntotal < 0 || static_cast<uint64_t>(h.header.ntotal) > h.payload_size / per_vector)
    throw Error(ErrorCode::Format, "vector cache " + path + " claims " + std::to_string(h.header.ntotal) + " vectors of dim " +
                                       std::to_string(dim) + ", more than its " + std::to_string(h.payload_size) +
                                       " payload bytes can hold");
  // The id map is read here rather than by faiss, whose reader trusts its vector count (a count
  // above the stored ids made it index past them): "IxM2", the faiss index header, the wrapped
  // index (read by faiss), then the ids.
  BoundedReader r(payload, static_cast<size_t>(h.payload_size));
  auto corrupt = [&](const std::string& why) {
    return Error(ErrorCode::Format, "vector cache " + path + " is corrupt: " + why);
  };
  auto read_exact = [&](void* dst, size_t bytes) {
    if (r(dst, 1, bytes) != bytes) throw corrupt("the faiss data is truncated");
  };
  auto idmap = std::make_unique<faiss::IndexIDMap2>();
  try {
    char fourcc[4];
    read_exact(fourcc, 4);
    if (std::memcmp(fourcc, "IxM2", 4) != 0)
      throw Error(ErrorCode::Format, "vector cache " + path + " does not hold an id-mapped index");
    int32_t d = 0, metric = 0;
    int64_t ntotal = 0, placeholder = 0;
    uint8_t is_trained = 0;
    read_exact(&d, 4);
    read_exact(&ntotal, 8);
    read_exact(&placeholder, 8);
    read_exact(&placeholder, 8);
    read_exact(&is_trained, 1);
    read_exact(&metric, 4);
    if (d != dim)
      throw Error(ErrorCode::Format, "vector cache " + path + " has dim " + std::to_string(d) + ", the catalog says " + std::to_string(dim));
    if (ntotal != h.header.ntotal) throw Error(ErrorCode::Format, "vector cache " + path + " holds a different vector count than its header");
    if (metric != faiss::METRIC_INNER_PRODUCT) throw corrupt("its metric is not inner product");
    constexpr size_t kIdMapHeader = 4 + 4 + 8 + 8 + 8 + 1 + 4;  // the fields read above
    // The wrapped structure is walked completely before faiss reads it (faiss throws half-way
    // through a structure it then never frees, and trusts the sizes and links it reads), and it
    // must be what the header's factory string builds.
    const Reference want = reference_structure(h.header.factory, dim, h.payload_size, path);
    const CacheWalk walk = walk_cache_structure(payload, static_cast<size_t>(h.payload_size), kIdMapHeader, dim, path);
    const bool prefix = walk.kinds.size() <= want.kinds.size() && std::equal(walk.kinds.begin(), walk.kinds.end(), want.kinds.begin());
    if (!prefix || (walk.complete && walk.kinds.size() != want.kinds.size()))
      throw corrupt("it holds " + joined(walk.kinds) + " where its header's index kind '" + h.header.factory + "' builds " +
                    joined(want.kinds));
    // (a kind the walk does not know, from a factory string of the user's, is read by faiss
    // alone, its size fields bounded by the reader)
    faiss::Index* inner = faiss::read_index(&r);
    idmap->index = inner;
    idmap->own_fields = true;
    if (inner->d != dim || inner->ntotal != ntotal) throw corrupt("the wrapped index disagrees with the id map's header");
    if (!same_types(inner, want.index.get()))
      throw corrupt("faiss read a structure of another type than its header's index kind '" + h.header.factory + "' builds");
    uint64_t count = 0;
    read_exact(&count, 8);
    if (count != static_cast<uint64_t>(ntotal)) throw corrupt("it stores " + std::to_string(count) + " ids for " + std::to_string(ntotal) + " vectors");
    idmap->id_map.resize(static_cast<size_t>(count));
    read_exact(idmap->id_map.data(), static_cast<size_t>(count) * 8);
    if (!r.at_end()) throw corrupt("it has bytes after the id map");
    idmap->d = d;
    idmap->ntotal = ntotal;
    idmap->is_trained = is_trained != 0;
    idmap->metric_type = faiss::METRIC_INNER_PRODUCT;
    idmap->construct_rev_map();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    if (r.bad_count)
      throw Error(ErrorCode::Format, "vector cache " + path + " is corrupt: a faiss size field at payload byte " +
                                         std::to_string(r.bad_offset) + " says " + std::to_string(r.bad_count) +
                                         ", more than the file holds");
    std::string msg = e.what();
    const auto nl = msg.find('\n');
    if (nl != std::string::npos) msg = msg.substr(0, nl);
    throw Error(ErrorCode::Format, "vector cache " + path + " cannot be read by faiss: " + msg);
  }
  if (header) *header = h.header;
  return idmap;
}

uint64_t cache_payload_checksum(const uint8_t* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001B3ull;
    h ^= h >> 29;
  }
  for (; i < n; ++i) h = (h ^ p[i]) * 0x100000001B3ull;
  return h;
}


}  // namespace clipkit::search
