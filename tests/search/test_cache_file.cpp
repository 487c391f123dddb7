// vectors.faiss from an untrusted or damaged folder: a cache whose faiss size fields were changed
// (and its checksum recomputed, so that it passes the file's own check) is never read when the
// catalog recorded another checksum: the index is rebuilt from the catalog. Without a recorded
// checksum, load_cache walks the faiss structure before faiss reads it (any size field larger
// than the file, any link outside the structure, any kind other than the header's is refused, so
// faiss never stops half-way through a structure it would then not free) and compares the types
// faiss read with those the header's index kind builds. Under AddressSanitizer these tests also
// show that nothing leaks.
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "search/cache_check.h"
#include "search/search_helpers.h"
#include "search/sqlite.h"
#include "search/vector_store.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using namespace clipkit;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

using namespace clipkit::search::cache_layout;

size_t payload_offset(const std::string& file) {
  uint32_t flen;
  std::memcpy(&flen, file.data() + kFactoryLength, 4);
  return kFixed + flen;
}

void rechecksum(std::string& file) {
  const size_t off = payload_offset(file);
  const uint64_t sum = search::cache_payload_checksum(reinterpret_cast<const uint8_t*>(file.data()) + off, file.size() - off);
  std::memcpy(file.data() + kChecksum, &sum, 8);
}

// Offsets in the faiss payload of every 8-byte value equal to `value`.
std::vector<size_t> find_u64(const std::string& file, uint64_t value) {
  std::vector<size_t> at;
  for (size_t i = payload_offset(file); i + 8 <= file.size(); ++i) {
    uint64_t v;
    std::memcpy(&v, file.data() + i, 8);
    if (v == value) at.push_back(i);
  }
  return at;
}

// The flat codes' length field: counted in floats (5 x 16) or, in some faiss versions, in bytes.
std::vector<size_t> code_lengths(const std::string& file) {
  auto at = find_u64(file, 5 * 16);
  if (at.empty()) at = find_u64(file, 5 * 16 * 4);
  return at;
}

void set_u64(std::string& file, size_t at, uint64_t value) { std::memcpy(file.data() + at, &value, 8); }

// A flat index of n vectors (dim 16) built by clipkit.
std::string make_index(int n, test::FakeModel& m) {
  const std::string pics = test::temp_dir() + "/pics";
  fs::create_directories(pics);
  std::vector<std::string> files;
  for (int k = 0; k < n; ++k) {
    files.push_back(pics + "/p" + std::to_string(k) + ".png");
    test::write_synthetic_png(files.back(), k, 20 + k, 18);
  }
  const std::string dir = test::temp_dir() + "/idx";
  Index idx = Index::create(dir, m.info());
  idx.add_files(files, m);
  return dir;
}

}  // namespace

