// Memory for work buffers: the activations, products and scratchpads that the encoders and
// kernels keep per thread between calls and grow on demand.
//
// The first batch after a load touches every page of these buffers for the first time (about
// 29 MB for 16 ViT-B/32 images). On virtual machines each first touch of a 4 KiB page costs
// several microseconds in the kernel, which made the first encode after a load markedly slower
// than the next ones. Buffers of 1 MiB or more are therefore mapped on their own, aligned to
// 2 MiB and advised as transparent huge pages: the kernel then faults them in one 2 MiB page at a
// time. Smaller buffers come from the ordinary heap.
#pragma once
#include <cstddef>
#include <new>
#include <vector>

namespace clipkit {

// At least `bytes` bytes, 64-byte aligned (huge-page aligned from 1 MiB on); throws
// std::bad_alloc when they cannot be had. Pages are not touched.
void* allocate_work_bytes(size_t bytes);
// Releases what allocate_work_bytes(bytes) returned (the same `bytes`).
void free_work_bytes(void* p, size_t bytes) noexcept;

template <class T>
struct WorkAllocator {
  using value_type = T;
  WorkAllocator() = default;
  template <class U>
  WorkAllocator(const WorkAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    if (n > static_cast<size_t>(-1) / sizeof(T)) throw std::bad_alloc();
    return static_cast<T*>(allocate_work_bytes(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { free_work_bytes(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const WorkAllocator<U>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const WorkAllocator<U>&) const noexcept {
    return false;
  }
};

// A grow-only work buffer.
template <class T>
using WorkVector = std::vector<T, WorkAllocator<T>>;

// Bytes currently mapped for work buffers of 1 MiB or more, for tests and diagnostics.
size_t work_memory_mapped_bytes();

}  // namespace clipkit
