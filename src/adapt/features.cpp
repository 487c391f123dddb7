// Labelled folders to features: image embeddings cached per file hash, shots, splits, checks.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "adapt/internal.h"
#include "clipkit/adapt.h"
#include "clipkit/error.h"
#include "clipkit/model.h"
#include "core/mapped_file.h"
#include "io/download.h"
#include "io/openclip_pretrained.h"

namespace fs = std::filesystem;

namespace clipkit {

std::string default_embedding_cache_dir() { return (fs::path(clipkit_home()) / "embeddings").string(); }

namespace {

bool read_cached(const fs::path& file, int64_t dim, float* out) {
  std::error_code ec;
  if (fs::file_size(file, ec) != static_cast<uintmax_t>(dim) * sizeof(float) || ec) return false;
  std::ifstream in(file, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(dim * sizeof(float)))) return false;
  double ss = 0.0;
  for (int64_t j = 0; j < dim; ++j) {
    if (!std::isfinite(out[j])) return false;
    ss += static_cast<double>(out[j]) * out[j];
  }
  return std::fabs(ss - 1.0) < 1e-3;  // a stored row is unit length; anything else is re-encoded
}

}  // namespace

LabeledFeatures encode_labeled_folder(const Model& model, const LabeledFolder& folder, const FeatureCacheOptions& o) {
  const ModelInfo& info = model.info();
  const int64_t dim = info.arch.embed_dim;
  const size_t n = folder.images.size();
  LabeledFeatures out;
  out.num_classes = static_cast<int>(folder.classes.size());
  std::vector<std::string> hashes(n);
  std::vector<bool> readable(n, true);
  for (size_t i = 0; i < n; ++i) {
    try {
      hashes[i] = sha256_file(folder.images[i]);
    } catch (const Error& e) {
      readable[i] = false;
      out.failures.emplace_back(folder.images[i], e.what());
    }
  }
  const fs::path cache_dir =
      o.dir.empty() ? fs::path() : fs::path(o.dir) / (info.fingerprint + "-" + info.compute_dtype);
  std::vector<float> rows(n * static_cast<size_t>(dim), 0.0f);
  std::vector<bool> have(n, false);
  std::vector<std::string> todo;
  std::vector<size_t> todo_index;
  for (size_t i = 0; i < n; ++i) {
    if (!readable[i]) continue;
    if (!cache_dir.empty() && read_cached(cache_dir / (hashes[i] + ".f32"), dim, rows.data() + i * dim)) {
      have[i] = true;
      continue;
    }
    todo.push_back(folder.images[i]);
    todo_index.push_back(i);
  }
  const int64_t total = static_cast<int64_t>(n);
  int64_t done = static_cast<int64_t>(n - todo.size());
  if (o.progress && done) o.progress(done, total);
  if (!todo.empty()) {
    const int64_t base = done;
    EncodedImages enc = encode_image_paths(model, todo, o.batch_size, [&](int64_t d, int64_t) {
      if (o.progress) o.progress(base + d, total);
    });
    size_t r = 0;
    std::vector<bool> encoded(todo.size(), false);
    for (size_t t = 0; t < todo.size() && r < enc.paths.size(); ++t) {
      if (enc.paths[r] != todo[t]) continue;
      const size_t i = todo_index[t];
      std::copy(enc.embeddings.row(static_cast<int64_t>(r)), enc.embeddings.row(static_cast<int64_t>(r)) + dim,
                rows.begin() + static_cast<std::ptrdiff_t>(i * dim));
      have[i] = true;
      ++r;
      if (!cache_dir.empty()) {
        try {
          fs::create_directories(cache_dir);
          write_file_atomic((cache_dir / (hashes[i] + ".f32")).string(), rows.data() + i * dim, dim * sizeof(float));
        } catch (const std::exception&) {
          // a cache that cannot be written only costs time
        }
      }
    }
    for (const auto& f : enc.failures) out.failures.push_back(f);
  }
  int64_t kept = 0;
  for (size_t i = 0; i < n; ++i) kept += have[i];
  out.features = Embeddings(kept, dim);
  int64_t r = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!have[i]) continue;
    std::copy(rows.begin() + static_cast<std::ptrdiff_t>(i * dim), rows.begin() + static_cast<std::ptrdiff_t>((i + 1) * dim),
              out.features.row(r));
    out.labels.push_back(folder.truth[i]);
    out.paths.push_back(folder.images[i]);
    out.hashes.push_back(hashes[i]);
    ++r;
  }
  out.features.normalize();
  return out;
}

std::vector<int> match_label_list(const std::vector<ClassSpec>& folder_classes, const std::vector<ClassSpec>& list,
                                  const std::string& source) {
  std::vector<int> out;
  std::vector<bool> used(list.size(), false);
  for (const auto& fc : folder_classes) {
    int found = -1;
    for (size_t j = 0; j < list.size(); ++j)
      if (list[j].label() == fc.label()) {
        found = static_cast<int>(j);
        break;
      }
    if (found < 0)
      throw Error(ErrorCode::InvalidArgument, "class '" + fc.label() + "' of the folder is not in " + source);
    used[static_cast<size_t>(found)] = true;
    out.push_back(found);
  }
  for (size_t j = 0; j < list.size(); ++j)
    if (!used[j])
      throw Error(ErrorCode::InvalidArgument, "class '" + list[j].label() + "' of " + source + " has no class folder");
  return out;
}

