#include "search/cache_check.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "clipkit/error.h"

namespace clipkit::search {

namespace {

// faiss's METRIC_INNER_PRODUCT; clipkit builds every structure with it.
constexpr int32_t kInnerProduct = 0;
// BoundedReader's limit for an 8-byte field faiss reads alone: the bytes that remain after it, or
// the placeholders every index header carries (2^20).
constexpr uint64_t kLargestPlaceholder = uint64_t{1} << 20;
// The distance table faiss builds for an HNSW over a product quantizer: 256 MB of floats at most.
constexpr uint64_t kLargestTable = uint64_t{64} << 20;

struct Info {
  int32_t d = 0;
  int64_t ntotal = 0;
  bool trained = false;
};

class Walker {
 public:
  Walker(const uint8_t* p, size_t n, size_t start, int dim, const std::string& path)
      : p_(p), n_(n), pos_(start), dim_(dim), path_(path) {}

  // Walks one structure; false when its kind is unknown.
  bool index(Info& info, std::vector<std::string>& kinds) {
    const std::string k(reinterpret_cast<const char*>(take(4)), 4);
    kinds.push_back(k);
    if (k == "IxFI" || k == "IxF2" || k == "IxFl") {
      info = header();
      flat(info);
      return true;
    }
    if (k == "IHNf" || k == "IHNp" || k == "IHN2" || k == "IHNs") return hnsw(k, info, kinds);
    if (k == "IxPq" || k == "IxPo" || k == "IxPQ") {
      info = header();
      pq_index(k, info);
      return true;
    }
    if (k == "IwFl" || k == "IwPQ" || k == "IwSq" || k == "IwSQ") return ivf(k, info, kinds);
    if (k == "IxSQ") {
      info = header();
      const uint64_t code_size = sq(info.trained);
      const uint64_t codes = length(1);
      take(static_cast<size_t>(codes));
      require(codes == code_size * static_cast<uint64_t>(info.ntotal), "a scalar quantizer stores " + std::to_string(codes) +
                                                                           " code bytes for " + std::to_string(info.ntotal) + " vectors");
      return true;
    }
    if (k == "IxPT") return pretransform(info, kinds);
    return false;
  }
  size_t pos() const { return pos_; }

 private:
  Error corrupt(const std::string& why) const { return Error(ErrorCode::Format, "vector cache " + path_ + " is corrupt: " + why); }
  void require(bool ok, const std::string& why) const {
    if (!ok) throw corrupt(why);
  }
  size_t left() const { return n_ - pos_; }
  const uint8_t* take(size_t bytes) {
    if (left() < bytes) throw corrupt("the faiss data is truncated");
    const uint8_t* at = p_ + pos_;
    pos_ += bytes;
    return at;
  }
  template <typename T>
  T raw() {
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));
    return v;
  }
  // An 8-byte field faiss reads alone, within the limit its reader enforces.
  uint64_t u64() {
    const uint64_t v = raw<uint64_t>();
    if (v > std::max<uint64_t>(left(), kLargestPlaceholder))
      throw corrupt("a faiss size field at payload byte " + std::to_string(pos_ - 8) + " says " + std::to_string(v) +
                    ", more than the file holds");
    return v;
  }
  bool flag(const char* what) {
    const uint8_t b = raw<uint8_t>();
    require(b <= 1, std::string(what) + " flag is " + std::to_string(b));
    return b != 0;
  }
  // A vector's length (elements of `element` bytes), which must fit in the bytes that remain.
  uint64_t length(size_t element) {
    const uint64_t count = u64();
    if (count > left() / element)
      throw corrupt("a faiss size field at payload byte " + std::to_string(pos_ - 8) + " says " + std::to_string(count) +
                    ", more than the file holds");
    return count;
  }
  template <typename T>
  std::vector<T> vec() {
    const uint64_t count = length(sizeof(T));
    std::vector<T> out(static_cast<size_t>(count));
    if (count) std::memcpy(out.data(), take(static_cast<size_t>(count) * sizeof(T)), static_cast<size_t>(count) * sizeof(T));
    return out;
  }
  // A fixed count of records that must fit: `count` x `element` bytes.
  const uint8_t* records(uint64_t count, uint64_t element) {
    if (element != 0 && count > left() / element) throw corrupt("the faiss data is truncated");
    return take(static_cast<size_t>(count * element));
  }

