// Weight memory: zero-filled, aligned, non-overlapping allocations, released with their last user.
// Work memory: grow-only buffers, large ones in huge-page-aligned mappings of their own.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/weight_memory.h"
#include "kernels/work_memory.h"

namespace {

using clipkit::allocate_weight_memory;
using clipkit::weight_memory_mapped_bytes;

bool all_zero(const void* p, size_t n) {
  const auto* c = static_cast<const unsigned char*>(p);
  return std::all_of(c, c + n, [](unsigned char b) { return b == 0; });
}

TEST(WeightMemory, ZeroFilledAlignedAndDisjoint) {
  const size_t before = weight_memory_mapped_bytes();
  {
    std::vector<std::pair<std::shared_ptr<void>, size_t>> blocks;
    // Small (shared blocks), medium and large (blocks of their own), and odd sizes.
    for (size_t n : {size_t{1}, size_t{100}, size_t{4096}, size_t{333333}, size_t{3} << 20, size_t{9} << 20,
                     size_t{65}, size_t{1} << 20, size_t{7}})
      blocks.emplace_back(allocate_weight_memory(n), n);
    for (auto& [p, n] : blocks) {
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p.get()) % 64, 0u) << n;
      EXPECT_TRUE(all_zero(p.get(), n)) << n;
    }
    // Fill each with its own byte; none overwrote another.
    for (size_t i = 0; i < blocks.size(); ++i) std::memset(blocks[i].first.get(), static_cast<int>(i + 1), blocks[i].second);
    for (size_t i = 0; i < blocks.size(); ++i) {
      const auto* c = static_cast<const unsigned char*>(blocks[i].first.get());
      EXPECT_TRUE(std::all_of(c, c + blocks[i].second, [&](unsigned char b) { return b == i + 1; })) << i;
    }
    EXPECT_GT(weight_memory_mapped_bytes(), before);
  }
  // Every block's last user is gone: nothing stays mapped.
  EXPECT_EQ(weight_memory_mapped_bytes(), before);
}

TEST(WeightMemory, ABlockLivesAsLongAsAnyAllocationInIt) {
  const size_t before = weight_memory_mapped_bytes();
  auto a = allocate_weight_memory(1000);
  auto b = allocate_weight_memory(1000);  // same block as `a`
  std::memset(b.get(), 0x5a, 1000);
  a.reset();
  EXPECT_GT(weight_memory_mapped_bytes(), before);
  const auto* c = static_cast<const unsigned char*>(b.get());
  EXPECT_TRUE(std::all_of(c, c + 1000, [](unsigned char x) { return x == 0x5a; }));
  b.reset();
  EXPECT_EQ(weight_memory_mapped_bytes(), before);
}

TEST(WorkMemory, LargeBuffersGetAlignedMappingsOfTheirOwnAndGiveThemBack) {
  const size_t before = clipkit::work_memory_mapped_bytes();
  {
    clipkit::WorkVector<float> small(100, 1.5f), large((size_t{3} << 20) / sizeof(float) + 5, 2.5f);
    clipkit::WorkVector<uint8_t> odd(size_t{1} << 20, 7);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data()) % 64, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(large.data()) % (size_t{2} << 20), 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(odd.data()) % (size_t{2} << 20), 0u);
    EXPECT_EQ(clipkit::work_memory_mapped_bytes() - before, (size_t{4} << 20) + (size_t{2} << 20));
    // Growing keeps the values (the vector copies into a larger mapping and frees the old one).
    large.resize(large.size() * 2, 3.5f);
    EXPECT_EQ(large[0], 2.5f);
    EXPECT_EQ(large[large.size() / 2 - 1], 2.5f);
    EXPECT_EQ(large.back(), 3.5f);
    EXPECT_TRUE(std::all_of(small.begin(), small.end(), [](float v) { return v == 1.5f; }));
    EXPECT_TRUE(std::all_of(odd.begin(), odd.end(), [](uint8_t v) { return v == 7; }));
    EXPECT_EQ(clipkit::work_memory_mapped_bytes() - before, (size_t{8} << 20) + (size_t{2} << 20));
  }
  EXPECT_EQ(clipkit::work_memory_mapped_bytes(), before);
}

}  // namespace
