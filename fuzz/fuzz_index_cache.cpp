// libFuzzer target: vectors.faiss files through search::load_cache, the reader an index folder's
// cache goes through when its catalog recorded no checksum (or a crafted catalog recorded the
// crafted one). A small valid cache (Flat or HNSW32, 6 vectors of dim 8) is edited by the input:
//   byte 0: the structure (even: Flat, odd: HNSW32);
//   then edits of 3 bytes (offset u16 LE, xor byte) or, after a 0xff marker, of 10 bytes
//   (offset u16 LE, 8-byte value): the faiss size fields are 8-byte values.
// The header's checksum is recomputed after the edits, so the edits reach faiss. A load must
// either throw clipkit::Error or give an index that answers a search (which follows every HNSW
// link from the entry point). The file is in memory-backed storage (scratch.h). Nothing may leak:
// the loader walks the structure before faiss reads it, so faiss never stops half-way through one.

#include <array>
#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <omp.h>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "scratch.h"
#include "search/vector_store.h"

namespace {

constexpr int kDim = 8;
using namespace clipkit::search::cache_layout;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const std::string& base(bool hnsw) {
  static const std::array<std::string, 2> files = [] {
    std::array<std::string, 2> out;
    for (int k = 0; k < 2; ++k) {
      auto idx = clipkit::search::make_index(k ? "HNSW32" : "Flat", kDim);
      std::vector<float> v(6 * kDim);
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 7) % 11) - 5.0f;
      const std::vector<faiss::Index::idx_t> ids{3, 5, 8, 13, 21, 34};
      idx->add_with_ids(6, v.data(), ids.data());
      clipkit::search::CacheHeader h;
      h.generation = 1;
      h.ntotal = 6;
      h.trained = 1;
      h.factory = k ? "HNSW32" : "Flat";
      const std::string p = fuzzutil::scratch_path("base.faiss");
      clipkit::search::save_cache(p, *idx, h);
      out[k] = read_all(p);
      std::remove(p.c_str());
    }
    return out;
  }();
  return files[hnsw ? 1 : 0];
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // one thread searches the 6 vectors (a team of threads only spins)
  static const bool one_thread = (omp_set_num_threads(1), true);
  (void)one_thread;
  if (size == 0) return 0;
  std::string file = base(data[0] & 1);
  size_t i = 1;
  while (i + 3 <= size) {
    if (data[i] == 0xff && i + 11 <= size) {
      const size_t at = (data[i + 1] | (data[i + 2] << 8)) % file.size();
      if (at + 8 <= file.size()) std::memcpy(&file[at], data + i + 3, 8);
      i += 11;
      continue;
    }
    const size_t at = (data[i] | (data[i + 1] << 8)) % file.size();
    file[at] = static_cast<char>(file[at] ^ data[i + 2]);
    i += 3;
  }
  if (file.size() >= kFixed) {
    uint32_t flen;
    std::memcpy(&flen, file.data() + kFactoryLength, 4);
    if (kFixed + static_cast<size_t>(flen) <= file.size()) {
      const size_t off = kFixed + flen;
      const uint64_t sum = clipkit::search::cache_payload_checksum(reinterpret_cast<const uint8_t*>(file.data()) + off, file.size() - off);
      std::memcpy(&file[kChecksum], &sum, 8);
    }
  }
  static const std::string path = fuzzutil::scratch_path("vectors.faiss");
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(file.data(), static_cast<std::streamsize>(file.size()));
  }
  try {
    clipkit::search::CacheHeader h;
    auto idx = clipkit::search::load_cache(path, kDim, &h);
    if (idx->ntotal != h.ntotal || idx->d != kDim) __builtin_trap();
    const std::vector<float> q(kDim, 0.25f);
    float dist[6];
    faiss::Index::idx_t labels[6];
    clipkit::search::search_one(*idx, q.data(), 6, 16, 0, nullptr, dist, labels);
    for (auto l : labels)
      if (l != -1 && !idx->rev_map.count(l)) __builtin_trap();
  } catch (const clipkit::Error&) {
  }
  return 0;
}