  Info header() {
    Info i;
    i.d = raw<int32_t>();
    i.ntotal = static_cast<int64_t>(u64());
    u64();  // two counts faiss no longer uses
    u64();
    i.trained = flag("a structure's trained");
    const int32_t metric = raw<int32_t>();
    if (metric > 1) take(4);  // the metric's argument
    require(i.d == dim_ && i.d > 0, "a structure has dim " + std::to_string(i.d) + ", the catalog says " + std::to_string(dim_));
    require(metric == kInnerProduct, "a structure's metric is not inner product");
    require(i.trained || i.ntotal == 0, "an untrained structure holds " + std::to_string(i.ntotal) + " vectors");
    return i;
  }

  void flat(const Info& i) {
    const uint64_t floats = length(4);
    take(static_cast<size_t>(floats) * 4);
    require(floats % static_cast<uint64_t>(i.d) == 0 && floats / static_cast<uint64_t>(i.d) == static_cast<uint64_t>(i.ntotal),
            "a flat structure stores " + std::to_string(floats) + " floats for " + std::to_string(i.ntotal) + " vectors of dim " +
                std::to_string(i.d));
  }

  // The product quantizer's fields; returns its code size in bytes.
  struct Pq {
    uint64_t m = 0, nbits = 0, code_size = 0;
  };
  Pq pq(bool trained) {
    // d, M and nbits are checked together (faiss divides by M and shifts by nbits before reading on).
    const uint64_t d = raw<uint64_t>(), m = raw<uint64_t>(), nbits = raw<uint64_t>();
    const uint64_t centroids = raw<uint64_t>();
    const bool sizes_ok = d == static_cast<uint64_t>(dim_) && m != 0 && m <= d && d % m == 0 && nbits != 0 && nbits <= 16;
    if (!sizes_ok || (centroids != (d << nbits) && (trained || centroids != 0)))
      throw corrupt("its product quantizer's sizes disagree (d " + std::to_string(d) + ", M " + std::to_string(m) + ", " +
                    std::to_string(nbits) + " bits, " + std::to_string(centroids) + " centroid values)");
    pos_ -= 8;
    take(static_cast<size_t>(length(4)) * 4);
    last_pq_ = {m, nbits, (m * nbits + 7) / 8};
    return last_pq_;
  }

  void pq_index(const std::string& k, const Info& i) {
    const Pq q = pq(i.trained);
    const uint64_t codes = length(1);
    take(static_cast<size_t>(codes));
    require(codes % q.code_size == 0 && codes / q.code_size == static_cast<uint64_t>(i.ntotal),
            "a product quantizer stores " + std::to_string(codes) + " code bytes for " + std::to_string(i.ntotal) + " vectors");
    if (k != "IxPQ") {
      // search_type (only plain PQ distances: the others need tables faiss does not store),
      // encode_signs, polysemous_ht
      const int32_t search_type = raw<int32_t>();
      require(search_type == 0, "a product quantizer's search type is " + std::to_string(search_type));
      flag("a product quantizer's sign");
      take(4);
    }
  }