TEST(CacheFile, ChangedCacheIsRebuiltFromTheCatalog) {
  test::FakeModel m;
  const std::string dir = make_index(5, m);
  const std::string cache = dir + "/vectors.faiss";
  const std::string good = read_all(cache);
  // The id map's and the flat codes' lengths (5 ids; 5 * 16 floats) set to about 3.5e9:
  // faiss would allocate 14 GB (or 28 GB) for them. The checksum is made to match again.
  std::string bad = good;
  const auto lengths = find_u64(bad, 5);
  const auto codes = code_lengths(bad);
  ASSERT_FALSE(lengths.empty());
  ASSERT_FALSE(codes.empty());
  for (size_t at : lengths) set_u64(bad, at, 3'500'000'000ull);
  for (size_t at : codes) set_u64(bad, at, 3'500'000'000ull);
  rechecksum(bad);
  write_all(cache, bad);
  {
    Index idx = Index::open(dir, Index::Mode::ReadOnly);
    ASSERT_EQ(idx.open_notes().size(), 1u);
    EXPECT_NE(idx.open_notes()[0].find("not the one the catalog recorded"), std::string::npos) << idx.open_notes()[0];
    EXPECT_EQ(idx.info().items, 5);
    const VerifyReport v = idx.verify();
    EXPECT_TRUE(v.ok) << (v.problems.empty() ? "" : v.problems[0]);
  }
  // A writer's open writes a good cache back; the next open reads it without a note.
  { Index idx = Index::open(dir); }
  {
    Index idx = Index::open(dir, Index::Mode::ReadOnly);
    EXPECT_TRUE(idx.open_notes().empty()) << idx.open_notes()[0];
    EXPECT_EQ(idx.info().items, 5);
  }
}

TEST(CacheFile, OversizedFaissFieldsAreRefusedBeforeAllocation) {
  test::FakeModel m;
  const std::string dir = make_index(5, m);
  const std::string cache = dir + "/vectors.faiss";
  const std::string good = read_all(cache);
  const std::string copy = test::temp_dir() + "/copy.faiss";
  write_all(copy, good);
  search::CacheHeader h;
  auto loaded = search::load_cache(copy, 16, &h);
  EXPECT_EQ(loaded->ntotal, 5);
  EXPECT_EQ(h.factory, "Flat");

  auto expect_refused = [&](const std::string& bytes, const std::string& part) {
    write_all(copy, bytes);
    try {
      search::load_cache(copy, 16, nullptr);
      ADD_FAILURE() << "a crafted cache was read (expected '" << part << "')";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Format);
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("copy.faiss"), std::string::npos) << e.what();
    }
  };
  // each length field alone, 2^32 elements
  const auto lengths = find_u64(good, 5);
  const auto codes = code_lengths(good);
  ASSERT_FALSE(lengths.empty());
  ASSERT_FALSE(codes.empty());
  for (size_t at : codes) {
    std::string bad = good;
    set_u64(bad, at, uint64_t{1} << 32);
    rechecksum(bad);
    expect_refused(bad, "more than the file holds");
  }
  // fewer stored ids than vectors (the id count at the payload's end lowered by one, the last id
  // dropped): faiss's own reader indexed past the ids building its reverse map
  {
    std::string bad = good.substr(0, good.size() - 8);
    set_u64(bad, bad.size() - 4 * 8 - 8, 4);
    set_u64(bad, kPayloadSize, bad.size() - payload_offset(bad));
    rechecksum(bad);
    expect_refused(bad, "stores 4 ids for 5 vectors");
  }
  // the header's vector count beyond what the payload can hold
  std::string bad = good;
  set_u64(bad, kNtotal, 1'000'000);
  rechecksum(bad);
  expect_refused(bad, "claims 1000000 vectors");
  // a checksum the catalog did not record
  const uint64_t other = 12345;
  write_all(copy, good);
  try {
    search::load_cache(copy, 16, nullptr, &other);
    ADD_FAILURE() << "a cache with another checksum was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not the one the catalog recorded"), std::string::npos) << e.what();
  }
  EXPECT_EQ(search::load_cache(copy, 16, &h, &h.checksum)->ntotal, 5);
}

// faiss builds an HNSW-over-PQ structure's distance table right after reading it, trusting that
// its storage is a product quantizer of a sane size: a one-byte change of an HNSW32 cache's type
// to "IHNp" made it dereference a null pointer (found by fuzz_index_cache).
TEST(CacheFile, HnswOverPqStructuresAreCheckedBeforeFaissReadsThem) {
  const int dim = 16;
  std::vector<float> v(static_cast<size_t>(40) * dim);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 7919) % 23) - 11.0f;
  std::vector<faiss::Index::idx_t> ids(40);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<faiss::Index::idx_t>(i) + 1;
  auto idx = search::make_index("HNSW32", dim);
  idx->add_with_ids(40, v.data(), ids.data());
  search::CacheHeader h;
  h.generation = 1;
  h.ntotal = 40;
  h.trained = 1;
  h.factory = "HNSW32";
  const std::string path = test::temp_dir() + "/hnsw.faiss";
  search::save_cache(path, *idx, h);
  const std::string good = read_all(path);
  EXPECT_EQ(search::load_cache(path, dim, nullptr)->ntotal, 40);

  auto expect_refused = [&](const std::string& bytes, const std::string& part) {
    write_all(path, bytes);
    try {
      search::load_cache(path, dim, nullptr);
      ADD_FAILURE() << "a crafted cache was read (expected '" << part << "')";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Format);
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  const size_t type = good.find("IHNf", payload_offset(good));
  ASSERT_NE(type, std::string::npos);
  std::string bad = good;
  bad[type + 3] = 'p';
  rechecksum(bad);
  expect_refused(bad, "over a product quantizer stores something else");
  // the flat storage relabelled as a product quantizer too: its bytes make no quantizer's sizes
  const size_t storage = bad.find("IxFI", type);
  ASSERT_NE(storage, std::string::npos);
  bad.replace(storage, 4, "IxPq");
  rechecksum(bad);
  expect_refused(bad, "product quantizer's sizes disagree");
}

TEST(CacheFile, CatalogsWithoutARecordedChecksumStillOpen) {
  // catalogs written before the checksum was kept: the cache is read (with the size checks)
  test::FakeModel m;
  const std::string dir = make_index(4, m);
  {
    search::Db db;
    db.open(dir + "/catalog.sqlite", false, false);
    db.exec("DELETE FROM meta WHERE key = 'cache_checksum'");
  }
  Index idx = Index::open(dir, Index::Mode::ReadOnly);
  EXPECT_TRUE(idx.open_notes().empty()) << idx.open_notes()[0];
  EXPECT_EQ(idx.info().items, 4);
  EXPECT_TRUE(idx.verify().ok);
}

