// libFuzzer target: `.clf` classifier files through ZeroShotClassifier::load.
//   Input starting with 'R': the rest is the file as is (a safetensors container, or garbage).
//   Otherwise: "classes JSON \0 templates JSON \0 logit_scale \0 rows", written as the metadata of a
//   valid classifier file around a fixed rows x 4 class matrix, so that mutations reach the
//   metadata checks past the container's own.
// A load must either give a classifier whose labels match its rows or throw clipkit::Error.
// The file is written (atomically, with its fsync) to memory-backed storage (scratch.h).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/zeroshot.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "scratch.h"

namespace {

std::vector<std::string> split0(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t z = s.find('\0', start);
    parts.push_back(s.substr(start, z == std::string::npos ? std::string::npos : z - start));
    if (z == std::string::npos) break;
    start = z + 1;
  }
  return parts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fuzzutil::scratch_path("input.clf");
  const std::string in(reinterpret_cast<const char*>(data), size);
  try {
    if (!in.empty() && in[0] == 'R') {
      FILE* f = std::fopen(path.c_str(), "wb");
      if (!f) return 0;
      std::fwrite(in.data() + 1, 1, in.size() - 1, f);
      std::fclose(f);
    } else {
      const auto parts = split0(in);
      const int64_t rows = parts.size() > 3 && !parts[3].empty() ? 1 + static_cast<uint8_t>(parts[3][0]) % 8 : 2;
      std::vector<float> m(static_cast<size_t>(rows * 4));
      for (size_t i = 0; i < m.size(); ++i) m[i] = 0.25f * static_cast<float>(i % 5) - 0.5f;
      std::map<std::string, std::string> meta{{"format", "clipkit-classifier"},
                                              {"version", "1"},
                                              {"classes", parts.size() > 0 ? parts[0] : ""},
                                              {"templates", parts.size() > 1 ? parts[1] : "[]"},
                                              {"logit_scale", parts.size() > 2 ? parts[2] : "100"},
                                              {"model_fingerprint", "fuzz"}};
      try {
        clipkit::write_safetensors(path, {{"class_embeds", clipkit::Tensor::from_f32(m, {rows, 4})}}, meta);
      } catch (const std::exception&) {
        return 0;  // metadata the writer refuses (not UTF-8): not a file this target is about
      }
    }
    const clipkit::ZeroShotClassifier clf = clipkit::ZeroShotClassifier::load(path, "");
    if (clf.labels().size() != clf.classes().size()) __builtin_trap();
  } catch (const clipkit::Error&) {
  }
  return 0;
}
