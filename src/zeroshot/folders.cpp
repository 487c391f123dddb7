// Image file lists and labelled class folders.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "core/json_limits.h"
#include "clipkit/zeroshot.h"
#include "core/mapped_file.h"

namespace clipkit {

namespace fs = std::filesystem;

static bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp" || ext == ".bmp" || ext == ".gif";
}

static void walk(const fs::path& dir, std::vector<std::string>& out) {
  std::error_code ec;
  std::vector<fs::path> entries;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) entries.push_back(it->path());
  if (ec) throw Error(ErrorCode::Io, "cannot list directory '" + dir.string() + "': " + ec.message());
  std::sort(entries.begin(), entries.end());
  for (const auto& p : entries) {
    std::error_code e2;
    if (fs::is_directory(p, e2))
      walk(p, out);
    else if (has_image_extension(p) && fs::is_regular_file(p, e2))
      out.push_back(p.string());
  }
}

std::vector<std::string> list_image_files(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) {
    std::error_code ec;
    const auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) throw Error(ErrorCode::NotFound, "no such file or directory: '" + p + "'");
    if (fs::is_directory(st))
      walk(p, out);
    else
      out.push_back(p);
  }
  return out;
}

LabeledFolder read_labeled_folder(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(ErrorCode::NotFound, "dataset folder '" + dir + "' does not exist");
  nlohmann::json mapping = nlohmann::json::object();
  const fs::path labels_json = fs::path(dir) / "labels.json";
  if (fs::exists(labels_json, ec)) {
    try {
      mapping = parse_json_bounded(read_file(labels_json.string()), "'" + labels_json.string() + "'");
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorCode::Format, "'" + labels_json.string() + "' is not valid JSON: " + e.what());
    }
    if (!mapping.is_object())
      throw Error(ErrorCode::Format, "'" + labels_json.string() + "' must map class folder names to label text");
  }
  std::vector<fs::path> folders;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory()) folders.push_back(it->path());
  if (ec) throw Error(ErrorCode::Io, "cannot list dataset folder '" + dir + "': " + ec.message());
  std::sort(folders.begin(), folders.end());
  LabeledFolder out;
  for (const auto& f : folders) {
    const std::string name = f.filename().string();
    std::vector<std::string> images;
    walk(f, images);
    if (images.empty()) continue;  // not a class folder
    ClassSpec spec;
    if (mapping.contains(name)) {
      const auto& v = mapping[name];
      try {
        if (v.is_string())
          spec.names = {v.get<std::string>()};
        else
          spec.names = v.get<std::vector<std::string>>();
      } catch (const nlohmann::json::exception&) {
        throw Error(ErrorCode::Format, "'" + labels_json.string() + "': label of '" + name +
                                           "' must be a string or a list of strings");
      }
      if (spec.names.empty() || std::any_of(spec.names.begin(), spec.names.end(), [](const std::string& s) { return s.empty(); }))
        throw Error(ErrorCode::Format, "'" + labels_json.string() + "': empty label for '" + name + "'");
    } else {
      spec.names = {name};
    }
    const int idx = static_cast<int>(out.classes.size());
    out.folders.push_back(name);
    out.classes.push_back(std::move(spec));
    for (auto& im : images) {
      out.images.push_back(std::move(im));
      out.truth.push_back(idx);
    }
  }
  if (out.classes.empty()) throw Error(ErrorCode::NotFound, "dataset folder '" + dir + "' has no class folders with images");
  return out;
}

}  // namespace clipkit
