// clipkit preprocess --resolution N [--mean a,b,c] [--std a,b,c] IMAGE --out FILE.npy
// Decodes IMAGE and writes the CLIP input tensor: float32, C order, shape [3, N, N], .npy format.
#include <memory>
#include <string>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "core/npy.h"

namespace {

struct PreprocessArgs {
  int resolution = 224;
  std::string mean, std, image, out;
  bool exif = false;
};

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto args = std::make_shared<PreprocessArgs>();
  auto* cmd = app.add_subcommand("preprocess", "Decode an image and write the CLIP input tensor [3, N, N] as .npy");
  cmd->add_option("--resolution", args->resolution, "Input resolution N (short side resize + center crop)")
      ->required();
  cmd->add_option("--mean", args->mean, "Normalisation mean, three comma-separated numbers (default: CLIP's)");
  cmd->add_option("--std", args->std, "Normalisation std, three comma-separated numbers (default: CLIP's)");
  cmd->add_flag("--exif-orientation", args->exif, "Apply the EXIF orientation tag (the reference ignores it)");
  cmd->add_option("image", args->image, "Image file (JPEG, PNG, WebP, BMP, GIF)")->required();
  cmd->add_option("--out,-o", args->out, "Output .npy file")->required();
  clipkit::cli::add_examples(cmd, {"clipkit preprocess --resolution 224 cat.jpg --out cat.npy",
                                   "clipkit preprocess --resolution 336 --exif-orientation photo.jpg -o photo.npy"});
  cmd->callback([args] {
    clipkit::cli::check_output_path(args->out, "--out");
    if (args->resolution <= 0 || args->resolution > 4096)
      throw clipkit::Error(clipkit::ErrorCode::InvalidArgument,
                           "--resolution must be between 1 and 4096, got " + std::to_string(args->resolution));
    clipkit::PreprocessConfig cfg;
    cfg.resolution = args->resolution;
    if (!args->mean.empty()) {
      const auto v = clipkit::cli::parse_float_list(args->mean, "--mean", 3);
      cfg.mean = {v[0], v[1], v[2]};
    }
    if (!args->std.empty()) {
      const auto v = clipkit::cli::parse_float_list(args->std, "--std", 3);
      for (float s : v)
        if (!(s != 0.0f))
          throw clipkit::Error(clipkit::ErrorCode::InvalidArgument, "--std values must be non-zero");
      cfg.std = {v[0], v[1], v[2]};
    }
    clipkit::DecodeOptions opt;
    opt.apply_exif_orientation = args->exif;
    const clipkit::Image img = clipkit::decode_image_file(args->image, opt);
    const std::vector<float> tensor = clipkit::preprocess(img, cfg);
    clipkit::write_npy(args->out, {3, cfg.resolution, cfg.resolution}, tensor.data());
  });
});

}  // namespace
