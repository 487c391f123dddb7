// Grow-only work arrays for the encoders' per-thread buffers, in anonymous memory mapped in
// transparent huge pages from 1 MiB on. The activations of a large model's batch are several
// MiB per buffer and some passes read them with strides of a page or more (the attention reads a
// head's columns of in_proj's product, rows 3 · width floats apart): on 4 KiB pages those reads
// miss the TLB about as often as the cache.
#pragma once

#include <cstddef>
#include <cstring>

namespace clipkit {

// Zero-filled memory of at least `bytes` bytes (2 MiB-aligned huge pages from 1 MiB on); *mapped
// receives the length to give back to unmap_work_memory. Throws Error(Limit) when none is left.
void* map_work_memory(size_t bytes, size_t* mapped);
void unmap_work_memory(void* p, size_t mapped);

// An array that only grows; new elements are zero (as a resized vector's), old ones are kept.
template <class T>
class WorkBuffer {
 public:
  WorkBuffer() = default;
  WorkBuffer(const WorkBuffer&) = delete;
  WorkBuffer& operator=(const WorkBuffer&) = delete;
  ~WorkBuffer() { release(); }

  T* data() const { return data_; }
  size_t size() const { return size_; }

  // At least n elements; returns data().
  T* grow(size_t n) {
    if (n <= size_) return data_;
    size_t mapped = 0;
    T* p = static_cast<T*>(map_work_memory(n * sizeof(T), &mapped));
    if (size_ > 0) std::memcpy(static_cast<void*>(p), data_, size_ * sizeof(T));
    release();
    data_ = p;
    size_ = n;
    mapped_ = mapped;
    return data_;
  }
  // Gives the memory back (size 0).
  void release() {
    if (data_) unmap_work_memory(data_, mapped_);
    data_ = nullptr;
    size_ = mapped_ = 0;
  }

 private:
  T* data_ = nullptr;
  size_t size_ = 0, mapped_ = 0;
};

}  // namespace clipkit