  // The scalar quantizer's fields; returns its code size in bytes. Its trained values are the
  // ranges a search decodes with (one pair per dimension, or one shared pair): a shorter list
  // would be read past its end.
  uint64_t sq(bool trained) {
    const int32_t qtype = raw<int32_t>();
    take(4 + 4);  // how its ranges were chosen, and that rule's argument (training only)
    const uint64_t d = raw<uint64_t>(), code_size = raw<uint64_t>();
    const uint64_t values = length(4);
    take(static_cast<size_t>(values) * 4);
    require(d == static_cast<uint64_t>(dim_), "its scalar quantizer has dim " + std::to_string(d) + ", its structure " + std::to_string(dim_));
    uint64_t code = 0, ranges = 0;
    switch (qtype) {
      case 0: code = d, ranges = 2 * d; break;            // 8 bits, a range per dimension
      case 1: code = (d + 1) / 2, ranges = 2 * d; break;  // 4 bits
      case 2: code = d, ranges = 2; break;                // 8 bits, one range
      case 3: code = (d + 1) / 2, ranges = 2; break;      // 4 bits, one range
      case 4: code = 2 * d; break;                        // float16
      case 5: code = d; break;                            // bytes as they are
      case 6: code = (d * 6 + 7) / 8, ranges = 2 * d; break;  // 6 bits
      default: throw corrupt("its scalar quantizer has type " + std::to_string(qtype));
    }
    require(code_size == code, "its scalar quantizer of type " + std::to_string(qtype) + " has " + std::to_string(code_size) +
                                   "-byte codes, not " + std::to_string(code));
    require(values == ranges || (!trained && values == 0), "its scalar quantizer of type " + std::to_string(qtype) + " holds " +
                                                               std::to_string(values) + " trained values, not " + std::to_string(ranges));
    return code;
  }

  // A chain of vector transforms before a structure of the last one's output dimension.
  bool pretransform(Info& info, std::vector<std::string>& kinds) {
    info = header();
    const int32_t count = raw<int32_t>();
    require(count >= 1 && count <= 16, "a structure has " + std::to_string(count) + " transforms before it");
    int d = dim_;
    for (int32_t t = 0; t < count; ++t) {
      const std::string k(reinterpret_cast<const char*>(take(4)), 4);
      kinds.push_back(k);
      if (!transform(k, d, info.trained)) return false;
    }
    const int outer = dim_;
    dim_ = d;
    Info inner;
    const bool known = index(inner, kinds);
    dim_ = outer;
    if (!known) return false;
    require(inner.ntotal == info.ntotal && (inner.trained || !info.trained),
            "a transformed structure holds " + std::to_string(inner.ntotal) + " vectors for " + std::to_string(info.ntotal));
    return true;
  }

  // One vector transform from `d` dimensions (updated to its output's); false for a kind the
  // walk does not know. A search applies it to the query: its matrix (d_out x d_in, faiss checks
  // the sizes before it has read the dimensions), bias, dimension map or mean must be whole.
  bool transform(const std::string& k, int& d, bool trained_index) {
    const bool pca = k == "PCAm" || k == "PcAm" || k == "Pcam";
    const bool linear = pca || k == "rrot" || k == "Viqm" || k == "LTra";
    bool bias = false;
    uint64_t matrix = 0, biases = 0, mean = 0, map = 0;
    const uint8_t* entries = nullptr;
    if (linear) {
      if (pca) {
        take(4);                   // eigen_power
        if (k == "Pcam") take(4);  // epsilon
        flag("a PCA's random rotation");
        if (k != "PCAm") take(4);  // balanced_bins
        for (int v = 0; v < 3; ++v) take(static_cast<size_t>(length(4)) * 4);  // mean, eigenvalues, the full matrix
      } else if (k == "Viqm") {
        take(4 + 4);  // max_iter, seed
      }
      bias = flag("a linear transform's bias");
      matrix = length(4);
      take(static_cast<size_t>(matrix) * 4);
      biases = length(4);
      take(static_cast<size_t>(biases) * 4);
    } else if (k == "RmDT") {
      map = length(4);
      entries = take(static_cast<size_t>(map) * 4);
    } else if (k == "VNrm") {
      take(4);  // the norm
    } else if (k == "VCnt") {
      mean = length(4);
      take(static_cast<size_t>(mean) * 4);
    } else {
      return false;
    }
    const int32_t d_in = raw<int32_t>(), d_out = raw<int32_t>();
    const bool trained = flag("a transform's trained");
    const std::string what = "its " + k + " transform of " + std::to_string(d_in) + " to " + std::to_string(d_out) + " dimensions ";
    require(d_in == d && d_out >= 1 && d_out <= 65536, what + "follows " + std::to_string(d) + " dimensions");
    require(trained || !trained_index, what + "is not trained");
    const uint64_t in = static_cast<uint64_t>(d_in), out = static_cast<uint64_t>(d_out);
    if (linear && trained)
      require(matrix == in * out && (!bias || biases == out),
              what + "holds " + std::to_string(matrix) + " matrix values and " + std::to_string(biases) + " biases");
    if (k == "RmDT") {
      require(map == out, what + "maps " + std::to_string(map) + " dimensions");
      for (uint64_t j = 0; j < map; ++j) {
        int32_t v;
        std::memcpy(&v, entries + j * 4, 4);
        if (v < -1 || v >= d_in) throw corrupt(what + "maps to dimension " + std::to_string(v));
      }
    }
    if (k == "VNrm" || k == "VCnt") require(d_out == d_in, what + "changes the dimension");
    if (k == "VCnt" && trained) require(mean == in, what + "has a mean of " + std::to_string(mean) + " values");
    d = d_out;
    return true;
  }

