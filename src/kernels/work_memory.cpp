#include "kernels/work_memory.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>

namespace clipkit {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kOwnMappingMin = size_t{1} << 20;
constexpr size_t kAlign = 64;

std::atomic<size_t> g_mapped{0};

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

}  // namespace

void* allocate_work_bytes(size_t bytes) {
  if (bytes < kOwnMappingMin) {
    void* p = std::aligned_alloc(kAlign, round_up(bytes == 0 ? 1 : bytes, kAlign));
    if (!p) throw std::bad_alloc();
    return p;
  }
  const size_t size = round_up(bytes, kHugePage);
  if (size < bytes) throw std::bad_alloc();
  // Reserve a huge page more, keep the aligned part, give back the rest.
  void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = round_up(start, kHugePage);
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t end = start + size + kHugePage, used_end = aligned + size;
  if (end > used_end) munmap(reinterpret_cast<void*>(used_end), end - used_end);
  void* p = reinterpret_cast<void*>(aligned);
  madvise(p, size, MADV_HUGEPAGE);  // best effort: where THP is off the pages are ordinary ones
  g_mapped += size;
  return p;
}

void free_work_bytes(void* p, size_t bytes) noexcept {
  if (!p) return;
  if (bytes < kOwnMappingMin) {
    std::free(p);
    return;
  }
  const size_t size = round_up(bytes, kHugePage);
  munmap(p, size);
  g_mapped -= size;
}

size_t work_memory_mapped_bytes() { return g_mapped.load(); }

}  // namespace clipkit
