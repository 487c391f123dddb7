// clipkit preprocess --model PATH [--arch NAME] IMAGE --out FILE.npy
// clipkit preprocess --resolution N [--mean a,b,c] [--std a,b,c] [--resize-mode M] [--interpolation I]
//                    [--fill-color V] IMAGE --out FILE.npy
// Decodes IMAGE and writes the CLIP input tensor: float32, C order, shape [3, N, N], .npy format.
// With --model, the model's own preprocessing (its resolution, mean/std, resize mode and
// interpolation, as `clipkit info` shows them); otherwise the settings given (default: OpenAI's).
#include <memory>
#include <string>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "clipkit/options.h"
#include "clipkit/model.h"
#include "clipkit/verb.h"
#include "core/npy.h"

namespace {

using clipkit::Error;
using clipkit::ErrorCode;

struct PreprocessArgs {
  std::string model, arch;
  int resolution = 0;
  std::string mean, std, resize_mode, interpolation, image, out;
  int fill_color = 0;
  bool fill_given = false;
  bool exif = false;
};

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto args = std::make_shared<PreprocessArgs>();
  auto* cmd = app.add_subcommand("preprocess", "Decode an image and write the CLIP input tensor [3, N, N] as .npy");
  cmd->add_option("--model", args->model,
                  "Use this model's own preprocessing (file or folder; resolution, mean/std, resize mode, "
                  "interpolation)");
  clipkit::cli::add_arch_option(cmd, args->arch);
  cmd->add_option("--resolution", args->resolution, "Input resolution N (without --model)");
  cmd->add_option("--mean", args->mean, "Normalisation mean, three comma-separated numbers (default: CLIP's)");
  cmd->add_option("--std", args->std, "Normalisation std, three comma-separated numbers (default: CLIP's)");
  cmd->add_option("--resize-mode", args->resize_mode,
                  "shortest (default: short side to N + center crop), squash (both sides to N) or longest "
                  "(long side to N + padding)");
  cmd->add_option("--interpolation", args->interpolation, "bicubic (default) or bilinear");
  auto* fill = cmd->add_option("--fill-color", args->fill_color, "Padding value of --resize-mode longest (default 0)");
  cmd->add_flag("--exif-orientation", args->exif, "Apply the EXIF orientation tag (the reference ignores it)");
  cmd->add_option("image", args->image, "Image file (JPEG, PNG, WebP, BMP, GIF)")->required();
  cmd->add_option("--out,-o", args->out, "Output .npy file")->required();
  clipkit::cli::add_examples(cmd, {"clipkit preprocess --model ViT-B-32.pt cat.jpg --out cat.npy",
                                   "clipkit preprocess --resolution 336 --exif-orientation photo.jpg -o photo.npy"});
  cmd->callback([args, fill] {
    clipkit::cli::check_output_path(args->out, "--out");
    clipkit::PreprocessConfig cfg;
    const bool settings = args->resolution != 0 || !args->mean.empty() || !args->std.empty() ||
                          !args->resize_mode.empty() || !args->interpolation.empty() || fill->count() > 0;
    if (!args->model.empty()) {
      if (settings)
        throw Error(ErrorCode::InvalidArgument,
                    "--model gives the preprocessing: drop --resolution, --mean, --std, --resize-mode, "
                    "--interpolation and --fill-color");
      clipkit::ModelOptions mo;
      mo.arch = args->arch;
      cfg = clipkit::Model::inspect(args->model, mo).preprocess;
    } else {
      if (!args->arch.empty()) throw Error(ErrorCode::InvalidArgument, "--arch needs --model");
      if (args->resolution == 0)
        throw Error(ErrorCode::InvalidArgument, "give --model PATH or --resolution N");
      if (args->resolution < 0 || args->resolution > 4096)
        throw Error(ErrorCode::InvalidArgument,
                    "--resolution must be between 1 and 4096, got " + std::to_string(args->resolution));
      cfg.resolution = args->resolution;
      if (!args->mean.empty()) {
        const auto v = clipkit::cli::parse_float_list(args->mean, "--mean", 3);
        cfg.mean = {v[0], v[1], v[2]};
      }
      if (!args->std.empty()) {
        const auto v = clipkit::cli::parse_float_list(args->std, "--std", 3);
        for (float s : v)
          if (!(s != 0.0f)) throw Error(ErrorCode::InvalidArgument, "--std values must be non-zero");
        cfg.std = {v[0], v[1], v[2]};
      }
      if (!args->resize_mode.empty()) cfg.resize_mode = clipkit::parse_resize_mode(args->resize_mode, "--resize-mode");
      if (!args->interpolation.empty())
        cfg.interpolation = clipkit::parse_interpolation(args->interpolation, "--interpolation");
      cfg.fill_color = args->fill_color;
    }
    clipkit::DecodeOptions opt;
    opt.apply_exif_orientation = args->exif;
    const clipkit::Image img = clipkit::decode_image_file(args->image, opt);
    const std::vector<float> tensor = clipkit::preprocess(img, cfg);
    clipkit::write_npy(args->out, {3, cfg.resolution, cfg.resolution}, tensor.data());
  });
});

}  // namespace
