#include "core/work_buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>

#include "clipkit/error.h"

namespace clipkit {

namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kHugeFrom = size_t{1} << 20;
constexpr size_t kPage = 4096;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

void* map_work_memory(size_t bytes, size_t* mapped) {
  const bool huge = bytes >= kHugeFrom;
  const size_t len = round_up(std::max<size_t>(bytes, 1), huge ? kHugePage : kPage);
  // A huge-page array is cut 2 MiB-aligned out of a mapping one huge page longer.
  const size_t reserve = huge ? len + kHugePage : len;
  void* p = mmap(nullptr, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw Error(ErrorCode::Limit, "cannot map " + std::to_string(bytes >> 20) + " MiB of work memory: " +
                                      std::strerror(errno));
  if (huge) {
    const uintptr_t start = reinterpret_cast<uintptr_t>(p), aligned = round_up(start, kHugePage);
    if (aligned > start) munmap(p, aligned - start);
    if (start + reserve > aligned + len) munmap(reinterpret_cast<void*>(aligned + len), start + reserve - aligned - len);
    p = reinterpret_cast<void*>(aligned);
    madvise(p, len, MADV_HUGEPAGE);  // a hint: without it the array is on small pages
  }
  *mapped = len;
  return p;
}

void unmap_work_memory(void* p, size_t mapped) {
  if (p) munmap(p, mapped);
}

}  // namespace clipkit
