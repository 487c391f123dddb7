// Helpers for the index/search/dedup CLI tests: fixture image folders and golden embeddings.
#pragma once
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace clipkit::test {

inline std::string tiny_vit_path() { return data_path("models/tiny-vit.safetensors"); }

// Copies the fixture images into a fresh folder; returns it.
inline std::string fixture_image_folder(std::vector<std::string>* names = nullptr) {
  namespace fs = std::filesystem;
  const std::string dir = temp_dir() + "/images";
  fs::create_directories(dir);
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(data_path("images"))) {
    const std::string ext = e.path().extension().string();
    if (ext != ".png" && ext != ".jpg") continue;
    fs::copy_file(e.path(), dir + "/" + e.path().filename().string());
    files.push_back(e.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  if (names) *names = files;
  return dir;
}

struct Golden {
  std::vector<std::string> image_files;            // "00_astronaut.png", ...
  std::vector<std::vector<float>> image_embeds;    // normalised
  std::vector<std::string> texts;
  std::vector<std::vector<float>> text_embeds;     // normalised
};

inline std::vector<float> unit(std::vector<float> v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  const double inv = s > 0 ? 1.0 / std::sqrt(s) : 0.0;
  for (auto& x : v) x = static_cast<float>(x * inv);
  return v;
}

inline Golden load_golden_tiny_vit() {
  std::ifstream in(data_path("golden/tiny-vit.json"));
  nlohmann::json j = nlohmann::json::parse(in);
  Golden g;
  for (const auto& im : j["images"]) {
    const std::string f = im["file"].get<std::string>();
    g.image_files.push_back(f.substr(f.find('/') + 1));
  }
  for (const auto& e : j["image_embeds"]) g.image_embeds.push_back(unit(e.get<std::vector<float>>()));
  for (const auto& t : j["texts"]) g.texts.push_back(t.get<std::string>());
  for (const auto& e : j["text_embeds"]) g.text_embeds.push_back(unit(e.get<std::vector<float>>()));
  return g;
}

inline float dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(s);
}

inline std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> v;
  std::istringstream ss(out);
  std::string line;
  while (std::getline(ss, line))
    if (!line.empty()) v.push_back(nlohmann::json::parse(line));
  return v;
}

inline std::string basename_of(const std::string& p) { return std::filesystem::path(p).filename().string(); }

}  // namespace clipkit::test
