#include "kernels/weight_memory.h"

#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>

#include "clipkit/error.h"
#include "kernels/gemm.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels answer EINVAL and pages fault lazily
#endif

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

namespace clipkit {
namespace {

constexpr size_t kAlign = 64;
constexpr size_t kMinBlock = size_t{4} << 20;
constexpr size_t kMaxBlock = size_t{32} << 20;
constexpr size_t kHugePage = size_t{2} << 20;

std::atomic<size_t> g_mapped{0};

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

// Faults every page touching [p, p + n) in, split across the compute threads: the kernel's page
// allocation and zeroing run on each core at once.
void populate(char* begin, size_t bytes) {
  const size_t page = page_size();
  const uintptr_t first = reinterpret_cast<uintptr_t>(begin) / page * page;
  const uintptr_t end = round_up(reinterpret_cast<uintptr_t>(begin) + bytes, page);
  char* p = reinterpret_cast<char*>(first);
  const size_t n = end - first;
  const int threads = std::max(1, std::min(num_threads(), static_cast<int>(n / (size_t{1} << 20)) + 1));
  const size_t part = round_up((n + static_cast<size_t>(threads) - 1) / static_cast<size_t>(threads), page);
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int t = 0; t < threads; ++t) {
    const size_t begin = static_cast<size_t>(t) * part;
    if (begin < n) madvise(p + begin, std::min(part, n - begin), MADV_POPULATE_WRITE);  // best effort
  }
}

struct Block {
  char* base = nullptr;
  size_t size = 0;
  size_t used = 0;  // guarded by g_mutex

  explicit Block(size_t bytes) : size(round_up(bytes, page_size())) {
    // Blocks of a huge page or more are aligned to it and asked for as transparent huge pages:
    // on virtual machines the first touch of each 4 KiB page of fresh memory costs several
    // microseconds, which dominated the load of large models (2.4 of 3.2 CPU seconds while
    // packing XLM-R large in f32); the kernel's huge pages take that cost once per 2 MiB.
    const bool huge = size >= kHugePage;
    const size_t reserve = huge ? size + kHugePage : size;
    void* p = mmap(nullptr, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      throw Error(ErrorCode::Limit, "cannot map " + std::to_string(size >> 20) + " MiB for model weights: " +
                                        std::strerror(errno));
    base = static_cast<char*>(p);
    if (huge) {
      const uintptr_t start = reinterpret_cast<uintptr_t>(p);
      const uintptr_t aligned = round_up(start, kHugePage);
      if (aligned > start) munmap(p, aligned - start);
      const uintptr_t end = start + reserve, used_end = aligned + size;
      if (end > used_end) munmap(reinterpret_cast<void*>(used_end), end - used_end);
      base = reinterpret_cast<char*>(aligned);
      madvise(base, size, MADV_HUGEPAGE);
    }
    g_mapped += size;
  }
  ~Block() {
    munmap(base, size);
    g_mapped -= size;
  }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;
};

std::mutex g_mutex;
std::weak_ptr<Block> g_current;  // the block small requests are cut from; freed with its last user

}  // namespace

std::shared_ptr<void> allocate_weight_memory(size_t bytes) {
  const size_t need = round_up(std::max<size_t>(bytes, 1), kAlign);
  std::lock_guard<std::mutex> lock(g_mutex);
  std::shared_ptr<Block> cur = g_current.lock();
  if (cur && cur->size - cur->used >= need) {
    char* p = cur->base + cur->used;
    cur->used += need;
    populate(p, need);
    return std::shared_ptr<void>(cur, p);
  }
  // Blocks grow with what is mapped already: a small model stays in one small block; a large one
  // gets 32 MiB blocks (at most one partly used at a time).
  const size_t grow = std::clamp(g_mapped.load(), kMinBlock, kMaxBlock);
  if (need >= grow / 8) {
    // A large matrix gets a block of its own, of its size (no tail is left unused); the current
    // block keeps serving small ones, so at most 1/8 of a block is lost where one did not fit.
    auto own = std::make_shared<Block>(need);
    own->used = need;
    populate(own->base, need);
    return std::shared_ptr<void>(own, own->base);
  }
  auto fresh = std::make_shared<Block>(grow);
  fresh->used = need;
  populate(fresh->base, need);
  g_current = fresh;
  return std::shared_ptr<void>(fresh, fresh->base);
}

void prefault_mapped(const void* p, size_t bytes) {
  if (bytes == 0) return;
  const size_t page = page_size();
  const uintptr_t first = reinterpret_cast<uintptr_t>(p) / page * page;
  const uintptr_t end = round_up(reinterpret_cast<uintptr_t>(p) + bytes, page);
  char* base = reinterpret_cast<char*>(first);
  const size_t n = end - first;
  const int threads = std::max(1, std::min(num_threads(), static_cast<int>(n / (size_t{4} << 20)) + 1));
  const size_t part = round_up((n + static_cast<size_t>(threads) - 1) / static_cast<size_t>(threads), page);
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int t = 0; t < threads; ++t) {
    const size_t begin = static_cast<size_t>(t) * part;
    if (begin >= n) continue;
    const size_t len = std::min(part, n - begin);
    if (madvise(base + begin, len, MADV_POPULATE_READ) != 0) madvise(base + begin, len, MADV_WILLNEED);
  }
}

size_t weight_memory_mapped_bytes() { return g_mapped.load(); }

}  // namespace clipkit
