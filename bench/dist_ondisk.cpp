// Sharded build and on-disk serving benchmark: synthetic clustered unit vectors go through the
// phases of `clipkit index build` (shards written directly instead of embedded), then the merged
// on-disk index is searched through clipkit::Index with its lists memory-mapped.
//
//   bench/dist_ondisk.sh [N] [RANKS] [KIND]            the whole run, one command (see that script)
//
//   [mpirun -np R] bench_dist_ondisk build DIR --vectors N [--dim 512] [--kind IVF4096,PQ64] [--shards S]
//                                            [--discard-shards 1] [--resume 1]
//   bench_dist_ondisk truth  DIR --queries Q            exact top-10 of Q queries (a separate process,
//                                                       which reads every vector)
//   bench_dist_ondisk search DIR --nprobe 1,4,16,64     latency, recall@10 and peak RSS of one process
//
// build prints seconds per phase (generate = what embedding would be, train, add, merge) and the
// merged index's bytes. Rank r takes shards r, r + R, ... (S defaults to R; without mpirun, one
// process runs the S shards one after another). With --discard-shards 1 a shard keeps only its
// description once added; with S > R that lowers the peak disk use (see dist_ondisk.sh).
// Vectors: unit-normalised draws around 4096 random centres (CLIP embeddings are clustered);
// vector i depends only on i and the seed, so any split gives the same data. Queries are fresh
// draws from the same mixture, the same in truth and search.
#include <faiss/IndexFlat.h>
#include <faiss/utils/distances.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "core/mapped_file.h"
#include "dist/build.h"
#include "dist/mpi_driver.h"
#include "search/ondisk_store.h"

#ifdef CLIPKIT_WITH_MPI
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

constexpr int kCentres = 4096;
constexpr uint64_t kSeed = 20261207;

struct Args {
  std::string mode, dir, kind = "IVF4096,PQ64";
  int64_t vectors = 100000;
  int dim = 512, shards = 0, queries = 1000, k = 10;  // shards 0: one per rank (4 without MPI)
  bool discard_shards = false;
  bool resume = false;  // go on with the build in DIR: finished shards and phases are skipped
  std::vector<int> nprobe = {1, 4, 16, 64};
};

std::vector<float> centres(int dim) {
  std::mt19937_64 rng(kSeed);
  std::normal_distribution<float> nd;
  std::vector<float> c(static_cast<size_t>(kCentres) * dim);
  for (auto& x : c) x = nd(rng);
  for (int i = 0; i < kCentres; ++i) {
    double s = 0;
    for (int j = 0; j < dim; ++j) s += double(c[i * dim + j]) * c[i * dim + j];
    for (int j = 0; j < dim; ++j) c[i * dim + j] = static_cast<float>(c[i * dim + j] / std::sqrt(s));
  }
  return c;
}