namespace {

// A cache of `n` vectors (dim 16) in a structure built by `factory`, saved to `path`.
std::string save_kind(const std::string& factory, int n, const std::string& path, int added = -1) {
  const int dim = 16;
  std::vector<float> v(static_cast<size_t>(n) * dim);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 7919) % 23) - 11.0f + static_cast<float>(i % 5) * 0.1f;
  std::vector<faiss::Index::idx_t> ids(static_cast<size_t>(n));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<faiss::Index::idx_t>(i) * 3 + 1;
  auto idx = search::make_index(factory, dim);
  if (!idx->is_trained) {
    // two k-means iterations give as valid a structure as faiss's 25, in a tenth of the time
    if (auto* pq = dynamic_cast<faiss::IndexPQ*>(idx->index)) pq->pq.cp.niter = 2;
    if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(idx->index)) ivf->cp.niter = 2;
    if (auto* ivfpq = dynamic_cast<faiss::IndexIVFPQ*>(idx->index)) ivfpq->pq.cp.niter = 2;
    // one thread trains these small structures fastest (a team of threads spins on a busy machine)
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    search::train_index(*idx, v.data(), n);
    omp_set_num_threads(threads);
  }
  if (added < 0) added = n;  // (trained on n vectors, holding the first `added`)
  idx->add_with_ids(added, v.data(), ids.data());
  search::CacheHeader h;
  h.generation = 1;
  h.ntotal = added;
  h.trained = 1;
  h.factory = factory;
  search::save_cache(path, *idx, h);
  return read_all(path);
}

// The same file with another factory string in its header.
std::string relabel(const std::string& file, const std::string& factory) {
  std::string out = file.substr(0, kFactoryLength);
  const uint32_t len = static_cast<uint32_t>(factory.size());
  out.append(reinterpret_cast<const char*>(&len), 4);
  out += factory;
  out += file.substr(payload_offset(file));
  return out;
}

// Where the HNSW graph's neighbour count is in a cache of an HNSW structure: after the id map's
// header (37 bytes), the fourcc and the index header (4 + 33), the level probabilities, the level
// sizes, the levels and the offsets.
size_t neighbour_count_at(const std::string& file) {
  size_t at = payload_offset(file) + 37 + 4 + 33;
  for (size_t element : {8, 4, 4, 8}) {
    uint64_t count;
    std::memcpy(&count, file.data() + at, 8);
    at += 8 + count * element;
  }
  return at;
}

void expect_corrupt(const std::string& path, const std::string& bytes, const std::string& part) {
  write_all(path, bytes);
  try {
    search::load_cache(path, 16, nullptr);
    ADD_FAILURE() << "a crafted cache was read (expected '" << part << "')";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format);
    EXPECT_NE(std::string(e.what()).find("is corrupt"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

}  // namespace

// Every kind clipkit builds, kinds of a user's factory string that the walk knows, and one it does
// not know (ITQ's transform, read by faiss alone), read back with their vectors and answer like
// the structure that was saved.
TEST(CacheFile, EveryKindReadsBack) {
  const std::string path = test::temp_dir() + "/kind.faiss";
  for (const std::string factory : {"Flat", "HNSW32", "IVF4,Flat", "IVF4,PQ4x4", "PQ4x4", "IVF4_HNSW8,Flat", "IVF4,SQ8", "SQ8", "SQ4",
                                    "SQ6", "SQfp16", "HNSW16,SQ8", "PCA8,Flat", "PCAR8,IVF4,SQ8",
                                    "RR16,Flat", "L2norm,Flat", "Pad32,Flat", "ITQ8,Flat"}) {
    SCOPED_TRACE(factory);
    const std::string file = save_kind(factory, 100, path);
    // the walk knows every kind but ITQ's transform, and ends where the id map's ids begin
    const size_t off = payload_offset(file);
    const search::CacheWalk walk = search::walk_cache_structure(reinterpret_cast<const uint8_t*>(file.data()) + off,
                                                                file.size() - off, 37, 16, path);
    EXPECT_EQ(walk.complete, factory.find("ITQ") == std::string::npos);
    if (walk.complete) {
      EXPECT_EQ(walk.end, file.size() - off - 8 - 100 * 8);
    }
    search::CacheHeader h;
    auto idx = search::load_cache(path, 16, &h);
    EXPECT_EQ(idx->ntotal, 100);
    EXPECT_EQ(h.factory, factory);
    EXPECT_EQ(idx->id_map[7], 22);
    std::vector<float> q(16, 0.5f);
    std::vector<float> dist(3);
    std::vector<faiss::Index::idx_t> labels(3);
    ASSERT_TRUE(search::search_one(*idx, q.data(), 3, 64, 4, nullptr, dist.data(), labels.data()));
    EXPECT_GE(labels[0], 1);
    EXPECT_EQ(labels[0] % 3, 1);
  }
}

// An IVF structure with more than half its lists empty stores its list sizes sparsely.
TEST(CacheFile, SparseIvfListSizesReadBack) {
  const std::string path = test::temp_dir() + "/sparse.faiss";
  const std::string file = save_kind("IVF32,Flat", 100, path, 3);
  ASSERT_NE(file.find("sprs", payload_offset(file)), std::string::npos);
  auto idx = search::load_cache(path, 16, nullptr);
  EXPECT_EQ(idx->ntotal, 3);
  std::vector<float> dist(3);
  std::vector<faiss::Index::idx_t> labels(3);
  std::vector<float> q(16, 0.5f);
  ASSERT_TRUE(search::search_one(*idx, q.data(), 3, 0, 32, nullptr, dist.data(), labels.data()));
  std::vector<faiss::Index::idx_t> sorted(labels);
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<faiss::Index::idx_t>{1, 4, 7}));
}

