#include <cmath>
#include <random>
#include <functional>

#include "clipkit/error.h"
#include "model/resnet_layout.h"

namespace clipkit {

namespace {

struct Generator {
  std::mt19937 rng;
  Checkpoint* ckpt;

  void add(const std::string& name, Shape shape, const std::function<float()>& draw) {
    std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
    for (float& f : v) f = draw();
    ckpt->tensors[name] = Tensor::from_f32(std::move(v), std::move(shape));
  }
  float normal(float std) { return std::normal_distribution<float>(0.0f, std)(rng); }
  float uniform() { return std::uniform_real_distribution<float>(0.0f, 1.0f)(rng); }

  void conv(const std::string& name, int64_t out, int64_t in, int64_t k) {
    const float std = 1.0f / std::sqrt(static_cast<float>(in * k * k));
    add(name, {out, in, k, k}, [&] { return normal(std); });
  }
  void bn(const std::string& prefix, int64_t c) {
    add(prefix + ".weight", {c}, [&] { return 1.0f + 0.25f * normal(1.0f); });
    add(prefix + ".bias", {c}, [&] { return 0.1f * normal(1.0f); });
    add(prefix + ".running_mean", {c}, [&] { return 0.1f * normal(1.0f); });
    add(prefix + ".running_var", {c}, [&] { return 0.5f + uniform(); });
  }
  void linear(const std::string& prefix, int64_t out, int64_t in, float std) {
    add(prefix + ".weight", {out, in}, [&] { return normal(std); });
    add(prefix + ".bias", {out}, [&] { return 0.05f * normal(1.0f); });
  }
};

}  // namespace

Checkpoint make_random_resnet_checkpoint(const std::vector<int>& layers, int64_t width, int64_t resolution,
                                         int64_t embed_dim, uint32_t seed) {
  if (layers.size() != 4 || width < 2 || width % 2 != 0 || embed_dim < 1 || resolution < 32)
    throw Error(ErrorCode::InvalidArgument, "random ResNet: needs 4 stage sizes, an even width, embed_dim >= 1 and "
                                            "a resolution of at least 32");
  for (int n : layers)
    if (n < 1) throw Error(ErrorCode::InvalidArgument, "random ResNet: every stage needs at least one block");
  Checkpoint ckpt;
  ckpt.path = "<random resnet>";
  ckpt.format = "random";
  Generator g{std::mt19937(seed), &ckpt};
  g.conv("visual.conv1.weight", width / 2, 3, 3);
  g.bn("visual.bn1", width / 2);
  g.conv("visual.conv2.weight", width / 2, width / 2, 3);
  g.bn("visual.bn2", width / 2);
  g.conv("visual.conv3.weight", width, width / 2, 3);
  g.bn("visual.bn3", width);
  int64_t in = width;
  for (int s = 0; s < 4; ++s) {
    const int64_t planes = width << s;
    for (int b = 0; b < layers[static_cast<size_t>(s)]; ++b) {
      const std::string p = "visual.layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      g.conv(p + "conv1.weight", planes, in, 1);
      g.bn(p + "bn1", planes);
      g.conv(p + "conv2.weight", planes, planes, 3);
      g.bn(p + "bn2", planes);
      g.conv(p + "conv3.weight", planes * 4, planes, 1);
      g.bn(p + "bn3", planes * 4);
      if (b == 0 && (s > 0 || in != planes * 4)) {
        g.conv(p + "downsample.0.weight", planes * 4, in, 1);
        g.bn(p + "downsample.1", planes * 4);
      }
      in = planes * 4;
    }
  }
  const int64_t grid = resnet_output_grid(resolution);
  const float pstd = 1.0f / std::sqrt(static_cast<float>(in));
  g.add("visual.attnpool.positional_embedding", {grid * grid + 1, in}, [&] { return g.normal(pstd); });
  g.linear("visual.attnpool.q_proj", in, in, pstd);
  g.linear("visual.attnpool.k_proj", in, in, pstd);
  g.linear("visual.attnpool.v_proj", in, in, pstd);
  g.linear("visual.attnpool.c_proj", embed_dim, in, pstd);
  return ckpt;
}

}  // namespace clipkit
