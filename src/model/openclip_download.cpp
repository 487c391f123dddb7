#include "model/openclip_download.h"

#include <filesystem>

#include "clipkit/error.h"
#include "core/mapped_file.h"
#include "model/openclip_archs.h"

namespace clipkit {

namespace fs = std::filesystem;

nlohmann::json openclip_config_json(const OpenClipPretrained& model) {
  const nlohmann::json* cfg = openclip_arch_config(model.arch);
  if (!cfg) throw Error(ErrorCode::NotFound, "no built-in open_clip configuration for '" + model.arch + "'");
  nlohmann::json pre = {{"mean", model.mean},
                        {"std", model.std},
                        {"interpolation", model.interpolation},
                        {"resize_mode", model.resize_mode},
                        {"fill_color", model.fill_color}};
  return {{"model_cfg", *cfg}, {"preprocess_cfg", pre}};
}

OpenClipDownloadResult download_openclip_model(const OpenClipPretrained& model, const DownloadOptions& options,
                                               const std::string& home) {
  OpenClipDownloadResult r;
  const std::string config = openclip_config_json(model).dump(2) + "\n";  // fails before any transfer
  r.folder = openclip_cache_dir(model, home);
  const std::string expected = hub_published_sha256(model.url(), options);
  r.weights = download_file(model.url(), (fs::path(r.folder) / model.file).string(), expected, options);
  r.config_path = (fs::path(r.folder) / kOpenClipConfigFile).string();
  write_file_atomic(r.config_path, config.data(), config.size());
  return r;
}

}  // namespace clipkit