// A structure other than the header's index kind is refused before faiss reads it: an HNSW cache
// relabelled as a two-level HNSW (faiss would search its flat storage as a two-level one), a flat
// cache whose header says HNSW, an IVF cache whose header says flat.
TEST(CacheFile, StructuresOtherThanTheHeadersKindAreCorrupt) {
  const std::string path = test::temp_dir() + "/kind.faiss";
  const std::string hnsw = save_kind("HNSW32", 40, path);
  std::string bad = hnsw;
  const size_t type = bad.find("IHNf", payload_offset(bad));
  ASSERT_NE(type, std::string::npos);
  bad[type + 3] = '2';
  rechecksum(bad);
  expect_corrupt(path, bad, "it holds IHN2 over IxFI where its header's index kind 'HNSW32' builds IHNf over IxFI");

  const std::string flat = save_kind("Flat", 40, path);
  expect_corrupt(path, relabel(flat, "HNSW32"), "it holds IxFI where its header's index kind 'HNSW32' builds IHNf over IxFI");
  expect_corrupt(path, relabel(flat, "not a factory"), "its header's index kind 'not a factory' is not a valid faiss factory");
  expect_corrupt(path, relabel(flat, "IVF99999999,Flat"), "names a size (99999999) larger than the cache");
  expect_corrupt(path, relabel(flat, "PQ4x40"), "asks for codes of 40 bits");

  const std::string ivf = save_kind("IVF4,Flat", 100, path);
  expect_corrupt(path, relabel(ivf, "Flat"), "it holds IwFl over IxFI where its header's index kind 'Flat' builds IxFI");
}

// HNSW payloads whose sizes or links point outside the structure: refused before faiss reads them.
TEST(CacheFile, DamagedHnswGraphsAreCorrupt) {
  const std::string path = test::temp_dir() + "/hnsw.faiss";
  const std::string good = save_kind("HNSW32", 40, path);
  const size_t count_at = neighbour_count_at(good);
  uint64_t neighbours;
  std::memcpy(&neighbours, good.data() + count_at, 8);
  ASSERT_EQ(neighbours % 40, 0u);  // what the walk above found is the neighbour array: 40 nodes' lists

  // a huge neighbour count
  std::string bad = good;
  set_u64(bad, count_at, uint64_t{1} << 40);
  rechecksum(bad);
  expect_corrupt(path, bad, "says 1099511627776, more than the file holds");
  // one neighbour fewer than the offsets need (the array shortened by one entry)
  bad = good;
  set_u64(bad, count_at, neighbours - 1);
  bad.erase(count_at + 8 + (neighbours - 1) * 4, 4);
  set_u64(bad, kPayloadSize, bad.size() - payload_offset(bad));
  rechecksum(bad);
  expect_corrupt(path, bad, "neighbour entries where its offsets need");
  // a neighbour outside the graph
  bad = good;
  const int32_t far = 1000;
  std::memcpy(bad.data() + count_at + 8, &far, 4);
  rechecksum(bad);
  expect_corrupt(path, bad, "links node 0 to 1000 at level 0");
  // a stored efSearch of 2^29 (faiss sized every search's heap by it)
  bad = good;
  const int32_t ef = 1 << 29;
  std::memcpy(bad.data() + count_at + 8 + neighbours * 4 + 12, &ef, 4);
  rechecksum(bad);
  expect_corrupt(path, bad, "efSearch 536870912");
  // a search beam of 2^24 entries over the upper levels (every search would allocate and scan it)
  bad = good;
  const int32_t beam = 1 << 24;
  std::memcpy(bad.data() + count_at + 8 + neighbours * 4 + 16, &beam, 4);
  rechecksum(bad);
  expect_corrupt(path, bad, "upper beam 16777216");
  // the payload cut in the neighbour array
  bad = good.substr(0, count_at + 8 + neighbours * 2);
  set_u64(bad, kPayloadSize, bad.size() - payload_offset(bad));
  rechecksum(bad);
  expect_corrupt(path, bad, "more than the file holds");
  // the payload cut in the storage's vectors
  bad = good.substr(0, good.size() - 40 * 8 - 8 - 100);
  set_u64(bad, kPayloadSize, bad.size() - payload_offset(bad));
  rechecksum(bad);
  expect_corrupt(path, bad, "more than the file holds");
}