  bool hnsw(const std::string& k, Info& info, std::vector<std::string>& kinds) {
    info = header();
    const uint64_t n = static_cast<uint64_t>(info.ntotal);
    const uint64_t probas = length(8);
    take(static_cast<size_t>(probas) * 8);
    const std::vector<int32_t> cum = vec<int32_t>();
    const std::vector<int32_t> levels = vec<int32_t>();
    const std::vector<uint64_t> offsets = vec<uint64_t>();
    const uint64_t nb = length(4);
    const uint8_t* neighbours = take(static_cast<size_t>(nb) * 4);
    const int32_t entry = raw<int32_t>(), max_level = raw<int32_t>(), ef_construction = raw<int32_t>(), ef_search = raw<int32_t>();
    const int32_t upper_beam = raw<int32_t>();
    // The graph: levels[i] levels for node i, whose neighbour lists take offsets[i] ..
    // offsets[i + 1], cum[l] .. cum[l + 1] of it at level l; every neighbour (or -1) a node that
    // has that level; the entry point a node of the top level.
    auto graph = [&](bool ok, const std::string& why) { require(ok, "its HNSW graph " + why); };
    graph(probas >= 1 && cum.size() == probas + 1 && cum[0] == 0, "has " + std::to_string(cum.size()) + " level sizes for " +
                                                                     std::to_string(probas) + " level probabilities");
    for (size_t l = 1; l < cum.size(); ++l)
      if (cum[l] < cum[l - 1]) graph(false, "has decreasing level sizes");
    graph(levels.size() == n && offsets.size() == n + 1 && offsets[0] == 0,
          "has " + std::to_string(levels.size()) + " levels and " + std::to_string(offsets.size()) + " offsets for " +
              std::to_string(n) + " vectors");
    // (the messages are only made for a failed check: these loops run over every node and link)
    for (uint64_t i = 0; i < n; ++i) {
      if (levels[i] < 1 || static_cast<size_t>(levels[i]) >= cum.size())
        graph(false, "gives node " + std::to_string(i) + " " + std::to_string(levels[i]) + " levels");
      if (offsets[i + 1] < offsets[i] || offsets[i + 1] - offsets[i] != static_cast<uint64_t>(cum[static_cast<size_t>(levels[i])]))
        graph(false, "has a wrong neighbour offset for node " + std::to_string(i));
    }
    graph(offsets[n] == nb, "has " + std::to_string(nb) + " neighbour entries where its offsets need " + std::to_string(offsets[n]));
    for (uint64_t i = 0; i < n; ++i)
      for (int32_t l = 0; l < levels[i]; ++l)
        for (uint64_t j = offsets[i] + static_cast<uint64_t>(cum[static_cast<size_t>(l)]);
             j < offsets[i] + static_cast<uint64_t>(cum[static_cast<size_t>(l) + 1]); ++j) {
          int32_t v;
          std::memcpy(&v, neighbours + j * 4, 4);
          if (v != -1 && (v < 0 || static_cast<uint64_t>(v) >= n || levels[static_cast<size_t>(v)] <= l))
            graph(false, "links node " + std::to_string(i) + " to " + std::to_string(v) + " at level " + std::to_string(l));
        }
    if (n == 0)
      graph(entry == -1, "of no node has an entry point");
    else
      graph(entry >= 0 && static_cast<uint64_t>(entry) < n && max_level >= 0 && max_level < levels[static_cast<size_t>(entry)],
            "has entry point " + std::to_string(entry) + " at level " + std::to_string(max_level));
    // (faiss searches the upper levels with a beam of upper_beam entries: 1 unless changed, which
    // clipkit never does; a large one, or a large stored efSearch, which faiss 1.7.3 sizes a
    // search's heap by even when the call gives its own, makes every search allocate that many)
    graph(ef_construction >= 1 && ef_construction <= (1 << 16) && ef_search >= 1 && ef_search <= (1 << 16) && upper_beam == 1,
          "has efConstruction " + std::to_string(ef_construction) + ", efSearch " + std::to_string(ef_search) + ", upper beam " +
              std::to_string(upper_beam));
    // the storage
    const size_t at = kinds.size();
    Info s;
    const bool known = index(s, kinds);
    const std::string& sk = kinds[at];
    if (k == "IHNp" && sk != "IxPq" && sk != "IxPo" && sk != "IxPQ")
      throw corrupt("an HNSW structure over a product quantizer stores something else");
    if (!known) return false;
    require(s.ntotal == info.ntotal, "an HNSW graph of " + std::to_string(n) + " nodes over a storage of " + std::to_string(s.ntotal) +
                                         " vectors");
    if (k == "IHNp") {
      // faiss builds the quantizer's symmetric distance table (M x 2^nbits x 2^nbits floats) on reading.
      const uint64_t m = last_pq_.m, nbits = last_pq_.nbits;
      if (m > (kLargestTable >> (2 * nbits)))
        throw corrupt("its product quantizer's distance table (" + std::to_string(m) + " x " + std::to_string(uint64_t{1} << nbits) +
                      "^2 floats) is larger than 256 MB");
    }
    return true;
  }