// A counter-based generator: each vector has its own stream, so any split gives the same data.
struct SplitMix {
  uint64_t x;
  uint64_t next() {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Two standard normals (Box-Muller) from one 64-bit draw.
  void normals(float* a, float* b) {
    const uint64_t r = next();
    const float u1 = (static_cast<float>(r >> 40) + 1.0f) * (1.0f / 16777216.0f);  // (0, 1]
    const float u2 = static_cast<float>((r >> 16) & 0xFFFFFF) * (1.0f / 16777216.0f);
    const float m = std::sqrt(-2.0f * std::log(u1));
    *a = m * std::cos(6.2831853f * u2);
    *b = m * std::sin(6.2831853f * u2);
  }
};

// Vector `i` of stream `stream` (0: the indexed vectors, 1: queries): a centre plus noise, normalised.
void draw(const std::vector<float>& c, int dim, uint64_t stream, int64_t i, float* out) {
  SplitMix rng{kSeed ^ (stream * 0x9E3779B97F4A7C15ull) ^ (static_cast<uint64_t>(i) * 0xD1B54A32D192ED03ull)};
  const int centre = static_cast<int>(rng.next() % kCentres);
  const float* cv = c.data() + static_cast<size_t>(centre) * dim;
  const float scale = 0.6f / std::sqrt(static_cast<float>(dim));
  float s = 0;
  for (int j = 0; j + 1 < dim; j += 2) {
    float a, b;
    rng.normals(&a, &b);
    out[j] = cv[j] + scale * a;
    out[j + 1] = cv[j + 1] + scale * b;
  }
  if (dim % 2) {
    float a, b;
    rng.normals(&a, &b);
    out[dim - 1] = cv[dim - 1] + scale * a;
  }
  for (int j = 0; j < dim; ++j) s += out[j] * out[j];
  const float inv = 1.0f / std::sqrt(s);
  for (int j = 0; j < dim; ++j) out[j] *= inv;
}

// Distinct per vector, and uniform in its first bits as a real SHA-256 is (the training's duplicate
// search buckets the contents by them).
std::string fake_sha(int64_t i) {
  SplitMix m{static_cast<uint64_t>(i)};
  char buf[65];
  std::snprintf(buf, sizeof buf, "%016llx%048llx", static_cast<unsigned long long>(m.next()), static_cast<unsigned long long>(i));
  return buf;
}

// What `index build` would have embedded: shard s of the synthetic list, streamed in blocks (one
// transaction each), so memory stays at one block whatever the size.
void generate_shard(const Args& a, const std::vector<float>& c, int s, int n) {
  clipkit::dist::ShardIdentity id;
  id.total = a.vectors;
  id.list_hash = "synthetic-" + std::to_string(a.vectors) + "-" + std::to_string(a.dim);
  id.model_fingerprint = "synthetic";
  id.model_path = "synthetic";
  id.dim = a.dim;
  clipkit::dist::ShardWriter w(a.dir, s, n, id);
  if (w.complete()) return;  // a resumed run
  const auto sl = w.slice();
  constexpr int64_t kBlock = 16384;
  std::vector<std::string> paths, shas;
  std::vector<float> vecs(static_cast<size_t>(kBlock) * a.dim);
  for (int64_t b = 0; b < sl.count; b += kBlock) {
    const int64_t m = std::min(kBlock, sl.count - b);
    paths.clear();
    shas.clear();
    for (int64_t r = 0; r < m; ++r) {
      const int64_t i = sl.first + b + r;
      char p[64];
      std::snprintf(p, sizeof p, "/synthetic/%010lld.jpg", static_cast<long long>(i));
      paths.emplace_back(p);
      shas.push_back(fake_sha(i));
      draw(c, a.dim, 0, i, vecs.data() + r * a.dim);
    }
    w.append(paths, shas, vecs.data());
  }
  w.finish();
}

long peak_rss_kb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}
long status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(f, line))
    if (line.compare(0, n, key) == 0) return std::stol(line.substr(n));
  return -1;
}
long rss_kb() { return status_kb("VmRSS:"); }
// Resident memory that is not a file mapping (the mapped lists and vectors are page cache the
// kernel can drop; this part it cannot).
long anon_rss_kb() { return status_kb("RssAnon:"); }

int64_t dir_bytes(const std::string& dir, const std::vector<std::string>& names) {
  int64_t b = 0;
  std::error_code ec;
  for (const auto& n : names) {
    const auto s = fs::file_size(fs::path(dir) / n, ec);
    if (!ec) b += static_cast<int64_t>(s);
  }
  return b;
}