// IVF payloads: a list entry outside the id map, lists that hold fewer entries than the vectors.
TEST(CacheFile, DamagedIvfListsAreCorrupt) {
  const std::string path = test::temp_dir() + "/ivf.faiss";
  const std::string good = save_kind("IVF4,Flat", 100, path);
  // the last list's last entry (just before the id map's 100 ids and their count) set past the ids
  std::string bad = good;
  const size_t last_entry = bad.size() - 100 * 8 - 8 - 8;
  set_u64(bad, last_entry, 100);
  rechecksum(bad);
  expect_corrupt(path, bad, "an IVF list holds entry 100 of 100");
  bad = good;
  const size_t list_type = bad.find("full", payload_offset(bad));
  ASSERT_NE(list_type, std::string::npos);
  uint64_t first;
  std::memcpy(&first, bad.data() + list_type + 12, 8);
  ASSERT_GT(first, 0u);
  set_u64(bad, list_type + 12, first - 1);  // the first list one entry shorter: its last entry read as codes
  rechecksum(bad);
  expect_corrupt(path, bad, "is corrupt");
}

// A user's scalar quantizer or transform whose stored sizes would make a search read past them
// (faiss checks a linear map's matrix against its dimensions before it has read them): refused
// before faiss reads them.
TEST(CacheFile, DamagedQuantizersAndTransformsAreCorrupt) {
  const std::string path = test::temp_dir() + "/sq.faiss";
  // SQ8 keeps a range per dimension: 32 trained values for dim 16, its count just after the
  // index header (37 + 4 + 33 bytes into the payload), the type and the code size
  const std::string sq = save_kind("SQ8", 40, path);
  const size_t sq_at = payload_offset(sq) + 37 + 4 + 33;
  uint64_t values;
  std::memcpy(&values, sq.data() + sq_at + 4 + 4 + 4 + 8 + 8, 8);
  ASSERT_EQ(values, 32u);
  std::string bad = sq;
  set_u64(bad, sq_at + 4 + 4 + 4 + 8 + 8, 2);  // two values, then 30 floats read as the codes' length
  bad.erase(sq_at + 4 + 4 + 4 + 8 + 8 + 8 + 2 * 4, 30 * 4);
  set_u64(bad, kPayloadSize, bad.size() - payload_offset(bad));
  rechecksum(bad);
  expect_corrupt(path, bad, "its scalar quantizer of type 0 holds 2 trained values, not 32");
  bad = sq;
  const int32_t type = 9;
  std::memcpy(bad.data() + sq_at, &type, 4);
  rechecksum(bad);
  expect_corrupt(path, bad, "its scalar quantizer has type 9");

  // PCA from 16 to 8 dimensions: its output dimension raised to 12 over the same 128-value matrix
  const std::string pca = save_kind("PCA8,Flat", 40, path);
  const size_t dims = pca.find("IxF", payload_offset(pca));  // the flat structure after the transform
  ASSERT_NE(dims, std::string::npos);
  int32_t d_in, d_out;
  std::memcpy(&d_in, pca.data() + dims - 9, 4);
  std::memcpy(&d_out, pca.data() + dims - 5, 4);
  ASSERT_EQ(d_in, 16);
  ASSERT_EQ(d_out, 8);
  bad = pca;
  const int32_t wider = 12;
  std::memcpy(bad.data() + dims - 5, &wider, 4);
  rechecksum(bad);
  expect_corrupt(path, bad, "transform of 16 to 12 dimensions holds 128 matrix values");
}