  bool ivf(const std::string& k, Info& info, std::vector<std::string>& kinds) {
    info = header();
    const uint64_t nlist = u64();
    u64();  // nprobe (each search sets its own)
    require(nlist >= 1, "an IVF structure has no lists");
    Info q;
    if (!index(q, kinds)) return false;
    require(!info.trained || static_cast<uint64_t>(q.ntotal) == nlist,
            "an IVF structure of " + std::to_string(nlist) + " lists has a quantizer of " + std::to_string(q.ntotal) + " centroids");
    // the direct map (clipkit keeps none)
    const uint8_t map_type = raw<uint8_t>();
    const uint64_t map = length(8);
    take(static_cast<size_t>(map) * 8);
    require(map_type == 0 && map == 0, "an IVF structure has a direct map of type " + std::to_string(map_type));
    uint64_t code_size = static_cast<uint64_t>(info.d) * 4;
    if (k == "IwPQ") {
      flag("an IVF-PQ structure's residual");
      code_size = u64();
      const Pq p = pq(info.trained);
      require(code_size == p.code_size, "an IVF-PQ structure's code size " + std::to_string(code_size) + " is not its quantizer's " +
                                            std::to_string(p.code_size));
    } else if (k == "IwSq" || k == "IwSQ") {
      const uint64_t sq_code = sq(info.trained);
      code_size = u64();
      require(code_size == sq_code, "an IVF scalar quantizer structure's code size " + std::to_string(code_size) +
                                        " is not its quantizer's " + std::to_string(sq_code));
      if (k == "IwSq") flag("an IVF scalar quantizer structure's residual");
    }
    // the inverted lists
    const std::string lists(reinterpret_cast<const char*>(take(4)), 4);
    require(lists == "ilar", "an IVF structure's inverted lists are not stored in it ('" + lists + "')");
    const uint64_t nlist2 = u64(), code_size2 = u64();
    require(nlist2 == nlist && code_size2 == code_size, "an IVF structure's inverted lists have " + std::to_string(nlist2) +
                                                            " lists of " + std::to_string(code_size2) + "-byte codes");
    std::vector<uint64_t> sizes;
    const std::string kind(reinterpret_cast<const char*>(take(4)), 4);
    if (kind == "full") {
      sizes = vec<uint64_t>();
      require(sizes.size() == nlist, "an IVF structure stores " + std::to_string(sizes.size()) + " list sizes for " +
                                         std::to_string(nlist) + " lists");
    } else if (kind == "sprs") {
      const std::vector<uint64_t> pairs = vec<uint64_t>();
      require(pairs.size() % 2 == 0, "an IVF structure's sparse list sizes are not pairs");
      sizes.assign(static_cast<size_t>(nlist), 0);
      for (size_t j = 0; j < pairs.size(); j += 2) {
        if (pairs[j] >= nlist) throw corrupt("an IVF structure gives a size to list " + std::to_string(pairs[j]));
        sizes[static_cast<size_t>(pairs[j])] = pairs[j + 1];
      }
    } else {
      throw corrupt("an IVF structure's list sizes have an unknown layout ('" + kind + "')");
    }
    uint64_t total = 0;
    for (uint64_t s : sizes) {
      if (s == 0) continue;
      if (s > left() / (code_size + 8)) throw corrupt("an IVF list of " + std::to_string(s) + " entries is longer than the file");
      records(s, code_size);
      const uint8_t* ids = records(s, 8);
      for (uint64_t j = 0; j < s; ++j) {
        int64_t id;
        std::memcpy(&id, ids + j * 8, 8);
        if (id < 0 || id >= info.ntotal)
          throw corrupt("an IVF list holds entry " + std::to_string(id) + " of " + std::to_string(info.ntotal));
      }
      total += s;
    }
    require(total == static_cast<uint64_t>(info.ntotal), "its IVF lists hold " + std::to_string(total) + " entries for " +
                                                             std::to_string(info.ntotal) + " vectors");
    return true;
  }

