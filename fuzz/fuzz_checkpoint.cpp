// libFuzzer target: arbitrary bytes through load_checkpoint.
//   Input starting with 'P': the rest is a pickle program, wrapped into a valid PyTorch zip archive
//   (data.pkl + one 64-byte storage "0") so that mutations reach the unpickler past the CRC check.
//   'T': the same, inside a TorchScript-style archive (module classes allowed).
//   Anything else is written to a temporary file as is (zip, safetensors, JSON index, garbage).
// The file is in memory-backed storage (scratch.h).
// A load must either succeed (and every tensor be readable) or throw clipkit::Error.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "../tests/io/torch_writer.h"
#include "clipkit/error.h"
#include "io/checkpoint.h"
#include "scratch.h"

namespace {

const std::string& temp_path() {
  static const std::string p = fuzzutil::scratch_path("input.bin");
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (!bytes.empty() && bytes[0] == 'P')
    bytes = iotest::write_zip({{"archive/data.pkl", bytes.substr(1)}, {"archive/data/0", std::string(64, '\x3c')}});
  else if (!bytes.empty() && bytes[0] == 'T')  // the same as a TorchScript archive
    bytes = iotest::write_zip({{"m/data.pkl", bytes.substr(1)}, {"m/constants.pkl", "\x80\x02)."},
                               {"m/data/0", std::string(64, '\x3c')}});
  FILE* f = std::fopen(temp_path().c_str(), "wb");
  if (!f) return 0;
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  try {
    clipkit::Checkpoint ck = clipkit::load_checkpoint(temp_path());
    for (const auto& [name, t] : ck.tensors) {
      if (t.numel() > (int64_t{1} << 26)) continue;  // readable, but too slow to convert while fuzzing
      (void)t.to_f32();
    }
    (void)ck.weight_dtypes();
  } catch (const clipkit::Error&) {
  }
  return 0;
}
