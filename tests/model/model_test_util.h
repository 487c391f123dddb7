// Helpers shared by the model tests: golden tensors and tolerance checks.
#pragma once
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/random_model.h"
#include "support/test_support.h"

namespace clipkit::modeltest {

using clipkit::structured_pixels;  // src/model/random_model.h

inline const SafetensorsFile& golden(const std::string& model) {
  static std::map<std::string, SafetensorsFile> cache;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(model);
  if (it == cache.end())
    it = cache.emplace(model, read_safetensors(test::data_path("golden/" + model + ".safetensors"))).first;
  return it->second;
}

inline const Tensor& golden_tensor(const std::string& model, const std::string& name) {
  const auto& g = golden(model);
  auto it = g.tensors.find(name);
  if (it == g.tensors.end()) throw std::runtime_error("golden tensor missing: " + name);
  return it->second;
}

inline std::vector<float> golden_f32(const std::string& model, const std::string& name) {
  return golden_tensor(model, name).to_f32();
}

// Token rows of golden `input_ids` [T, 77].
inline std::vector<std::vector<int32_t>> golden_ids(const std::string& model, const std::string& name = "input_ids") {
  const Tensor& t = golden_tensor(model, name);
  const int64_t context = t.shape.back();
  const int64_t rows = t.numel() / context;
  const auto* p = static_cast<const int32_t*>(t.data);
  std::vector<std::vector<int32_t>> out;
  for (int64_t r = 0; r < rows; ++r) out.emplace_back(p + r * context, p + (r + 1) * context);
  return out;
}

// A checkpoint read straight from an OpenAI-layout safetensors file (no format detection).
inline Checkpoint read_openai_safetensors(const std::string& relative) {
  Checkpoint c;
  c.path = test::data_path(relative);
  c.format = "safetensors";
  SafetensorsFile f = read_safetensors(c.path);
  c.tensors = std::move(f.tensors);
  c.metadata = std::move(f.metadata);
  return c;
}

// Cosine ≥ min_cos per row and max|diff| ≤ rel · max|ref| over the whole tensor.
inline void expect_matches(const float* got, const std::vector<float>& want, size_t rows, const std::string& what,
                           double min_cos = 0.99999, double rel = 1e-4) {
  ASSERT_GT(rows, 0u);
  const size_t dim = want.size() / rows;
  for (size_t r = 0; r < rows; ++r)
    EXPECT_GE(test::cosine(got + r * dim, want.data() + r * dim, dim), min_cos) << what << " row " << r;
  const double diff = test::max_abs_diff(got, want.data(), want.size());
  const double ref = test::max_abs(want.data(), want.size());
  EXPECT_LE(diff, rel * ref) << what << ": max|diff| " << diff << ", max|ref| " << ref;
}

inline void expect_matches(const std::vector<float>& got, const std::vector<float>& want, size_t rows,
                           const std::string& what, double min_cos = 0.99999, double rel = 1e-4) {
  ASSERT_EQ(got.size(), want.size()) << what;
  expect_matches(got.data(), want, rows, what, min_cos, rel);
}

}  // namespace clipkit::modeltest
