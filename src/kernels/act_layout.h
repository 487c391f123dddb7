// Memory layouts of a batch of convolution activations, logically [batch, c, h, w] float32, and
// conversions between them. The ResNet tower keeps its activations in one layout from the stem
// to the attention pool (docs/performance.md, "ResNet convolutions").
#pragma once
#include <cstdint>
#include <string>

namespace clipkit {

enum class ActLayout {
  Nchw,       // planar: [batch][c][h][w]
  Nhwc,       // channels-last: [batch][h][w][c]
  Blocked16,  // oneDNN's nChw16c: [batch][ceil(c/16)][h][w][16]; channels beyond c are zero padding
};

const char* act_layout_name(ActLayout layout);

// Floats a buffer for [batch, c, h, w] in `layout` holds (Blocked16 rounds c up to 16).
int64_t act_floats(ActLayout layout, int64_t batch, int64_t c, int64_t h, int64_t w);

// Whether this CPU runs oneDNN's blocked (nChw16c) convolution kernels: AVX-512 (F, BW, VL, DQ).
bool blocked_layout_supported();

// y = x in another layout (oneDNN reorder; Blocked16 padding written as zeros). x and y must not
// overlap. Same layout: a copy.
void convert_layout(const float* x, ActLayout from, float* y, ActLayout to, int64_t batch, int64_t c, int64_t h,
                    int64_t w);

}  // namespace clipkit
