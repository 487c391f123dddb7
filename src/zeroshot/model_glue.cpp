// The parts of zero-shot classification that run a Model: prompt and image encoding.
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "clipkit/model.h"
#include "clipkit/zeroshot.h"
#include "model/ingest.h"

namespace clipkit {

TextEncoder model_text_encoder(const Model& model) {
  return [&model](const std::vector<std::string>& prompts) { return model.encode_texts(prompts, false); };
}

TextEncoder caching_text_encoder(const Model& model) {
  auto cache = std::make_shared<std::map<std::string, std::vector<float>>>();
  return [&model, cache](const std::vector<std::string>& prompts) {
    std::vector<std::string> missing;
    for (const auto& p : prompts)
      if (!cache->count(p)) missing.push_back(p);
    if (!missing.empty()) {
      const Embeddings e = model.encode_texts(missing, false);
      for (size_t i = 0; i < missing.size(); ++i)
        (*cache)[missing[i]] = std::vector<float>(e.row(static_cast<int64_t>(i)), e.row(static_cast<int64_t>(i)) + e.dim);
    }
    const int64_t dim = prompts.empty() ? 0 : static_cast<int64_t>(cache->at(prompts.front()).size());
    Embeddings out(static_cast<int64_t>(prompts.size()), dim);
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto& v = cache->at(prompts[i]);
      std::copy(v.begin(), v.end(), out.row(static_cast<int64_t>(i)));
    }
    return out;
  };
}

std::vector<int> encoded_truth(const LabeledFolder& folder, const EncodedImages& encoded) {
  std::map<std::string, int> truth_of;
  for (size_t i = 0; i < folder.images.size(); ++i) truth_of[folder.images[i]] = folder.truth[i];
  std::vector<int> truth;
  truth.reserve(encoded.paths.size());
  for (const auto& p : encoded.paths) truth.push_back(truth_of.at(p));
  return truth;
}

std::string model_name_of(const Model& model) {
  const ModelInfo& info = model.info();
  std::string name = info.name.empty() ? info.path : info.name;
  if (!info.text_model_path.empty()) name += " with text model " + info.text_model_path;
  return name;
}

ZeroShotClassifier ZeroShotClassifier::build(const Model& model, const std::vector<ClassSpec>& classes,
                                             const ClassifierOptions& options) {
  ZeroShotClassifier clf =
      build(model_text_encoder(model), classes, options, model.info().fingerprint, model.info().logit_scale);
  clf.set_model_name(model_name_of(model));
  return clf;
}

ZeroShotClassifier ZeroShotClassifier::load(const std::string& path, const Model& model) {
  return load(path, model.info().fingerprint, model_name_of(model));
}

EncodedImages encode_image_paths(const Model& model, const std::vector<std::string>& paths, int batch_size,
                                 const ProgressFn& progress, int decode_threads, bool fast_decode) {
  EncodedImages out;
  std::vector<float> rows;
  int64_t dim = 0;
  IngestOptions opt;
  opt.batch_size = std::max(1, batch_size);
  opt.decode_threads = decode_threads;
  const DecodeOptions decode = ingest_decode_options(model.preprocess_config(), fast_decode);
  run_image_ingest(
      paths.size(), model.preprocess_config(), [&](size_t i) { return decode_image_file(paths[i], decode); },
      [&](IngestBatch& b) {
        for (const auto& [i, err] : b.failures) {
          try {
            std::rethrow_exception(err);
          } catch (const Error& e) {
            out.failures.emplace_back(paths[i], e.what());
          } catch (const std::bad_alloc&) {
            out.failures.emplace_back(paths[i], "out of memory while decoding '" + paths[i] + "'");
          }
        }
        if (b.rows() > 0) {
          const Embeddings e = model.encode_images(b.pixels.data(), b.rows(), true);
          dim = e.dim;
          rows.insert(rows.end(), e.data.begin(), e.data.end());
          for (size_t i : b.items) out.paths.push_back(paths[i]);
        }
        if (progress)
          for (size_t i = b.begin; i < b.end; ++i) progress(static_cast<int64_t>(i + 1), static_cast<int64_t>(paths.size()));
      },
      opt);
  out.embeddings.rows = static_cast<int64_t>(out.paths.size());
  out.embeddings.dim = dim;
  out.embeddings.data = std::move(rows);
  return out;
}

}  // namespace clipkit
