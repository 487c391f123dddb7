// Small pieces shared by the oneDNN-backed kernels (Linear, convolution, pooling):
// the CPU engine, a stream per thread, grow-only per-thread buffers, error text, f16 widening.
#pragma once
#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <vector>

#include "kernels/act_layout.h"

namespace clipkit::onednn {

// The process's CPU engine (created on first use).
const dnnl::engine& cpu_engine();
// An in-order stream on that engine, one per calling thread.
dnnl::stream& thread_stream();

// Grows buf to at least n elements (never shrinks) and returns its data.
template <class T, class A>
T* grow(std::vector<T, A>& buf, size_t n) {
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// The oneDNN format tag of an activation layout.
dnnl::memory::format_tag format_tag(ActLayout layout);

// "message (status N)" for a oneDNN exception.
std::string describe(const dnnl::error& e);

// float -> IEEE half (round to nearest even) for n values: the f16 copy of packed weights.
std::vector<uint16_t> narrow_to_half(const float* src, size_t n);
// The same into dst, on the calling thread only.
void narrow_to_half_serial(const float* src, uint16_t* dst, size_t n);

// IEEE half -> float for n values (F16C when the CPU has it), split across the library threads.
void half_to_float_n(const uint16_t* src, float* dst, size_t n);
// The same on the calling thread only.
void half_to_float_serial(const uint16_t* src, float* dst, size_t n);

}  // namespace clipkit::onednn