int build(const Args& a) {
  int rank = 0, size = 1;
  bool mpi = false;
#ifdef CLIPKIT_WITH_MPI
  mpi = clipkit::dist::launched_by_mpi(nullptr, nullptr);
  if (mpi) {
    MPI_Init(nullptr, nullptr);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
  auto barrier = [&] {
    if (mpi) clipkit::dist::idle_barrier();  // waiting ranks sleep instead of polling
  };
#else
  auto barrier = [] {};
#endif
  const int n = a.shards > 0 ? a.shards : mpi ? size : 4;
  clipkit::dist::BuildOptions o;
  o.dir = a.dir;
  o.kind = a.kind;
  o.discard_shards = a.discard_shards;
  if (rank == 0 && !a.resume) {
    std::error_code ec;
    if (fs::exists(fs::path(a.dir) / "catalog.sqlite", ec)) {
      std::fprintf(stderr, "bench_dist_ondisk: %s already holds an index; remove it first\n", a.dir.c_str());
      return 2;
    }
  }
  const auto c = centres(a.dim);
  std::vector<std::pair<std::string, double>> times;
  auto phase = [&](const char* name, auto&& body) {
    barrier();
    const auto t = Clock::now();
    body();
    barrier();
    times.emplace_back(name, since(t));
    // Printed as each phase ends, so that a long run shows its progress.
    if (rank == 0) {
      std::printf("  phase %-28s %9.2f s  (%.0f vectors/s)\n", name, times.back().second, a.vectors / std::max(times.back().second, 1e-9));
      std::fflush(stdout);
    }
  };
  // A resumed run whose build had finished (shards/ removed) goes straight to truth and search.
  std::error_code ec_built;
  const bool built = a.resume && fs::exists(fs::path(a.dir) / "catalog.sqlite", ec_built);
  try {
    if (!built) phase("generate (stands for embed)", [&] {
      for (int s = rank; s < n; s += size) generate_shard(a, c, s, n);
    });
    if (!built) phase("train", [&] {
      if (rank == 0) clipkit::dist::train(o);
    });
    if (!built) phase("add", [&] {
      for (int s = rank; s < n; s += size) clipkit::dist::add_shard(o, s);
    });
    if (!built) phase("merge", [&] {
      if (rank == 0) clipkit::dist::merge(o);
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_dist_ondisk: rank %d: %s\n", rank, e.what());
#ifdef CLIPKIT_WITH_MPI
    if (mpi) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
    return 1;
  }
  if (rank == 0) {
    std::printf("build: %lld vectors, dim %d, kind %s, %d shard(s) on %d %s%s\n", static_cast<long long>(a.vectors), a.dim, a.kind.c_str(), n,
                size, mpi ? "MPI rank(s)" : "process", a.discard_shards ? ", shards discarded once added" : "");
    double total = 0;
    for (const auto& [name, s] : times) {
      std::printf("  %-28s %9.2f s  (%.0f vectors/s)\n", name.c_str(), s, a.vectors / std::max(s, 1e-9));
      total += s;
    }
    std::printf("  %-28s %9.2f s\n", "total", total);
    const int64_t ivf = dir_bytes(a.dir, {clipkit::search::kOnDiskIndexName, clipkit::search::kOnDiskListsName});
    const int64_t exact = dir_bytes(a.dir, {clipkit::search::kExactVectorsName});
    const int64_t cat = dir_bytes(a.dir, {"catalog.sqlite"});
    std::printf("  on-disk index %.1f MB (%.1f bytes/vector), exact vectors %.1f MB, catalog %.1f MB\n", ivf / 1e6,
                double(ivf) / a.vectors, exact / 1e6, cat / 1e6);
  }
#ifdef CLIPKIT_WITH_MPI
  if (mpi) MPI_Finalize();
#endif
  return 0;
}

std::string truth_path(const std::string& dir) { return (fs::path(dir) / "bench-truth.bin").string(); }

int truth(const Args& a) {
  clipkit::Index idx = clipkit::Index::open(a.dir, clipkit::Index::Mode::ReadOnly);
  const int dim = idx.dim();
  const int64_t n = idx.info().items;
  auto ex = clipkit::search::ExactVectors::open_if_present(a.dir, dim, n);
  if (!ex) throw clipkit::Error(clipkit::ErrorCode::NotFound, "no exact vector file in " + a.dir);
  const auto c = centres(dim);
  std::vector<float> q(static_cast<size_t>(a.queries) * dim);
  for (int i = 0; i < a.queries; ++i) draw(c, dim, 1, i, q.data() + static_cast<size_t>(i) * dim);
  const auto t = Clock::now();
  // Exact inner-product top-k over every vector, in blocks (GEMM through faiss).
  faiss::float_minheap_array_t res;
  std::vector<float> d(static_cast<size_t>(a.queries) * a.k);
  std::vector<int64_t> l(static_cast<size_t>(a.queries) * a.k);
  res.nh = static_cast<size_t>(a.queries);
  res.k = static_cast<size_t>(a.k);
  res.val = d.data();
  res.ids = l.data();
  res.heapify();
  const int64_t block = 1 << 18;
  for (int64_t b = 0; b < n; b += block) {
    const int64_t e = std::min(n, b + block);
    faiss::float_minheap_array_t part = res;
    std::vector<float> pd(static_cast<size_t>(a.queries) * a.k);
    std::vector<int64_t> pl(static_cast<size_t>(a.queries) * a.k);
    part.val = pd.data();
    part.ids = pl.data();
    part.heapify();
    faiss::knn_inner_product(q.data(), ex->row(b + 1), dim, a.queries, e - b, &part);
    for (int i = 0; i < a.queries; ++i)
      for (int j = 0; j < a.k; ++j) {
        const size_t s = static_cast<size_t>(i) * a.k + j;
        if (pl[s] >= 0 && pd[s] > d[static_cast<size_t>(i) * a.k]) {
          faiss::heap_replace_top<faiss::CMin<float, int64_t>>(a.k, d.data() + static_cast<size_t>(i) * a.k, l.data() + static_cast<size_t>(i) * a.k,
                                                                pd[s], pl[s] + b + 1);
        }
      }
  }
  std::ofstream f(truth_path(a.dir), std::ios::binary);
  const int32_t hdr[2] = {a.queries, a.k};
  f.write(reinterpret_cast<const char*>(hdr), sizeof hdr);
  f.write(reinterpret_cast<const char*>(l.data()), static_cast<std::streamsize>(l.size() * sizeof(int64_t)));
  std::printf("truth: exact top-%d of %d queries over %lld vectors in %.1f s\n", a.k, a.queries, static_cast<long long>(n), since(t));
  return 0;
}

int search(const Args& a) {
  const long rss0 = rss_kb();
  const auto t0 = Clock::now();
  clipkit::Index idx = clipkit::Index::open(a.dir, clipkit::Index::Mode::ReadOnly);
  const double open_s = since(t0);
  const long rss_open = rss_kb();
  const int dim = idx.dim();
  std::ifstream f(truth_path(a.dir), std::ios::binary);
  int32_t hdr[2] = {0, 0};
  f.read(reinterpret_cast<char*>(hdr), sizeof hdr);
  if (!f || hdr[0] <= 0 || hdr[1] != a.k) throw clipkit::Error(clipkit::ErrorCode::NotFound, "run 'bench_dist_ondisk truth " + a.dir + "' first");
  const int nq = std::min(a.queries, hdr[0]);
  std::vector<int64_t> gt(static_cast<size_t>(hdr[0]) * a.k);
  f.read(reinterpret_cast<char*>(gt.data()), static_cast<std::streamsize>(gt.size() * sizeof(int64_t)));
  const auto c = centres(dim);
  std::printf("search: %s, %lld vectors (%s); open %.2f s, RSS %.0f MB before open, %.0f MB after\n", a.dir.c_str(),
              static_cast<long long>(idx.info().items), idx.info().structure.c_str(), open_s, rss0 / 1024.0, rss_open / 1024.0);
  std::printf("  %7s %7s %10s %10s %10s %12s %12s\n", "nprobe", "rerank", "p50 ms", "p99 ms", "recall@10", "peak RSS MB", "anon RSS MB");
  for (int np : a.nprobe) {
    for (bool rerank : {false, true}) {
      std::vector<double> ms;
      int64_t found = 0;
      std::vector<float> q(static_cast<size_t>(dim));
      for (int i = 0; i < nq; ++i) {
        draw(c, dim, 1, i, q.data());
        clipkit::SearchOptions o;
        o.k = a.k;
        o.nprobe = np;
        o.rerank = rerank;
        const auto t = Clock::now();
        const auto hits = idx.search_vector(q, o);
        ms.push_back(since(t) * 1e3);
        for (const auto& h : hits)
          for (int j = 0; j < a.k; ++j) found += gt[static_cast<size_t>(i) * a.k + j] == h.item.id;
      }
      std::sort(ms.begin(), ms.end());
      std::printf("  %7d %7s %10.3f %10.3f %10.4f %12.0f %12.0f\n", np, rerank ? "yes" : "no", ms[ms.size() / 2], ms[ms.size() * 99 / 100],
                  double(found) / (double(nq) * a.k), peak_rss_kb() / 1024.0, anon_rss_kb() / 1024.0);
    }
  }
  return 0;
}

std::vector<int> int_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ',')) out.push_back(std::stoi(x));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_dist_ondisk build|truth|search DIR [--vectors N] [--dim D] [--kind K] [--shards S] [--discard-shards 1] [--resume 1] [--queries Q] [--nprobe a,b]\n");
    return 2;
  }
  a.mode = argv[1];
  a.dir = argv[2];
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--vectors") a.vectors = std::stoll(v);
    else if (k == "--dim") a.dim = std::stoi(v);
    else if (k == "--kind") a.kind = v;
    else if (k == "--shards") a.shards = std::stoi(v);
    else if (k == "--discard-shards") a.discard_shards = v == "1";
    else if (k == "--resume") a.resume = v == "1";
    else if (k == "--queries") a.queries = std::stoi(v);
    else if (k == "--nprobe") a.nprobe = int_list(v);
    else {
      std::fprintf(stderr, "bench_dist_ondisk: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  try {
    if (a.mode == "build") return build(a);
    if (a.mode == "truth") return truth(a);
    if (a.mode == "search") return search(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_dist_ondisk: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "bench_dist_ondisk: unknown mode %s\n", a.mode.c_str());
  return 2;
}
