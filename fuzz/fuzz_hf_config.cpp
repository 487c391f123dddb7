// libFuzzer target: a Hugging Face model folder whose config.json (and, after a NUL byte in the
// input, preprocessor_config.json) come from the input, beside a fixed small safetensors file with
// Hugging Face tensor names. The folder is loaded and the activation and architecture are read
// from the config; every failure must be a clipkit::Error. The folder is in memory-backed storage
// (scratch.h).

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "clipkit/error.h"
#include "io/checkpoint.h"
#include "model/encoder.h"
#include "scratch.h"

namespace fs = std::filesystem;

namespace {

void write(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

const fs::path& folder() {
  static const fs::path dir = [] {
    const fs::path d = fuzzutil::scratch_dir() / "hf";
    fs::create_directories(d);
    fs::copy_file(CLIPKIT_FUZZ_HF_WEIGHTS, d / "model.safetensors", fs::copy_options::overwrite_existing);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  const size_t z = in.find('\0');
  write(folder() / "config.json", in.substr(0, z));
  std::error_code ec;
  if (z == std::string::npos)
    fs::remove(folder() / "preprocessor_config.json", ec);
  else
    write(folder() / "preprocessor_config.json", in.substr(z + 1));
  try {
    const clipkit::Checkpoint ck = clipkit::load_checkpoint(folder().string());
    (void)clipkit::resolve_activation(ck, "auto");
    (void)clipkit::infer_architecture(ck);
  } catch (const clipkit::Error&) {
  }
  return 0;
}