  const uint8_t* p_;
  size_t n_;
  size_t pos_;
  int dim_;
  const std::string& path_;
  Pq last_pq_;  // the product quantizer walked last
};

}  // namespace

CacheWalk walk_cache_structure(const uint8_t* payload, size_t size, size_t start, int dim, const std::string& path) {
  Walker w(payload, size, start, dim, path);
  CacheWalk out;
  Info info;
  out.complete = w.index(info, out.kinds);
  if (out.complete) out.end = w.pos();
  return out;
}

void check_factory_sizes(const std::string& factory, uint64_t payload_size, const std::string& path) {
  auto refuse = [&](const std::string& why) {
    return Error(ErrorCode::Format, "vector cache " + path + " is corrupt: its header's index kind '" + factory + "' " + why);
  };
  const uint64_t largest = std::max<uint64_t>(payload_size, 65536);
  for (size_t i = 0; i < factory.size();) {
    if (!std::isdigit(static_cast<unsigned char>(factory[i]))) {
      ++i;
      continue;
    }
    size_t j = i;
    uint64_t v = 0;
    while (j < factory.size() && std::isdigit(static_cast<unsigned char>(factory[j]))) {
      if (v <= largest) v = v * 10 + static_cast<uint64_t>(factory[j] - '0');
      ++j;
    }
    if (v > largest) throw refuse("names a size (" + factory.substr(i, j - i) + ") larger than the cache");
    if (i > 0 && factory[i - 1] == 'x' && v > 16) throw refuse("asks for codes of " + std::to_string(v) + " bits");
    // a multi-index quantizer: IMI<M>x<bits> makes 2^(M*bits) lists
    if (i >= 3 && factory.compare(i - 3, 3, "IMI") == 0 && j < factory.size() && factory[j] == 'x') {
      uint64_t bits = 0;
      for (size_t t = j + 1; t < factory.size() && std::isdigit(static_cast<unsigned char>(factory[t])) && bits <= 64; ++t)
        bits = bits * 10 + static_cast<uint64_t>(factory[t] - '0');
      if (v * bits > 20) throw refuse("makes more than 2^20 inverted lists");
    }
    i = j;
  }
}

}  // namespace clipkit::search
