// faiss's BLAS GEMM (`sgemm_`) is answered by clipkit's oneDNN definition in every clipkit
// program, with Fortran (column-major) semantics, so faiss's k-means and batched exact search
// give the right answers.
#include <dlfcn.h>
#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

extern "C" int sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                      const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                      const float* beta, float* c, const int* ldc);

TEST(SgemmOverride, TheProgramsDefinitionIsTheOneTheDynamicLinkerFinds) {
  void* found = dlsym(RTLD_DEFAULT, "sgemm_");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found, reinterpret_cast<void*>(&sgemm_));
  Dl_info info{};
  ASSERT_NE(dladdr(found, &info), 0);
  // Defined in the test program itself, not in a BLAS library.
  EXPECT_EQ(std::string(info.dli_fname).find("blas"), std::string::npos) << info.dli_fname;
}

// OpenBLAS's worker pool (started when the library loads) is stopped and OpenBLAS made
// single-threaded, so its idle workers do not spin on the cores clipkit computes on.
TEST(SgemmOverride, OpenBlasRunsWithoutItsWorkerPool) {
  using GetThreads = int (*)();
  auto get = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  if (!get) GTEST_SKIP() << "the BLAS library in this program is not OpenBLAS";
  EXPECT_EQ(get(), 1);
}

TEST(SgemmOverride, ColumnMajorProductsWithEveryTransposition) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  const int m = 7, n = 5, k = 9;
  for (const char ta : {'N', 'T'})
    for (const char tb : {'N', 'T'}) {
      // Column-major storage; leading dimensions larger than needed.
      const int lda = (ta == 'N' ? m : k) + 2, ldb = (tb == 'N' ? k : n) + 1, ldc = m + 3;
      std::vector<float> a(static_cast<size_t>(lda * (ta == 'N' ? k : m))), b(static_cast<size_t>(ldb * (tb == 'N' ? n : k)));
      std::vector<float> c(static_cast<size_t>(ldc * n));
      for (auto& v : a) v = nd(rng);
      for (auto& v : b) v = nd(rng);
      for (auto& v : c) v = nd(rng);
      const std::vector<float> c0 = c;
      const float alpha = 0.5f, beta = -2.0f;
      sgemm_(&ta, &tb, &m, &n, &k, &alpha, a.data(), &lda, b.data(), &ldb, &beta, c.data(), &ldc);
      auto A = [&](int i, int p) { return ta == 'N' ? a[static_cast<size_t>(i + p * lda)] : a[static_cast<size_t>(p + i * lda)]; };
      auto B = [&](int p, int j) { return tb == 'N' ? b[static_cast<size_t>(p + j * ldb)] : b[static_cast<size_t>(j + p * ldb)]; };
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double s = 0;
          for (int p = 0; p < k; ++p) s += static_cast<double>(A(i, p)) * B(p, j);
          const double expect = alpha * s + beta * c0[static_cast<size_t>(i + j * ldc)];
          EXPECT_NEAR(c[static_cast<size_t>(i + j * ldc)], expect, 1e-4) << ta << tb << " " << i << "," << j;
        }
      // Padding rows of C are untouched.
      for (int j = 0; j < n; ++j)
        for (int i = m; i < ldc; ++i) EXPECT_EQ(c[static_cast<size_t>(i + j * ldc)], c0[static_cast<size_t>(i + j * ldc)]);
    }
}

TEST(SgemmOverride, FaissBatchedExactSearchAndKMeansStayCorrect) {
  // 64 queries take faiss's BLAS path (more than 20 at once); compare with the one-by-one path.
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  const int d = 24, n = 3000, nq = 64, k = 5;
  std::vector<float> xb(static_cast<size_t>(n * d)), xq(static_cast<size_t>(nq * d));
  for (auto& v : xb) v = nd(rng);
  for (auto& v : xq) v = nd(rng);
  faiss::IndexFlatIP flat(d);
  flat.add(n, xb.data());
  std::vector<float> db(static_cast<size_t>(nq * k)), d1(static_cast<size_t>(k));
  std::vector<faiss::Index::idx_t> lb(static_cast<size_t>(nq * k)), l1(static_cast<size_t>(k));
  flat.search(nq, xq.data(), k, db.data(), lb.data());
  for (int q = 0; q < nq; ++q) {
    flat.search(1, xq.data() + q * d, k, d1.data(), l1.data());
    for (int i = 0; i < k; ++i) {
      EXPECT_EQ(lb[static_cast<size_t>(q * k + i)], l1[static_cast<size_t>(i)]) << q << " " << i;
      EXPECT_NEAR(db[static_cast<size_t>(q * k + i)], d1[static_cast<size_t>(i)], 1e-4);
    }
  }
  // Four far-apart clusters: k-means puts one centroid on each.
  const int per = 500;
  std::vector<float> pts(static_cast<size_t>(4 * per * d));
  for (int c = 0; c < 4; ++c)
    for (int i = 0; i < per; ++i)
      for (int j = 0; j < d; ++j)
        pts[static_cast<size_t>((c * per + i) * d + j)] = (j == c ? 20.0f : 0.0f) + 0.1f * nd(rng);
  // Several restarts: a single run may start two centroids in one cluster and stay there.
  faiss::ClusteringParameters cp;
  cp.nredo = 8;
  faiss::Clustering km(d, 4, cp);
  faiss::IndexFlatL2 assign(d);
  km.train(4 * per, pts.data(), assign);
  const std::vector<float>& centroids = km.centroids;
  std::vector<bool> hit(4, false);
  for (int c = 0; c < 4; ++c) {
    int best = 0;
    for (int j = 1; j < d; ++j)
      if (centroids[static_cast<size_t>(c * d + j)] > centroids[static_cast<size_t>(c * d + best)]) best = j;
    ASSERT_LT(best, 4);
    EXPECT_NEAR(centroids[static_cast<size_t>(c * d + best)], 20.0f, 0.1f);
    hit[static_cast<size_t>(best)] = true;
  }
  for (int c = 0; c < 4; ++c) EXPECT_TRUE(hit[static_cast<size_t>(c)]) << c;
}
