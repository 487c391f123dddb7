// Index benchmark: add throughput, query latency (p50/p99, single queries and batches of 16) and
// recall@10 against exact search, for flat / HNSW32 / IVF-PQ at 100k and 1M synthetic vectors.
//
//   bench_index [--sizes 100000,1000000] [--kinds Flat,HNSW32,IVF1024;PQ64] [--queries 200]
//               [--dim 512] [--threads N] [--ef N] [--nprobe N] [--catalog]
// --ef / --nprobe: HNSW efSearch and IVF nprobe for every query (0: what clipkit picks).
//
// Vectors: unit-normalised draws around 2000 random centres (CLIP embeddings are clustered, so
// uniform noise would understate what an approximate index achieves). Queries are fresh draws
// from the same mixture. --catalog also times Index::add_vectors (SQLite + faiss) at the first size.
// A plain program (not Google Benchmark) because each configuration takes seconds to minutes.
#include <faiss/IndexFlat.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "clipkit/index.h"
#include "clipkit/model.h"
#include "search/flat_scan.h"
#include "search/vector_store.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void normalize_rows(float* x, int64_t n, int d) {
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < d; ++j) s += static_cast<double>(x[i * d + j]) * x[i * d + j];
    const float inv = static_cast<float>(1.0 / std::sqrt(s));
    for (int j = 0; j < d; ++j) x[i * d + j] *= inv;
  }
}

std::vector<float> mixture(int64_t n, int d, uint32_t seed, const std::vector<float>& centres, int ncentres) {
  std::vector<float> x(static_cast<size_t>(n) * d);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, ncentres - 1);
  const float spread = 0.6f / std::sqrt(static_cast<float>(d));
  for (int64_t i = 0; i < n; ++i) {
    const float* c = centres.data() + static_cast<size_t>(pick(rng)) * d;
    for (int j = 0; j < d; ++j) x[static_cast<size_t>(i * d + j)] = c[j] + spread * nd(rng);
  }
  normalize_rows(x.data(), n, d);
  return x;
}

double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

class VecModel : public clipkit::Model {  // only carries ModelInfo for Index::create
 public:
  explicit VecModel(int dim) {
    info_.arch.embed_dim = dim;
    info_.fingerprint = "synthetic";
    info_.path = "synthetic";
  }
  const clipkit::ModelInfo& info() const override { return info_; }
  clipkit::Embeddings encode_images(const float*, int64_t, bool, clipkit::DebugTrace*) const override { return {}; }
  clipkit::Embeddings encode_tokens(const std::vector<std::vector<int32_t>>&, bool, clipkit::DebugTrace*) const override {
    return {};
  }