LabeledFeatures select_rows(const LabeledFeatures& all, const std::vector<size_t>& index) {
  LabeledFeatures out;
  out.num_classes = all.num_classes;
  out.features = Embeddings(static_cast<int64_t>(index.size()), all.features.dim);
  for (size_t r = 0; r < index.size(); ++r) {
    const int64_t i = static_cast<int64_t>(index[r]);
    std::copy(all.features.row(i), all.features.row(i) + all.features.dim, out.features.row(static_cast<int64_t>(r)));
    out.labels.push_back(all.labels[index[r]]);
    if (!all.paths.empty()) out.paths.push_back(all.paths[index[r]]);
    if (!all.hashes.empty()) out.hashes.push_back(all.hashes[index[r]]);
  }
  return out;
}

void check_training_set(const LabeledFeatures& data, const std::vector<std::string>& names) {
  auto name = [&](int c) {
    return static_cast<size_t>(c) < names.size() ? "'" + names[static_cast<size_t>(c)] + "'" : "#" + std::to_string(c);
  };
  if (data.num_classes < 2)
    throw Error(ErrorCode::InvalidArgument, "training needs at least two classes, the training set has " +
                                                std::to_string(data.num_classes) +
                                                (data.num_classes == 1 ? " (" + name(0) + ")" : std::string()));
  if (data.features.rows < 2)
    throw Error(ErrorCode::InvalidArgument, "training needs at least one image per class, the training set has " +
                                                std::to_string(data.features.rows) + " image(s)");
  std::vector<int64_t> count(static_cast<size_t>(data.num_classes), 0);
  for (int l : data.labels) {
    if (l < 0 || l >= data.num_classes) throw Error(ErrorCode::InvalidArgument, "training set: label out of range");
    ++count[static_cast<size_t>(l)];
  }
  for (int c = 0; c < data.num_classes; ++c)
    if (count[static_cast<size_t>(c)] == 0)
      throw Error(ErrorCode::InvalidArgument, "class " + name(c) + " has no readable image to train on");
  for (int64_t i = 0; i < data.features.rows; ++i)
    for (int64_t j = 0; j < data.features.dim; ++j)
      if (!std::isfinite(data.features.row(i)[j]))
        throw Error(ErrorCode::InvalidArgument,
                    "the features of " +
                        (static_cast<size_t>(i) < data.paths.size() ? "'" + data.paths[static_cast<size_t>(i)] + "'"
                                                                    : "row " + std::to_string(i)) +
                        " (class " + name(data.labels[static_cast<size_t>(i)]) + ") hold NaN or infinity");
}

std::vector<size_t> draw_shots(const std::vector<int>& labels, int num_classes, int shots, uint64_t seed,
                               const std::vector<std::string>& names) {
  if (shots < 1) throw Error(ErrorCode::InvalidArgument, "--shots must be at least 1");
  std::vector<std::vector<size_t>> by_class(static_cast<size_t>(num_classes));
  for (size_t i = 0; i < labels.size(); ++i) by_class[static_cast<size_t>(labels[i])].push_back(i);
  adapt_detail::Rng rng(seed);
  std::vector<size_t> out;
  for (int c = 0; c < num_classes; ++c) {
    auto& rows = by_class[static_cast<size_t>(c)];
    if (static_cast<int64_t>(rows.size()) < shots)
      throw Error(ErrorCode::InvalidArgument,
                  std::to_string(shots) + " shots asked for, but class '" +
                      (static_cast<size_t>(c) < names.size() ? names[static_cast<size_t>(c)] : std::to_string(c)) +
                      "' has only " + std::to_string(rows.size()) + " readable image(s)");
    std::vector<size_t> pick = rows;
    rng.shuffle(pick);
    pick.resize(static_cast<size_t>(shots));
    std::sort(pick.begin(), pick.end());
    out.insert(out.end(), pick.begin(), pick.end());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<bool> seeded_split(const std::vector<int>& labels, int num_classes, double fraction, uint64_t seed) {
  if (!(fraction > 0.0 && fraction < 1.0))
    throw Error(ErrorCode::InvalidArgument, "the validation fraction must be between 0 and 1 (exclusive)");
  std::vector<std::vector<size_t>> by_class(static_cast<size_t>(num_classes));
  for (size_t i = 0; i < labels.size(); ++i) by_class[static_cast<size_t>(labels[i])].push_back(i);
  adapt_detail::Rng rng(seed ^ 0x5eed5eed5eed5eedull);
  std::vector<bool> val(labels.size(), false);
  for (auto& rows : by_class) {
    if (rows.size() < 2) continue;
    rng.shuffle(rows);
    size_t k = static_cast<size_t>(std::llround(static_cast<double>(rows.size()) * fraction));
    k = std::clamp<size_t>(k, 1, rows.size() - 1);
    for (size_t i = 0; i < k; ++i) val[rows[i]] = true;
  }
  return val;
}

std::string training_set_json(const LabeledFeatures& data) {
  nlohmann::json j;
  j["images"] = data.features.rows;
  std::vector<int64_t> per(static_cast<size_t>(data.num_classes), 0);
  for (int l : data.labels) ++per[static_cast<size_t>(l)];
  j["per_class"] = per;
  if (!data.hashes.empty()) {
    std::vector<std::string> h = data.hashes;
    std::sort(h.begin(), h.end());
    std::string joined;
    for (const auto& s : h) joined += s + "\n";
    j["digest"] = sha256_digest_hex(joined.data(), joined.size());
  }
  return j.dump();
}

}  // namespace clipkit
