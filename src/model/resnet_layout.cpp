#include <cmath>

#include "clipkit/error.h"
#include "kernels/conv.h"
#include "kernels/pool.h"
#include "model/resnet_layout.h"

namespace clipkit {

namespace {

[[noreturn]] void fail(const Checkpoint& ckpt, ErrorCode code, const std::string& msg) {
  throw Error(code, "checkpoint '" + ckpt.path + "': " + msg);
}

// Shape of a conv weight [out, in, k, k] with the expected kernel; returns it.
Shape conv_weight_shape(const Checkpoint& ckpt, const std::string& name, int64_t kernel) {
  const Tensor& t = ckpt.get(name);
  if (t.shape.size() != 4 || t.shape[2] != kernel || t.shape[3] != kernel || t.shape[0] < 1 || t.shape[1] < 1)
    fail(ckpt, ErrorCode::Shape,
         "tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected [out, in, " + std::to_string(kernel) +
             ", " + std::to_string(kernel) + "]");
  if (!t.is_float()) fail(ckpt, ErrorCode::Shape, "tensor '" + name + "' is not floating point");
  return t.shape;
}

void expect_in(const Checkpoint& ckpt, const std::string& name, const Shape& s, int64_t in) {
  if (s[1] != in)
    fail(ckpt, ErrorCode::Shape,
         "tensor '" + name + "' has " + std::to_string(s[1]) + " input channels, expected " + std::to_string(in));
}

}  // namespace

int64_t resnet_output_grid(int64_t n) {
  int64_t s = conv_out_size(n, 3, 2, 1);  // conv1 (conv2, conv3 keep the size)
  s = avg_pool_out_size(s, 2);            // stem pool
  for (int i = 0; i < 3; ++i) s = avg_pool_out_size(s, 2);  // layers 2..4
  return s;
}

ResNetLayout resnet_layout(const Checkpoint& ckpt, const Architecture& arch) {
  ResNetLayout L;
  const Shape c1 = conv_weight_shape(ckpt, "visual.conv1.weight", 3);
  expect_in(ckpt, "visual.conv1.weight", c1, 3);
  L.stem_channels = c1[0];
  const Shape c2 = conv_weight_shape(ckpt, "visual.conv2.weight", 3);
  expect_in(ckpt, "visual.conv2.weight", c2, L.stem_channels);
  if (c2[0] != L.stem_channels)
    fail(ckpt, ErrorCode::Shape, "tensor 'visual.conv2.weight' has shape " + shape_str(c2) + ", expected " +
                                     std::to_string(L.stem_channels) + " output channels");
  const Shape c3 = conv_weight_shape(ckpt, "visual.conv3.weight", 3);
  expect_in(ckpt, "visual.conv3.weight", c3, L.stem_channels);
  L.width = c3[0];
  if (arch.vision_width > 0 && arch.vision_width != L.width)
    fail(ckpt, ErrorCode::Shape, "tensor 'visual.conv3.weight' gives a ResNet width of " + std::to_string(L.width) +
                                     ", but the architecture says " + std::to_string(arch.vision_width));

  int64_t channels = L.width;
  for (int s = 1; s <= 4; ++s) {
    std::vector<ResNetBlockLayout> blocks;
    for (int b = 0;; ++b) {
      const std::string prefix = "visual.layer" + std::to_string(s) + "." + std::to_string(b) + ".";
      if (!ckpt.has(prefix + "conv1.weight")) break;
      ResNetBlockLayout B;
      B.prefix = prefix;
      B.in_channels = channels;
      B.stride = (s > 1 && b == 0) ? 2 : 1;
      const Shape w1 = conv_weight_shape(ckpt, prefix + "conv1.weight", 1);
      expect_in(ckpt, prefix + "conv1.weight", w1, channels);
      B.planes = w1[0];
      const Shape w2 = conv_weight_shape(ckpt, prefix + "conv2.weight", 3);
      expect_in(ckpt, prefix + "conv2.weight", w2, B.planes);
      if (w2[0] != B.planes)
        fail(ckpt, ErrorCode::Shape, "tensor '" + prefix + "conv2.weight' has shape " + shape_str(w2) + ", expected " +
                                         std::to_string(B.planes) + " output channels");
      const Shape w3 = conv_weight_shape(ckpt, prefix + "conv3.weight", 1);
      expect_in(ckpt, prefix + "conv3.weight", w3, B.planes);
      if (w3[0] != 4 * B.planes)
        fail(ckpt, ErrorCode::Shape, "tensor '" + prefix + "conv3.weight' has shape " + shape_str(w3) + ", expected " +
                                         std::to_string(4 * B.planes) + " output channels (4 × planes)");
      const bool need_down = B.stride > 1 || channels != 4 * B.planes;
      const bool has_down = ckpt.has(prefix + "downsample.0.weight");
      if (need_down != has_down)
        fail(ckpt, ErrorCode::Format,
             need_down ? "missing tensor '" + prefix + "downsample.0.weight' (the block changes resolution or width)"
                       : "unexpected tensor '" + prefix + "downsample.0.weight' (the block keeps resolution and width)");
      if (has_down) {
        const Shape wd = conv_weight_shape(ckpt, prefix + "downsample.0.weight", 1);
        expect_in(ckpt, prefix + "downsample.0.weight", wd, channels);
        if (wd[0] != 4 * B.planes)
          fail(ckpt, ErrorCode::Shape, "tensor '" + prefix + "downsample.0.weight' has shape " + shape_str(wd) +
                                           ", expected " + std::to_string(4 * B.planes) + " output channels");
      }
      B.downsample = has_down;
      channels = 4 * B.planes;
      blocks.push_back(B);
    }
    if (blocks.empty())
      fail(ckpt, ErrorCode::NotFound, "no tensor 'visual.layer" + std::to_string(s) + ".0.conv1.weight' (ResNet stage " +
                                          std::to_string(s) + " has no blocks)");
    L.stages.push_back(std::move(blocks));
  }
  if (ckpt.has("visual.layer5.0.conv1.weight"))
    fail(ckpt, ErrorCode::Format, "unexpected tensor 'visual.layer5.0.conv1.weight' (a modified ResNet has 4 stages)");
  if (!arch.resnet_layers.empty()) {
    bool same = arch.resnet_layers.size() == 4;
    for (size_t i = 0; same && i < 4; ++i) same = static_cast<size_t>(arch.resnet_layers[i]) == L.stages[i].size();
    if (!same) fail(ckpt, ErrorCode::Shape, "the ResNet blocks per stage in the tensors differ from the architecture");
  }
  L.feature_dim = channels;

  const Tensor& pos = ckpt.get("visual.attnpool.positional_embedding");
  if (pos.shape.size() != 2 || pos.shape[1] != L.feature_dim || pos.shape[0] < 2)
    fail(ckpt, ErrorCode::Shape, "tensor 'visual.attnpool.positional_embedding' has shape " + shape_str(pos.shape) +
                                     ", expected [grid² + 1, " + std::to_string(L.feature_dim) + "]");
  L.tokens = pos.shape[0];
  L.grid = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(L.tokens - 1))));
  if (L.grid * L.grid + 1 != L.tokens)
    fail(ckpt, ErrorCode::Shape, "tensor 'visual.attnpool.positional_embedding' has " + std::to_string(L.tokens) +
                                     " rows, which is not a square grid plus one");
  L.resolution = arch.image_resolution > 0 ? arch.image_resolution : 32 * L.grid;
  if (L.resolution < 32 || resnet_output_grid(L.resolution) != L.grid)
    fail(ckpt, ErrorCode::Shape, "tensor 'visual.attnpool.positional_embedding' has " + std::to_string(L.tokens) +
                                     " rows, which does not fit an image resolution of " +
                                     std::to_string(L.resolution));
  const Shape proj_shape{L.feature_dim, L.feature_dim};
  for (const char* p : {"q", "k", "v"}) {
    const std::string name = std::string("visual.attnpool.") + p + "_proj.weight";
    if (ckpt.get(name).shape != proj_shape)
      fail(ckpt, ErrorCode::Shape, "tensor '" + name + "' has shape " + shape_str(ckpt.get(name).shape) + ", expected " +
                                       shape_str(proj_shape));
  }
  const Tensor& cp = ckpt.get("visual.attnpool.c_proj.weight");
  if (cp.shape.size() != 2 || cp.shape[1] != L.feature_dim || cp.shape[0] < 1)
    fail(ckpt, ErrorCode::Shape, "tensor 'visual.attnpool.c_proj.weight' has shape " + shape_str(cp.shape) +
                                     ", expected [embed_dim, " + std::to_string(L.feature_dim) + "]");
  L.embed_dim = cp.shape[0];
  if (arch.embed_dim > 0 && arch.embed_dim != L.embed_dim)
    fail(ckpt, ErrorCode::Shape, "tensor 'visual.attnpool.c_proj.weight' gives embed_dim " +
                                     std::to_string(L.embed_dim) + ", but the architecture says " +
                                     std::to_string(arch.embed_dim));
  L.heads = arch.vision_heads > 0 ? arch.vision_heads : L.width * 32 / 64;
  if (L.heads < 1 || L.feature_dim % L.heads != 0)
    fail(ckpt, ErrorCode::Shape, "attention pool: " + std::to_string(L.heads) + " heads do not divide the feature width " +
                                     std::to_string(L.feature_dim));
  return L;
}

int64_t resnet_parameter_count(const Checkpoint& ckpt) {
  int64_t n = 0;
  auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  for (const auto& [name, t] : ckpt.tensors) {
    if (name.rfind("visual.", 0) != 0) continue;
    if (ends_with(name, ".running_mean") || ends_with(name, ".running_var") || ends_with(name, ".num_batches_tracked"))
      continue;
    n += t.numel();
  }
  return n;
}

}  // namespace clipkit
