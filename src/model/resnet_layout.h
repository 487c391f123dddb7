// Structure of OpenAI's modified-ResNet image tower (clip/model.py ModifiedResNet), read from
// the checkpoint's tensor shapes: stem widths, blocks per stage, bottleneck planes, attention-pool
// size. Shared by the fast encoder (resnet.cpp) and the scalar reference (resnet_reference.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "clipkit/model.h"
#include "io/checkpoint.h"

namespace clipkit {

struct ResNetBlockLayout {
  std::string prefix;        // "visual.layer2.0."
  int64_t in_channels = 0;
  int64_t planes = 0;        // output channels = 4 · planes
  int64_t stride = 1;        // 2 for the first block of layers 2..4 (as an AvgPool after conv2)
  bool downsample = false;   // AvgPool(stride) → 1×1 conv → BN on the shortcut
};

struct ResNetLayout {
  int64_t stem_channels = 0;                          // width / 2
  int64_t width = 0;                                  // stem output channels
  std::vector<std::vector<ResNetBlockLayout>> stages;  // 4 stages
  int64_t feature_dim = 0;                            // width · 32 (last stage output)
  int64_t tokens = 0;                                 // grid² + 1
  int64_t grid = 0;                                   // final feature map side
  int64_t heads = 0;
  int64_t embed_dim = 0;
  int64_t resolution = 0;                             // input side n of [batch, 3, n, n]
};

inline constexpr double kBatchNormEps = 1e-5;

// Reads and validates the structure; cross-checks the non-zero fields of `arch`
// (resnet_layers, vision_width, vision_heads, image_resolution, embed_dim). Throws Error naming
// the checkpoint and the tensor at fault.
ResNetLayout resnet_layout(const Checkpoint& ckpt, const Architecture& arch);

// Side of the final feature map for an n×n input (stem: conv stride 2, AvgPool 2; layers 2..4: AvgPool 2).
int64_t resnet_output_grid(int64_t n);

// Sum of the image tower's trainable parameters as PyTorch counts them (BatchNorm running
// statistics are buffers, not parameters).
int64_t resnet_parameter_count(const Checkpoint& ckpt);

// Scalar, unfused forward pass straight from the checkpoint tensors: NCHW, direct convolutions,
// BatchNorm applied as a separate step, double accumulation, attention over all tokens of the
// reference formula. Slow; the tests compare the fast encoder against it.
// pixels [batch, 3, n, n] -> out [batch, embed_dim]; trace keys as the encoder's.
void resnet_reference_forward(const Checkpoint& ckpt, const Architecture& arch, const float* pixels, int64_t batch,
                              float* out, DebugTrace* trace = nullptr);

}  // namespace clipkit

namespace clipkit {

// A modified-ResNet image tower with random weights in OpenAI tensor names ("visual.*" only):
// convolutions ~ N(0, 1/fan_in), BatchNorm gamma ~ 1 + 0.25·N, beta ~ 0.1·N, running mean ~ 0.1·N,
// running var ~ 0.5 + U(0, 1), attention pool as CLIP.initialize_parameters. Deterministic in
// `seed`. For tests and benchmarks of shapes no fixture covers (RN50 is {3, 4, 6, 3}, width 64,
// resolution 224, embed_dim 1024).
Checkpoint make_random_resnet_checkpoint(const std::vector<int>& layers, int64_t width, int64_t resolution,
                                         int64_t embed_dim, uint32_t seed);

}  // namespace clipkit
