// Small helpers of the files that implement clipkit::Index (see index_impl.h): the index
// folder's file names, path and vector helpers.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/parallel_for.h"

namespace clipkit::index_internal {

namespace fs = std::filesystem;

inline constexpr const char* kCatalogName = "catalog.sqlite";
inline constexpr const char* kCacheName = "vectors.faiss";
inline constexpr const char* kLockName = "lock";
inline constexpr int kFormatVersion = 1;

inline double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

inline std::string normalize_path(const std::string& p) {
  std::error_code ec;
  fs::path a = fs::absolute(fs::path(p), ec);
  if (ec) a = fs::path(p);
  std::string s = a.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

inline bool is_image_name(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e == ".jpg" || e == ".jpeg" || e == ".png" || e == ".webp" || e == ".bmp" || e == ".gif";
}

inline void normalize_vec(float* v, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += static_cast<double>(v[i]) * v[i];
  if (s <= 0) return;
  const float inv = static_cast<float>(1.0 / std::sqrt(s));
  for (int64_t i = 0; i < d; ++i) v[i] *= inv;
}

inline float dot(const float* a, const float* b, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(s);
}

inline std::string first_line(const std::string& s) {
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}


}  // namespace clipkit::index_internal
