// vectors.faiss from an untrusted or damaged folder: a cache whose faiss size fields were changed
// (and its checksum recomputed, so that it passes the file's own check) is never read when the
// catalog recorded another checksum: the index is rebuilt from the catalog. Without a recorded
// checksum, load_cache refuses any size field larger than the file before faiss allocates it.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "search/search_helpers.h"
#include "search/sqlite.h"
#include "search/vector_store.h"
#include "support/sanitizer.h"
#include "support/test_support.h"

#ifdef CLIPKIT_TEST_ASAN
#include <sanitizer/lsan_interface.h>
#define CLIPKIT_FAISS_MAY_LEAK __lsan::ScopedDisabler faiss_leaks_on_error
#else
#define CLIPKIT_FAISS_MAY_LEAK
#endif

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
  CLIPKIT_FAISS_MAY_LEAK;  // faiss does not free a half-read structure when reading stops
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
  CLIPKIT_FAISS_MAY_LEAK;  // faiss does not free a half-read structure when reading stops
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
