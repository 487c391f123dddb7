// libFuzzer target: arbitrary bytes as a .npy file through read_npy. A read must either give a
// tensor whose bytes lie inside the file (converted to floats here) or throw clipkit::Error.
// The file is in memory-backed storage (scratch.h).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "clipkit/error.h"
#include "core/npy.h"
#include "scratch.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fuzzutil::scratch_path("input.npy");
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    const clipkit::Tensor t = clipkit::read_npy(path);
    if (t.nbytes() > size) __builtin_trap();  // a view must lie inside the file
    (void)t.to_f32();
  } catch (const clipkit::Error&) {
  }
  return 0;
}
