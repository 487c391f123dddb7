// Memory for packed weights.
//
// Packing a model's weights writes a few hundred megabytes into fresh memory. Taken one 4 KiB
// page fault at a time (the kernel traps, zeroes and charges each page) that costs more than the
// packing itself: about 0.23 s for ViT-B/32's 476 MB of packed matrices on one core. Here the
// pages are mapped in large blocks and faulted in by the kernel in one call per thread
// (MADV_POPULATE_WRITE, split across the compute threads), which measured 0.09 s for the same bytes
// on 2 cores. Small requests share a block (bump allocation, 64-byte aligned); a block is unmapped
// when the last allocation in it is released. Blocks grow with the memory in use, so a tiny model
// does not map a large block. Blocks of 2 MiB or more are aligned to and advised as transparent
// huge pages: on virtual machines the first touch of each 4 KiB page still cost several
// microseconds after it was populated, most of the CPU time of a large model's plain load.
#pragma once
#include <cstddef>
#include <memory>

namespace clipkit {

// Zero-filled, writable memory of at least `bytes` bytes, 64-byte aligned, resident on return
// where the kernel supports populating (Linux 5.14+; otherwise pages fault in on first touch).
// Throws Error(Limit) when the memory cannot be mapped.
std::shared_ptr<void> allocate_weight_memory(size_t bytes);

// Maps the pages of [p, p + bytes) of a read-only file mapping into the process now, split across
// the compute threads (MADV_POPULATE_READ, Linux 5.14+; a read-ahead hint elsewhere), so that the
// first use of weights stored in the file does not take one page fault per page. Best effort.
void prefault_mapped(const void* p, size_t bytes);

// Bytes currently mapped for weight memory (all live blocks), for tests and diagnostics.
size_t weight_memory_mapped_bytes();

}  // namespace clipkit