 private:
  clipkit::ModelInfo info_;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> sizes = {100000, 1000000};
  std::vector<std::string> kinds = {"Flat", "HNSW32", "IVF1024,PQ64", "IVF4096,PQ64"};
  int nq = 200, dim = 512, threads = 0, ef = 0, nprobe = 0;
  bool catalog = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--sizes") {
      sizes.clear();
      for (const auto& s : split(next(), ',')) sizes.push_back(std::stoll(s));
    } else if (a == "--kinds") {
      kinds = split(next(), ':');
      for (auto& k : kinds) std::replace(k.begin(), k.end(), ';', ',');
    } else if (a == "--queries") {
      nq = std::stoi(next());
    } else if (a == "--dim") {
      dim = std::stoi(next());
    } else if (a == "--threads") {
      threads = std::stoi(next());
    } else if (a == "--ef") {
      ef = std::stoi(next());
    } else if (a == "--nprobe") {
      nprobe = std::stoi(next());
    } else if (a == "--catalog") {
      catalog = true;
    } else {
      std::fprintf(stderr, "usage: bench_index [--sizes N,N] [--kinds K:K (';' for ',')] [--queries N] [--dim D] [--threads T] [--ef N] [--nprobe N] [--catalog]\n");
      return 2;
    }
  }
  if (threads > 0) omp_set_num_threads(threads);
  const int ncentres = 2000;
  std::vector<float> centres(static_cast<size_t>(ncentres) * dim);
  {
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    for (auto& c : centres) c = nd(rng);
    normalize_rows(centres.data(), ncentres, dim);
  }
  std::printf("dim %d, %d queries, %d OpenMP threads\n", dim, nq, omp_get_max_threads());
  std::printf("| size | kind | train s | add s | add vec/s | 1 query p50 ms | p99 ms | batch16 p50 ms | p99 ms | recall@10 | recall@10 re-ranked |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
  const int k = 10;
  for (const int64_t n : sizes) {
    const std::vector<float> xb = mixture(n, dim, 2, centres, ncentres);
    const std::vector<float> xq = mixture(nq, dim, 3, centres, ncentres);
    std::vector<faiss::Index::idx_t> ids(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = i + 1;
    // ground truth
    std::vector<faiss::Index::idx_t> truth(static_cast<size_t>(nq) * k);
    {
      faiss::IndexFlatIP flat(dim);
      flat.add(n, xb.data());
      std::vector<float> dist(truth.size());
      flat.search(nq, xq.data(), k, dist.data(), truth.data());
      for (auto& t : truth) t += 1;
    }
    for (const auto& kind : kinds) {
      auto idx = clipkit::search::make_index(kind, dim);
      double train_s = 0;
      if (!idx->is_trained) {
        const auto t0 = Clock::now();
        clipkit::search::train_index(*idx, xb.data(), n);
        train_s = seconds_since(t0);
      }
      const auto t1 = Clock::now();
      for (int64_t b = 0; b < n; b += 10000) {
        const int64_t m = std::min<int64_t>(10000, n - b);
        idx->add_with_ids(m, xb.data() + b * dim, ids.data() + b);
      }
      const double add_s = seconds_since(t1);
      clipkit::search::set_search_params(*idx, k, ef, nprobe);
      std::vector<float> dist(static_cast<size_t>(16) * k);
      std::vector<faiss::Index::idx_t> lab(static_cast<size_t>(16) * k);
      std::vector<double> single, batch;
      int64_t hit = 0;
      for (int q = 0; q < nq; ++q) {
        const auto t = Clock::now();
        idx->search(1, xq.data() + static_cast<size_t>(q) * dim, k, dist.data(), lab.data());
        single.push_back(seconds_since(t) * 1e3);
        for (int a = 0; a < k; ++a)
          for (int b = 0; b < k; ++b)
            if (lab[static_cast<size_t>(a)] == truth[static_cast<size_t>(q * k + b)]) ++hit;
      }
      // What Index::search returns: 4k candidates re-scored exactly from the stored vectors.
      int64_t hit_rr = 0;
      {
        const int kc = 4 * k;
        clipkit::search::set_search_params(*idx, kc, ef, nprobe);
        std::vector<float> cd(static_cast<size_t>(kc));
        std::vector<faiss::Index::idx_t> cl(static_cast<size_t>(kc));
        for (int q = 0; q < nq; ++q) {
          const float* qv = xq.data() + static_cast<size_t>(q) * dim;
          idx->search(1, qv, kc, cd.data(), cl.data());
          std::vector<std::pair<float, faiss::Index::idx_t>> c;
          for (int a = 0; a < kc; ++a) {
            if (cl[static_cast<size_t>(a)] < 0) continue;
            const float* v = xb.data() + static_cast<size_t>(cl[static_cast<size_t>(a)] - 1) * dim;
            float sc = 0;
            for (int j = 0; j < dim; ++j) sc += qv[j] * v[j];
            c.emplace_back(sc, cl[static_cast<size_t>(a)]);
          }
          std::sort(c.begin(), c.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
          for (size_t a = 0; a < std::min<size_t>(c.size(), k); ++a)
            for (int b = 0; b < k; ++b)
              if (c[a].second == truth[static_cast<size_t>(q * k + b)]) ++hit_rr;
        }
        clipkit::search::set_search_params(*idx, k, ef, nprobe);
      }
      for (int q = 0; q + 16 <= nq; q += 16) {
        const auto t = Clock::now();
        idx->search(16, xq.data() + static_cast<size_t>(q) * dim, k, dist.data(), lab.data());
        batch.push_back(seconds_since(t) * 1e3);
      }
      std::printf("| %lld | %s | %.1f | %.1f | %.0f | %.2f | %.2f | %.2f | %.2f | %.3f | %.3f |\n", static_cast<long long>(n), kind.c_str(),
                  train_s, add_s, static_cast<double>(n) / add_s, pct(single, 0.5), pct(single, 0.99), pct(batch, 0.5),
                  pct(batch, 0.99), static_cast<double>(hit) / (static_cast<double>(nq) * k),
                  static_cast<double>(hit_rr) / (static_cast<double>(nq) * k));
      std::fflush(stdout);
      if (kind == "Flat") {
        // What clipkit's Flat index really runs for a query: its own scan (search/flat_scan.h).
        std::vector<double> s1, s16;
        std::vector<float> sc(static_cast<size_t>(k));
        std::vector<int64_t> pos(static_cast<size_t>(k));
        int64_t hit_scan = 0;
        for (int q = 0; q < nq; ++q) {
          const auto t = Clock::now();
          clipkit::search::flat_top_k(xb.data(), n, dim, xq.data() + static_cast<size_t>(q) * dim, k, sc.data(), pos.data());
          s1.push_back(seconds_since(t) * 1e3);
          for (int a = 0; a < k; ++a)
            for (int b = 0; b < k; ++b)
              if (pos[static_cast<size_t>(a)] + 1 == truth[static_cast<size_t>(q * k + b)]) ++hit_scan;
        }
        for (int q = 0; q + 16 <= nq; q += 16) {
          const auto t = Clock::now();
          for (int j = 0; j < 16; ++j)
            clipkit::search::flat_top_k(xb.data(), n, dim, xq.data() + static_cast<size_t>(q + j) * dim, k, sc.data(),
                                        pos.data());
          s16.push_back(seconds_since(t) * 1e3);
        }
        std::printf("| %lld | Flat (clipkit scan) | 0.0 | %.1f | %.0f | %.2f | %.2f | %.2f | %.2f | %.3f | |\n",
                    static_cast<long long>(n), add_s, static_cast<double>(n) / add_s, pct(s1, 0.5), pct(s1, 0.99),
                    pct(s16, 0.5), pct(s16, 0.99), static_cast<double>(hit_scan) / (static_cast<double>(nq) * k));
        std::fflush(stdout);
      }
    }
    if (catalog) {
      catalog = false;
      const std::string dir = (std::filesystem::temp_directory_path() / "clipkit-bench-index").string();
      std::filesystem::remove_all(dir);
      {
        VecModel model(dim);
        clipkit::Index index = clipkit::Index::create(dir, model.info());
        const auto t = Clock::now();
        std::vector<clipkit::Index::VectorRecord> recs;
        for (int64_t i = 0; i < n; ++i) {
          clipkit::Index::VectorRecord r;
          r.path = "/bench/" + std::to_string(i) + ".jpg";
          r.sha256 = clipkit::content_sha256(&i, sizeof i);
          r.vector.assign(xb.begin() + i * dim, xb.begin() + (i + 1) * dim);
          recs.push_back(std::move(r));
          if (recs.size() == 1000 || i + 1 == n) {
            index.add_vectors(recs);
            recs.clear();
          }
        }
        const double add_s = seconds_since(t);
        std::printf("\ncatalog: Index::add_vectors %lld vectors in batches of 1000 (SQLite + faiss flat): %.1f s (%.0f vec/s)",
                    static_cast<long long>(n), add_s, static_cast<double>(n) / add_s);
      }  // the faiss cache is written here
      const auto t3 = Clock::now();
      {
        clipkit::Index reopened = clipkit::Index::open(dir, clipkit::Index::Mode::ReadOnly);
        std::printf("; reopen %.2f s\n", seconds_since(t3));
      }
      std::filesystem::remove_all(dir);
    }
  }
  return 0;
}
