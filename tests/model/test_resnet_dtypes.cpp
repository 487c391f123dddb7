// The ResNet image tower with f16 and int8 weights: close to the f32 tower (and to the reference
// fixtures), on tiny-rn and on a random ResNet with RN50's depth, where rounding errors have 16
// bottleneck blocks to accumulate through. (int8 models run int8 convolutions, except the first
// and the narrow ones, and int8 attention-pool projections; the int8 convolution kernel itself is
// tested against an independent computation of its scheme in tests/kernels.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/encoder.h"
#include "model/resnet_layout.h"
#include "model/model_test_util.h"
#include "support/test_support.h"

using namespace clipkit;

namespace {

Checkpoint tiny_rn() {
  Checkpoint c;
  c.path = test::data_path("models/tiny-rn.safetensors");
  c.format = "safetensors";
  SafetensorsFile f = read_safetensors(c.path);
  c.tensors = std::move(f.tensors);
  c.metadata = std::move(f.metadata);
  return c;
}

std::vector<float> golden(const std::string& name) {
  static const SafetensorsFile g = read_safetensors(test::data_path("golden/tiny-rn.safetensors"));
  return g.tensors.at(name).to_f32();
}

ModelOptions with_dtype(const std::string& dtype) {
  ModelOptions o;
  o.dtype = dtype;
  return o;
}

// Worst per-row cosine between got and want (rows of dim values).
double worst_cosine(const std::vector<float>& got, const std::vector<float>& want, int64_t rows) {
  EXPECT_EQ(got.size(), want.size());
  const size_t dim = want.size() / static_cast<size_t>(rows);
  double worst = 1.0;
  for (int64_t r = 0; r < rows; ++r)
    worst = std::min(worst, test::cosine(got.data() + r * dim, want.data() + r * dim, dim));
  return worst;
}

std::vector<float> encode(const Checkpoint& ckpt, const std::string& dtype, const std::vector<float>& pixels,
                          int64_t batch, int64_t dim) {
  const auto enc = make_resnet_encoder(ckpt, Architecture{}, with_dtype(dtype));
  std::vector<float> out(static_cast<size_t>(batch * dim));
  enc->encode(pixels.data(), batch, out.data(), nullptr);
  return out;
}

}  // namespace

TEST(ResNetDtypes, TinyRnF16AndInt8StayCloseToFixtures) {
  const Checkpoint ckpt = tiny_rn();
  const auto pixels = golden("pixel_values");
  const auto want = golden("image_embeds");
  const double f16 = worst_cosine(encode(ckpt, "f16", pixels, 12, 64), want, 12);
  const double int8 = worst_cosine(encode(ckpt, "int8", pixels, 12, 64), want, 12);
  std::printf("  tiny-rn vs fixtures: f16 1-cos %.2e, int8 1-cos %.2e\n", 1.0 - f16, 1.0 - int8);
  EXPECT_GE(f16, 0.9999);
  EXPECT_GE(int8, 0.999);
  EXPECT_LT(int8, 1.0 - 1e-9);  // int8 really quantised something
}

TEST(ResNetDtypes, Rn50DepthInt8StaysCloseToF32) {
  // RN50's block counts {3, 4, 6, 3} at width 32 and resolution 128 (a quarter of RN50's work)
  const Checkpoint ckpt = make_random_resnet_checkpoint({3, 4, 6, 3}, 32, 128, 256, 17);
  const int64_t batch = 4;
  const auto pixels = modeltest::structured_pixels(batch, 128, 18);
  const auto f32 = encode(ckpt, "f32", pixels, batch, 256);
  const auto int8 = encode(ckpt, "int8", pixels, batch, 256);
  const auto f16 = encode(ckpt, "f16", pixels, batch, 256);
  const double c8 = worst_cosine(int8, f32, batch), c16 = worst_cosine(f16, f32, batch);
  std::printf("  RN50-depth random tower vs f32: f16 1-cos %.2e, int8 1-cos %.2e\n", 1.0 - c16, 1.0 - c8);
  EXPECT_GE(c8, 0.999);
  EXPECT_GE(c16, 0.99999);
  // the images differ, so a high cosine is not the embeddings being constant
  EXPECT_LT(test::cosine(f32.data(), f32.data() + 256, 256), 0.999);
}

TEST(ResNetDtypes, Int8ResultOfAnImageDoesNotDependOnTheBatch) {
  // activations are quantised per image (and per row in the attention pool), so an image alone
  // gives what it gives in a batch; the batch runs one image per thread, the single image all
  // threads on each layer.
  // Direct convolutions: oneDNN's Winograd kernels differ between batch 1 (F(2,3)) and larger
  // batches (F(4,3)) by ~2e-6, and the quantisation rounding can turn that into ~1e-3.
  const Checkpoint ckpt = tiny_rn();
  const auto pixels = golden("pixel_values");
  ModelOptions options = with_dtype("int8");
  options.convolution = "direct";
  const auto enc = make_resnet_encoder(ckpt, Architecture{}, options);
  std::vector<float> all(12 * 64), one(64);
  enc->encode(pixels.data(), 12, all.data(), nullptr);
  for (int64_t i : {0, 7}) {
    enc->encode(pixels.data() + i * 3 * 64 * 64, 1, one.data(), nullptr);
    // f32 kernels may round differently for another batch size (~1e-7); quantising with another
    // image's scale would move the result by about 1e-3
    const float* want = all.data() + i * 64;
    EXPECT_LE(test::max_abs_diff(one.data(), want, 64), 1e-5 * test::max_abs(want, 64)) << "image " << i;
  }
}
