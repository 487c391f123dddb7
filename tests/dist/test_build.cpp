// Sharded index builds: the phases run as separate commands and under mpirun give the index a
// single `index add` of the same folder gives; killed ranks resume; merges can be rerun.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "dist/build.h"
#include "dist/shard_store.h"
#include "search/search_helpers.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using namespace clipkit;
using clipkit::test::run_cli;

namespace {

const std::string kModel = clipkit::test::data_path("models/tiny-vit.safetensors");
const std::string kLsanSuppressions = std::string(CLIPKIT_TEST_DATA) + "/../dist/openmpi.lsan.supp";

// 34 images in two folders: 30 distinct pictures, 4 byte-identical copies (one of them in the
// other folder, so that a duplicate's first appearance and its copy fall into different shards).
std::string make_images() {
  const std::string root = clipkit::test::temp_dir() + "/images";
  fs::create_directories(root + "/a");
  fs::create_directories(root + "/b");
  for (int k = 0; k < 30; ++k)
    clipkit::test::write_synthetic_png(root + (k % 2 ? "/a/" : "/b/") + "img" + std::to_string(100 + k) + ".png", k, 40, 36);
  clipkit::test::copy_file_bytes(root + "/b/img100.png", root + "/a/copy0.png");
  clipkit::test::copy_file_bytes(root + "/a/img103.png", root + "/b/zcopy3.png");
  clipkit::test::copy_file_bytes(root + "/a/img105.png", root + "/a/img105-again.png");
  clipkit::test::copy_file_bytes(root + "/b/img128.png", root + "/a/x128.png");
  return root;
}

const std::string& images() {
  static const std::string root = make_images();
  return root;
}

// The single-process reference: `index create` + `index add` of the same folder.
const std::string& reference_index() {
  static const std::string dir = [] {
    const std::string d = clipkit::test::temp_dir() + "/ref.idx";
    auto c = run_cli({"index", "create", d, "--model", kModel});
    EXPECT_EQ(c.exit_code, 0) << c.err;
    auto a = run_cli({"index", "add", d, images()});
    EXPECT_EQ(a.exit_code, 0) << a.err;
    return d;
  }();
  return dir;
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Shell {
  int exit_code = -1;
  std::string out, err;
};

// Runs a shell command line, capturing its output.
Shell sh(const std::string& cmd) {
  const std::string d = clipkit::test::temp_dir();
  const int rc = std::system((cmd + " >" + quote(d + "/out") + " 2>" + quote(d + "/err")).c_str());
  Shell r;
  r.exit_code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  auto slurp = [](const std::string& p) {
    std::ifstream f(p);
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  };
  r.out = slurp(d + "/out");
  r.err = slurp(d + "/err");
  return r;
}

bool have_mpirun() { return std::system("command -v mpirun >/dev/null 2>&1") == 0; }

// mpirun with the flags CI needs (root, more ranks than cores), the built CLI and its arguments.
// Under AddressSanitizer, `check_leaks` has the ranks checked for leaks like every other process of
// the tests, with OpenMPI's own leaks suppressed (openmpi.lsan.supp says why and how); the stacks
// this needs make a rank about twice as slow, so one build of every phase is checked and the tests
// of killed and failing ranks (whose ranks end before any leak check) run without.
Shell mpirun(int ranks, const std::vector<std::string>& args, const std::string& env = "", bool check_leaks = false) {
  const char* asan = std::getenv("ASAN_OPTIONS");
  const std::string asan_options = (asan && *asan ? std::string(asan) + ":" : std::string()) +
                                   (check_leaks ? "detect_leaks=1:fast_unwind_on_malloc=0:malloc_context_size=10" : "detect_leaks=0");
  std::string cmd = "timeout 300 mpirun --oversubscribe --allow-run-as-root -np " + std::to_string(ranks) + " -x ASAN_OPTIONS=" +
                    quote(asan_options) + " -x LSAN_OPTIONS=" + quote("suppressions=" + kLsanSuppressions) +
                    " -x OMPI_MCA_btl_vader_single_copy_mechanism=none";
  if (!env.empty()) cmd += " -x " + env;
  cmd += " " + quote(CLIPKIT_CLI_PATH);
  for (const auto& a : args) cmd += " " + quote(a);
  return sh(cmd);
}

#define REQUIRE_MPIRUN()                                                                              \
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not found (install openmpi-bin): the MPI build was NOT tested"

std::vector<std::string> indexed_files() {
  return dist::list_sources({images()}, true, "/nonexistent", nullptr);
}

// The built index holds the reference's ids and paths, vectors within float rounding, and (on an
// exact kind, or an IVF kind probed exhaustively) the same search results.
void expect_same_as_reference(const std::string& built, int nprobe = 0) {
  Index ref = Index::open(reference_index(), Index::Mode::ReadOnly);
  Index got = Index::open(built, Index::Mode::ReadOnly);
  ASSERT_EQ(got.info().items, ref.info().items);
  ASSERT_EQ(got.info().files, ref.info().files);
  const auto files = indexed_files();
  ASSERT_EQ(static_cast<int64_t>(files.size()), ref.info().files);
  for (const auto& f : files) {
    CatalogItem a, b;
    ASSERT_TRUE(ref.find_path(f, &a)) << f;
    ASSERT_TRUE(got.find_path(f, &b)) << f;
    EXPECT_EQ(a.id, b.id) << f;
    EXPECT_EQ(a.sha256, b.sha256) << f;
    EXPECT_EQ(a.paths, b.paths) << f;
    EXPECT_EQ(a.width, b.width) << f;
    const auto va = ref.vector(a.id), vb = got.vector(b.id);
    EXPECT_LT(clipkit::test::max_abs_diff(va.data(), vb.data(), va.size()), 1e-5) << f;
  }
  for (int64_t id = 1; id <= ref.info().items; id += 3) {
    SearchOptions o;
    o.k = 10;
    o.nprobe = nprobe;
    const auto q = ref.vector(id);
    const auto ha = ref.search_vector(q, o), hb = got.search_vector(q, o);
    ASSERT_EQ(ha.size(), hb.size());
    for (size_t i = 0; i < ha.size(); ++i) {
      EXPECT_EQ(ha[i].item.id, hb[i].item.id) << "query " << id << " rank " << i + 1;
      EXPECT_NEAR(ha[i].score, hb[i].score, 1e-5);
    }
  }
  EXPECT_TRUE(got.verify().ok);
}

// Paths each shard file holds, by shard.
std::vector<std::vector<std::string>> shard_paths(const std::string& dir, int n) {
  std::vector<std::vector<std::string>> out;
  for (int i = 0; i < n; ++i) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(dist::shard_path(dir, i, n).c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, "SELECT path FROM rows ORDER BY pos", -1, &st, nullptr);
    out.emplace_back();
    while (sqlite3_step(st) == SQLITE_ROW) out.back().push_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
  return out;
}

}  // namespace

TEST(ShardSlice, CoversEveryPositionOnce) {
  for (int64_t n : {0, 1, 2, 7, 34, 1000, 1001}) {
    for (int shards : {1, 2, 3, 4, 7, 16}) {
      int64_t next = 0;
      for (int i = 0; i < shards; ++i) {
        const dist::Slice s = dist::shard_slice(n, i, shards);
        EXPECT_EQ(s.first, next) << n << " " << i << "/" << shards;
        EXPECT_GE(s.count, n / shards);
        EXPECT_LE(s.count, n / shards + 1);
        next = s.first + s.count;
      }
      EXPECT_EQ(next, n);
    }
  }
}

TEST(ShardSpec, ParsesAndRejects) {
  int i = -1, n = -1;
  dist::parse_shard_spec("2/3", &i, &n);
  EXPECT_EQ(i, 2);
  EXPECT_EQ(n, 3);
  for (const char* bad : {"3/3", "1", "a/b", "-1/2", "0/0", "1/2/3"}) {
    try {
      dist::parse_shard_spec(bad, &i, &n);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    }
  }
}

// A shard written through ShardWriter (the API an external embedder uses) takes exactly its
// slice's rows: a call with more rows, or with paths and checksums that do not pair up, and a
// finish before the slice is full are refused; a finished shard opens again as complete.
TEST(ShardWriter, TakesExactlyItsSliceAndReopensComplete) {
  const std::string dir = clipkit::test::temp_dir() + "/writer.idx";
  dist::ShardIdentity id;
  id.list_hash = "writer-test";
  id.total = 10;
  id.model_fingerprint = id.model_path = "none";
  id.dim = 2;
  auto expect_refused = [](const std::function<void()>& f, const std::string& part) {
    try {
      f();
      ADD_FAILURE() << "accepted (expected '" << part << "')";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  {
    dist::ShardWriter w(dir, 1, 2, id);
    const dist::Slice sl = w.slice();
    EXPECT_EQ(sl.first, 5);
    EXPECT_EQ(sl.count, 5);
    EXPECT_FALSE(w.complete());
    const std::vector<float> v(12, 0.25f);
    expect_refused([&] { w.append({"/a", "/b"}, {"1"}, v.data()); }, "write_shard: shard 1 takes 5 rows");
    expect_refused([&] { w.append({"/a", "/b", "/c", "/d", "/e", "/f"}, {"1", "2", "3", "4", "5", "6"}, v.data()); },
                   "write_shard: shard 1 takes 5 rows");
    w.append({"/a", "/b", "/c"}, {"1", "2", "3"}, v.data());
    expect_refused([&] { w.finish(); }, "write_shard: shard 1 takes 5 rows, got 3");
    w.append({"/d", "/e"}, {"4", "5"}, v.data());
    w.finish();
  }
  dist::ShardWriter again(dir, 1, 2, id);
  EXPECT_TRUE(again.complete());
}

// The id pass in buckets gives every file the id the one-table pass gives: the first appearance of
// its content in list order, a duplicate minus that id. 900 files in 3 shards drawn from 200
// contents (duplicates within and across shards), with the table's memory forcing many buckets.
TEST(IndexBuild, IdPassInBucketsGivesTheSameIds) {
  const int n = 3;
  const int64_t files = 900;
  std::mt19937 rng(7);
  std::vector<std::string> contents(200);
  for (auto& c : contents)
    for (int j = 0; j < 64; ++j) c += "0123456789abcdef"[rng() % 16];
  std::vector<std::string> sha(static_cast<size_t>(files)), paths(static_cast<size_t>(files));
  std::vector<int64_t> expected(static_cast<size_t>(files));
  std::map<std::string, int64_t> first;
  for (int64_t p = 0; p < files; ++p) {
    sha[static_cast<size_t>(p)] = contents[rng() % contents.size()];
    paths[static_cast<size_t>(p)] = "/x/" + std::to_string(1000 + p) + ".png";
    auto [it, fresh] = first.emplace(sha[static_cast<size_t>(p)], static_cast<int64_t>(first.size()) + 1);
    expected[static_cast<size_t>(p)] = fresh ? it->second : -it->second;
  }
  ASSERT_GT(first.size(), 150u);  // most contents appear, most of them several times
  dist::ShardIdentity id;
  id.list_hash = "idpass-test";
  id.total = files;
  id.model_fingerprint = id.model_path = "none";
  id.dim = 4;
  auto build = [&](const std::string& dir, int64_t memory) {
    for (int i = 0; i < n; ++i) {
      const dist::Slice sl = dist::shard_slice(files, i, n);
      std::vector<float> v(static_cast<size_t>(sl.count) * 4, 0.5f);
      dist::ShardWriter w(dir, i, n, id);
      w.append({paths.begin() + sl.first, paths.begin() + sl.first + sl.count},
               {sha.begin() + sl.first, sha.begin() + sl.first + sl.count}, v.data());
      w.finish();
    }
    dist::BuildOptions o;
    o.dir = dir;
    o.id_memory = memory;
    const dist::TrainReport r = dist::train(o);
    EXPECT_EQ(r.items, static_cast<int64_t>(first.size()));
    EXPECT_FALSE(fs::exists(dist::shards_dir(dir) + "/" + dist::kIdPassDir));  // the bucket files are gone
    std::vector<int64_t> got;
    for (int i = 0; i < n; ++i) {
      std::ifstream f(dist::ids_path(dir, i, n), std::ios::binary);
      int64_t x;
      while (f.read(reinterpret_cast<char*>(&x), sizeof x)) got.push_back(x);
    }
    return std::make_pair(r.id_buckets, got);
  };
  const auto [one_bucket, ids_one] = build(clipkit::test::temp_dir() + "/idpass1.idx", int64_t{1} << 30);
  EXPECT_EQ(one_bucket, 1);
  EXPECT_EQ(ids_one, expected);
  // 900 files x 96 bytes in 4 KB: 22 buckets.
  const auto [buckets, ids_many] = build(clipkit::test::temp_dir() + "/idpass22.idx", 4096);
  EXPECT_EQ(buckets, 22);
  EXPECT_EQ(ids_many, expected);
}

TEST(IndexBuild, PhasesAsSeparateCommandsGiveTheSingleProcessIndex) {
  const std::string dir = clipkit::test::temp_dir() + "/phases.idx";
  for (int i = 0; i < 3; ++i) {
    auto r = run_cli({"index", "build", dir, images(), "--model", kModel, "--recursive", "--shard", std::to_string(i) + "/3",
                      "--commit-every", "4"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // Every file of the list is in exactly one shard, in list order.
  std::vector<std::string> all;
  for (const auto& s : shard_paths(dir, 3)) all.insert(all.end(), s.begin(), s.end());
  EXPECT_EQ(all, indexed_files());
  auto t = run_cli({"index", "build", dir, "--train"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  for (int i = 0; i < 3; ++i) {
    auto a = run_cli({"index", "build", dir, "--add-shard", std::to_string(i)});
    ASSERT_EQ(a.exit_code, 0) << a.err;
  }
  auto m = run_cli({"index", "build", dir, "--merge"});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  EXPECT_NE(m.out.find("merged: 30 contents, 34 files"), std::string::npos) << m.out;
  expect_same_as_reference(dir);
  // A rerun of a finished phase does nothing and changes nothing.
  auto again = run_cli({"index", "build", dir, images(), "--model", kModel, "--recursive", "--shard", "1/3"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("already embedded"), std::string::npos) << again.out;
  auto m2 = run_cli({"index", "build", dir, "--merge"});
  EXPECT_EQ(m2.exit_code, 0) << m2.err;
  EXPECT_NE(m2.out.find("already done"), std::string::npos) << m2.out;
  expect_same_as_reference(dir);
}

TEST(IndexBuild, OneProcessBuildGivesTheSingleProcessIndex) {
  const std::string dir = clipkit::test::temp_dir() + "/one.idx";
  auto r = run_cli({"index", "build", dir, images(), "--model", kModel, "--recursive"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_as_reference(dir);
}

// Shard files named like `shard`, anywhere under `root`.
static int count_named(const std::string& root, const std::string& name) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(root, ec))
    if (e.path().filename() == name) ++n;
  return n;
}

TEST(IndexBuild, ScratchFolderHoldsTheShardUntilItIsFinished) {
  const std::string dir = clipkit::test::temp_dir() + "/scratch.idx";
  const std::string scratch = clipkit::test::temp_dir() + "/node-local";
  const std::string name = fs::path(dist::shard_path(dir, 0, 1)).filename().string();
  // Two files per batch: a content and its copy in consecutive batches (a/img105-again, a/img105) is
  // decoded twice but stored once, as in larger batches.
  const std::vector<std::string> args = {"index", "build", dir, images(), "--model", kModel, "--recursive",
                                         "--commit-every", "2", "--scratch", scratch};
  std::string cmd = "CLIPKIT_TEST_KILL_SHARD=0:3 " + quote(CLIPKIT_CLI_PATH);
  for (const auto& a : args) cmd += " " + quote(a);
  auto killed = sh(cmd);
  EXPECT_NE(killed.exit_code, 0) << killed.out;
  // Killed after 3 committed batches: the unfinished shard is in the scratch folder only.
  EXPECT_FALSE(fs::exists(dist::shard_path(dir, 0, 1)));
  EXPECT_EQ(count_named(scratch, name), 1);
  auto resumed = run_cli(args);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resumed after 6 committed files"), std::string::npos) << resumed.out;
  EXPECT_EQ(count_named(scratch, name), 0);
  EXPECT_FALSE(fs::exists(dist::shard_path(dir, 0, 1) + "-wal"));
  EXPECT_EQ(shard_paths(dir, 1)[0], indexed_files());
  // Each content's vector is stored once in the shard.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(dist::shard_path(dir, 0, 1).c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "SELECT count(*), count(DISTINCT sha256) FROM rows WHERE vector IS NOT NULL", -1, &st, nullptr);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), 30);
  EXPECT_EQ(sqlite3_column_int(st, 1), 30);
  sqlite3_finalize(st);
  sqlite3_close(db);
  expect_same_as_reference(dir);
}

TEST(IndexBuild, ShardOfAnotherFileListIsRefused) {
  const std::string dir = clipkit::test::temp_dir() + "/changed.idx";
  auto r = run_cli({"index", "build", dir, images(), "--model", kModel, "--recursive", "--shard", "0/2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Without --recursive the list differs: the shard file must not be mixed with it.
  auto bad = run_cli({"index", "build", dir, images() + "/a", "--model", kModel, "--shard", "0/2"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("another file list"), std::string::npos) << bad.err;
  auto early = run_cli({"index", "build", dir, "--train"});
  EXPECT_NE(early.exit_code, 0);
  EXPECT_NE(early.err.find("shard 1 of 2 is missing"), std::string::npos) << early.err;
}

TEST(IndexBuild, UnreadableFileIsReportedAndTheRestIndexed) {
  const std::string src = clipkit::test::temp_dir() + "/withbad";
  fs::create_directories(src);
  for (int k = 0; k < 5; ++k) clipkit::test::write_synthetic_png(src + "/p" + std::to_string(k) + ".png", k);
  std::ofstream(src + "/broken.png") << "not a png";
  const std::string dir = clipkit::test::temp_dir() + "/withbad.idx";
  auto r = run_cli({"index", "build", dir, src, "--model", kModel});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("broken.png"), std::string::npos) << r.err;
  Index idx = Index::open(dir, Index::Mode::ReadOnly);
  EXPECT_EQ(idx.info().items, 5);
  EXPECT_TRUE(idx.verify().ok);
}

// With the duplicate search in buckets (34 files x 96 bytes in 1 KB: 4 buckets; the other builds
// of these tests search in one table): the copies whose first appearance is in another rank's
// shard are still found.
TEST(IndexBuildMpi, ThreeRanksGiveTheSingleProcessIndex) {
  REQUIRE_MPIRUN();
  const std::string dir = clipkit::test::temp_dir() + "/mpi.idx";
  auto r = mpirun(3, {"index", "build", dir, images(), "--model", kModel, "--recursive", "--commit-every", "4", "--id-memory", "1KB"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("duplicates searched in 4 buckets"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("merged: 30 contents, 34 files"), std::string::npos) << r.out;
  {
    // copy0.png (shard 0) is the first appearance of b/img100.png's content (shard 1).
    Index got = Index::open(dir, Index::Mode::ReadOnly);
    CatalogItem a, b;
    ASSERT_TRUE(got.find_path(images() + "/a/copy0.png", &a));
    ASSERT_TRUE(got.find_path(images() + "/b/img100.png", &b));
    EXPECT_EQ(a.id, b.id);
  }
  std::vector<std::string> all;
  for (const auto& s : shard_paths(dir, 3)) {
    EXPECT_FALSE(s.empty());
    all.insert(all.end(), s.begin(), s.end());
  }
  EXPECT_EQ(all, indexed_files());
  expect_same_as_reference(dir);
}

TEST(IndexBuildMpi, IvfOnDiskMatchesExactSearchWhenProbingEveryList) {
  REQUIRE_MPIRUN();
  const std::string dir = clipkit::test::temp_dir() + "/ivf.idx";
  auto r = mpirun(3, {"index", "build", dir, images(), "--model", kModel, "--recursive", "--kind", "IVF4,Flat"}, "", true);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(fs::exists(dir + "/ondisk.faiss"));
  EXPECT_TRUE(fs::exists(dir + "/vectors.ivfdata"));
  EXPECT_TRUE(fs::exists(dir + "/vectors.f32"));
  {
    Index got = Index::open(dir, Index::Mode::ReadOnly);
    EXPECT_EQ(got.info().structure, "IVF4,Flat");
  }
  // Probing all 4 lists is exhaustive: recall@10 against the exact reference is 1.
  expect_same_as_reference(dir, 4);
  // With one list probed the results are a subset of the exact ones.
  Index ref = Index::open(reference_index(), Index::Mode::ReadOnly);
  Index got = Index::open(dir, Index::Mode::ReadOnly);
  int hits = 0, total = 0;
  for (int64_t id = 1; id <= 30; ++id) {
    SearchOptions o;
    o.k = 5;
    o.nprobe = 1;
    const auto q = ref.vector(id);
    std::set<int64_t> exact;
    SearchOptions all = o;
    all.nprobe = 0;
    for (const auto& h : ref.search_vector(q, all)) exact.insert(h.item.id);
    const auto approx = got.search_vector(q, o);
    for (const auto& h : approx) hits += exact.count(h.item.id) ? 1 : 0;
    total += 5;
    ASSERT_FALSE(approx.empty());
    EXPECT_EQ(approx[0].item.id, id);  // the query's own vector is in the list it probes first
  }
  EXPECT_GT(hits, total / 2);
  // The index is read-only: writes are refused with a clear message.
  auto add = run_cli({"index", "add", dir, images()});
  EXPECT_NE(add.exit_code, 0);
  EXPECT_NE(add.err.find("on-disk build"), std::string::npos) << add.err;
  // search reads it from the CLI with --nprobe.
  auto s = run_cli({"search", dir, "--like", "#3", "-k", "3", "--nprobe", "4", "--format", "json"});
  EXPECT_EQ(s.exit_code, 0) << s.err;
}

TEST(IndexBuildMpi, KilledRankResumesItsShard) {
  REQUIRE_MPIRUN();
  const std::string dir = clipkit::test::temp_dir() + "/killed.idx";
  const std::vector<std::string> args = {"index", "build", dir, images(), "--model", kModel, "--recursive", "--commit-every", "2"};
  auto killed = mpirun(3, args, "CLIPKIT_TEST_KILL_SHARD=1:2");
  EXPECT_NE(killed.exit_code, 0) << killed.out;
  EXPECT_FALSE(fs::exists(dir + "/catalog.sqlite"));
  // Rank 1 committed two batches of 2 files before it died.
  const auto partial = shard_paths(dir, 3);
  EXPECT_EQ(partial[1].size(), 4u);
  auto r = mpirun(3, args);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("resumed after 4 files"), std::string::npos) << r.out;
  expect_same_as_reference(dir);
}

TEST(IndexBuildMpi, FailingRankEndsTheJobNamingRankAndFile) {
  REQUIRE_MPIRUN();
  const std::string dir = clipkit::test::temp_dir() + "/failing.idx";
  fs::create_directories(dir + "/shards");
  const std::string bad = dist::shard_path(dir, 1, 3);
  std::ofstream(bad) << "this is not a shard file, not even a database..........................................................";
  auto r = mpirun(3, {"index", "build", dir, images(), "--model", kModel, "--recursive"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("rank 1 of 3"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(bad), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/catalog.sqlite"));
}

TEST(IndexBuildMpi, InterruptedMergeRerunGivesTheSameIndex) {
  REQUIRE_MPIRUN();
  const std::string dir = clipkit::test::temp_dir() + "/remerge.idx";
  auto r = mpirun(3, {"index", "build", dir, images(), "--model", kModel, "--recursive", "--kind", "IVF4,Flat"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // A merge stopped after moving some files but before the catalog: damaged data files in place,
  // no catalog, leftovers in the staging folder.
  for (const char* f : {"catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"}) fs::remove(dir + "/" + f);
  std::ofstream(dir + "/vectors.ivfdata", std::ios::trunc) << "partial";
  fs::create_directories(dir + "/.build-staging");
  std::ofstream(dir + "/.build-staging/catalog.sqlite") << "partial";
  auto m = run_cli({"index", "build", dir, "--merge"});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  expect_same_as_reference(dir, 4);
  // And the whole job rerun on a finished build skips every phase.
  auto again = mpirun(3, {"index", "build", dir, images(), "--model", kModel, "--recursive", "--kind", "IVF4,Flat"});
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_NE(again.out.find("already embedded"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("merge: already done"), std::string::npos) << again.out;
  expect_same_as_reference(dir, 4);
}

TEST(IndexBuild, OnDiskFilesThatDoNotMatchAreRefusedByName) {
  const std::string dir = clipkit::test::temp_dir() + "/damaged.idx";
  auto r = run_cli({"index", "build", dir, images(), "--model", kModel, "--recursive", "--kind", "IVF4,Flat", "--discard-shards"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto ok = run_cli({"search", dir, "--like", "#1", "-k", "3", "--format", "csv"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out.find("IO_FLAG"), std::string::npos) << "faiss chatter on stdout: " << ok.out;
  // The catalog of an on-disk build keeps no vectors: they are read from vectors.f32 (the same
  // as the single-process index's), and verify accepts it.
  {
    Index ref = Index::open(reference_index(), Index::Mode::ReadOnly);
    Index got = Index::open(dir, Index::Mode::ReadOnly);
    ASSERT_EQ(got.info().items, ref.info().items);
    for (int64_t id = 1; id <= ref.info().items; id += 7) {
      const auto va = ref.vector(id), vb = got.vector(id);
      ASSERT_EQ(va.size(), vb.size());
      EXPECT_LT(clipkit::test::max_abs_diff(va.data(), vb.data(), va.size()), 1e-5) << id;
    }
    EXPECT_TRUE(got.verify().ok);
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open_v2((dir + "/catalog.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, "SELECT max(length(vector)) FROM items", -1, &st, nullptr);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    EXPECT_EQ(sqlite3_column_int64(st, 0), 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
  // --discard-shards: every added shard kept its description only; a rerun skips every phase, and
  // training another kind says what it needs.
  const int n = dist::count_shards(dir);
  ASSERT_GT(n, 0);
  for (const auto& rows : shard_paths(dir, n)) EXPECT_TRUE(rows.empty());
  auto again = run_cli({"index", "build", dir, images(), "--model", kModel, "--recursive", "--kind", "IVF4,Flat", "--discard-shards"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  auto other = run_cli({"index", "build", dir, "--train", "--kind", "IVF2,Flat"});
  EXPECT_NE(other.exit_code, 0);
  EXPECT_NE(other.err.find("kept only its description"), std::string::npos) << other.err;
  // Once merged, shards/ can go: a rerun of the whole build recognises the finished index.
  const auto before = fs::file_size(dir + "/catalog.sqlite");
  fs::remove_all(dir + "/shards");
  auto after = run_cli({"index", "build", dir, images(), "--model", kModel, "--recursive", "--kind", "IVF4,Flat"});
  EXPECT_EQ(after.exit_code, 0) << after.err;
  EXPECT_NE(after.out.find("merge: already done"), std::string::npos) << after.out;
  EXPECT_FALSE(fs::exists(dir + "/shards/shard-00000-of-00001.sqlite"));
  EXPECT_EQ(fs::file_size(dir + "/catalog.sqlite"), before);
  // A lists file of another size than the index records.
  const std::string lists = dir + "/vectors.ivfdata";
  const auto size = fs::file_size(lists);
  fs::resize_file(lists, size - 8);
  auto bad = run_cli({"search", dir, "--like", "#1", "-k", "3"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("vectors.ivfdata"), std::string::npos) << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  fs::resize_file(lists, size);
  // An exact vector file that holds fewer vectors than the catalog.
  const std::string exact = dir + "/vectors.f32";
  fs::resize_file(exact, fs::file_size(exact) - 4 * 64);
  auto bad2 = run_cli({"search", dir, "--like", "#1", "-k", "3"});
  EXPECT_NE(bad2.exit_code, 0);
  EXPECT_NE(bad2.err.find("vectors.f32"), std::string::npos) << bad2.err;
  // No exact vector file at all: the catalog has no vectors to fall back on.
  fs::remove(exact);
  auto bad3 = run_cli({"search", dir, "--like", "#1", "-k", "3"});
  EXPECT_NE(bad3.exit_code, 0);
  EXPECT_NE(bad3.err.find("vectors.f32"), std::string::npos) << bad3.err;
  EXPECT_EQ(std::count(bad3.err.begin(), bad3.err.end(), '\n'), 1) << bad3.err;
}
