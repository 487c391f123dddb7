// The modified-ResNet image tower against the reference fixtures (tiny-rn, computed by OpenAI's
// clip/model.py) and, for shapes no fixture covers, against the scalar reference forward pass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "io/safetensors.h"
#include "kernels/act_layout.h"
#include "kernels/conv.h"
#include "model/encoder.h"
#include "model/resnet_layout.h"
#include "model/model_test_util.h"
#include "support/test_support.h"

using namespace clipkit;

namespace {

Checkpoint read_checkpoint(const std::string& relative) {
  Checkpoint c;
  c.path = test::data_path(relative);
  c.format = "safetensors";
  SafetensorsFile f = read_safetensors(c.path);
  c.tensors = std::move(f.tensors);
  c.metadata = std::move(f.metadata);
  return c;
}

const Checkpoint& tiny_rn() {
  static const Checkpoint c = read_checkpoint("models/tiny-rn.safetensors");
  return c;
}

const SafetensorsFile& golden() {
  static const SafetensorsFile g = read_safetensors(test::data_path("golden/tiny-rn.safetensors"));
  return g;
}

std::vector<float> golden_f32(const std::string& name) {
  auto it = golden().tensors.find(name);
  if (it == golden().tensors.end()) throw std::runtime_error("golden tensor missing: " + name);
  return it->second.to_f32();
}

// cosine ≥ min_cos per row and max|diff| ≤ rel · max|ref| over the whole tensor.
void expect_matches(const std::vector<float>& got, const std::vector<float>& want, size_t rows, const std::string& what,
                    double min_cos = 0.99999, double rel = 1e-4) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_GT(rows, 0u);
  const size_t dim = want.size() / rows;
  double worst = 1.0;
  for (size_t r = 0; r < rows; ++r) {
    const double cos = test::cosine(got.data() + r * dim, want.data() + r * dim, dim);
    worst = std::min(worst, cos);
    EXPECT_GE(cos, min_cos) << what << " row " << r;
  }
  const double diff = test::max_abs_diff(got.data(), want.data(), got.size());
  const double ref = test::max_abs(want.data(), want.size());
  EXPECT_LE(diff, rel * ref) << what << ": max|diff| " << diff << ", max|ref| " << ref;
  std::printf("  %-32s 1-cos %.2e  max|diff|/max|ref| %.2e\n", what.c_str(), 1.0 - worst, diff / ref);
}

// Every convolution mode: the default, blocked with Winograd forced on these narrow test models
// (on AVX-512), blocked direct where the model is wide enough, and channels-last.
std::vector<ModelOptions> conv_modes() {
  std::vector<ModelOptions> modes(4);
  modes[0].convolution = "auto";
  modes[1].convolution = "blocked";
  modes[2].convolution = "direct";
  modes[3].convolution = "nhwc";
  return modes;
}

const char* kTraceKeys[] = {"stem", "layer1", "layer2", "layer3", "layer4", "attnpool_tokens"};

}  // namespace

TEST(ResNetLayout, ReadsTinyRnStructure) {
  const ResNetLayout L = resnet_layout(tiny_rn(), Architecture{});
  EXPECT_EQ(L.stem_channels, 4);
  EXPECT_EQ(L.width, 8);
  ASSERT_EQ(L.stages.size(), 4u);
  for (const auto& s : L.stages) EXPECT_EQ(s.size(), 1u);
  EXPECT_EQ(L.stages[0][0].stride, 1);
  EXPECT_TRUE(L.stages[0][0].downsample);  // 8 -> 32 channels
  EXPECT_EQ(L.stages[3][0].stride, 2);
  EXPECT_EQ(L.feature_dim, 256);
  EXPECT_EQ(L.tokens, 5);
  EXPECT_EQ(L.grid, 2);
  EXPECT_EQ(L.heads, 4);  // width · 32 / 64, as build_model
  EXPECT_EQ(L.embed_dim, 64);
  EXPECT_EQ(L.resolution, 64);
}

TEST(ResNetGolden, EncoderMatchesReferenceFixtures) {
  const auto pixels = golden_f32("pixel_values");
  const auto want = golden_f32("image_embeds");
  const int64_t batch = 12;
  ASSERT_EQ(pixels.size(), static_cast<size_t>(batch * 3 * 64 * 64));
  for (const ModelOptions& mode : conv_modes()) {
    SCOPED_TRACE("convolution " + mode.convolution);
    const auto enc = make_resnet_encoder(tiny_rn(), Architecture{}, mode);
    std::vector<float> out(static_cast<size_t>(batch * 64));
    DebugTrace trace;
    enc->encode(pixels.data(), batch, out.data(), &trace);
    expect_matches(out, want, static_cast<size_t>(batch), mode.convolution + " image_embeds");
    for (const char* key : kTraceKeys) {
      const std::string name = std::string("image0.") + key;
      ASSERT_TRUE(trace.count(name)) << name;
      const auto ref = golden_f32("debug." + name);
      const size_t rows = std::string(key) == "attnpool_tokens" ? 5 : 1;
      expect_matches(trace[name], ref, rows, mode.convolution + " " + name);
    }
  }
}

TEST(ResNetGolden, ParameterCountMatchesPyTorch) {
  // sum of numel over model.visual.parameters(): every visual tensor except BatchNorm buffers
  int64_t n = 0;
  for (const auto& [name, t] : tiny_rn().tensors)
    if (name.rfind("visual.", 0) == 0 && name.find("running_") == std::string::npos &&
        name.find("num_batches_tracked") == std::string::npos)
      n += t.numel();
  const auto enc = make_resnet_encoder(tiny_rn(), Architecture{}, ModelOptions{});
  EXPECT_EQ(enc->parameter_count(), n);
  EXPECT_GT(n, 256 * 256 * 3);
}

TEST(ResNetGolden, ScalarReferenceMatchesFixtures) {
  const auto pixels = golden_f32("pixel_values");
  const auto want = golden_f32("image_embeds");
  const int64_t batch = 12;
  std::vector<float> out(static_cast<size_t>(batch * 64));
  DebugTrace trace;
  resnet_reference_forward(tiny_rn(), Architecture{}, pixels.data(), batch, out.data(), &trace);
  expect_matches(out, want, static_cast<size_t>(batch), "reference image_embeds");
  for (const char* key : kTraceKeys) {
    const std::string name = std::string("image0.") + key;
    expect_matches(trace.at(name), golden_f32("debug." + name), 1, "reference " + name);
  }
}

TEST(ResNetGolden, BatchItemsAreIndependent) {
  const auto pixels = golden_f32("pixel_values");
  for (const ModelOptions& mode : conv_modes()) {
    SCOPED_TRACE("convolution " + mode.convolution);
    const auto enc = make_resnet_encoder(tiny_rn(), Architecture{}, mode);
    std::vector<float> all(12 * 64), one(64);
    enc->encode(pixels.data(), 12, all.data(), nullptr);
    for (int64_t i : {0, 5, 11}) {
      enc->encode(pixels.data() + i * 3 * 64 * 64, 1, one.data(), nullptr);
      expect_matches(one, std::vector<float>(all.begin() + i * 64, all.begin() + (i + 1) * 64), 1,
                     mode.convolution + " image " + std::to_string(i) + " alone", 0.999999, 1e-5);
    }
  }
}

TEST(ResNetGolden, ArchitectureFieldsAreCrossChecked) {
  Architecture arch;
  arch.kind = "resnet";
  arch.resnet_layers = {1, 1, 1, 1};
  arch.vision_width = 8;
  arch.vision_heads = 4;
  arch.image_resolution = 64;
  arch.embed_dim = 64;
  EXPECT_NO_THROW(make_resnet_encoder(tiny_rn(), arch, ModelOptions{}));
  auto expect_shape_error = [&](Architecture a, const std::string& needle) {
    try {
      make_resnet_encoder(tiny_rn(), a, ModelOptions{});
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Shape) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  Architecture a = arch;
  a.vision_width = 16;
  expect_shape_error(a, "visual.conv3.weight");
  a = arch;
  a.resnet_layers = {1, 2, 1, 1};
  expect_shape_error(a, "blocks per stage");
  a = arch;
  a.image_resolution = 96;
  expect_shape_error(a, "visual.attnpool.positional_embedding");
  a = arch;
  a.vision_heads = 3;
  expect_shape_error(a, "heads");
  a = arch;
  a.embed_dim = 32;
  expect_shape_error(a, "visual.attnpool.c_proj.weight");
}

TEST(ResNetErrors, MissingOrMisshapenTensorsAreNamed) {
  {
    Checkpoint c = tiny_rn();
    c.tensors.erase("visual.layer3.0.bn2.running_var");
    try {
      make_resnet_encoder(c, Architecture{}, ModelOptions{});
      FAIL();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::NotFound);
      EXPECT_NE(std::string(e.what()).find("visual.layer3.0.bn2.running_var"), std::string::npos) << e.what();
    }
  }
  {
    Checkpoint c = tiny_rn();
    c.tensors["visual.layer2.0.conv2.weight"] = Tensor::from_f32(std::vector<float>(16 * 8 * 9), {16, 8, 3, 3});
    try {
      make_resnet_encoder(c, Architecture{}, ModelOptions{});
      FAIL();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Shape);
      EXPECT_NE(std::string(e.what()).find("visual.layer2.0.conv2.weight"), std::string::npos) << e.what();
    }
  }
  {
    Checkpoint c = tiny_rn();
    c.tensors.erase("visual.layer2.0.downsample.0.weight");
    EXPECT_THROW(make_resnet_encoder(c, Architecture{}, ModelOptions{}), Error);
  }
  {
    Checkpoint c = tiny_rn();
    c.tensors["visual.attnpool.positional_embedding"] = Tensor::from_f32(std::vector<float>(6 * 256), {6, 256});
    try {
      make_resnet_encoder(c, Architecture{}, ModelOptions{});
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("positional_embedding"), std::string::npos) << e.what();
    }
  }
  {
    Checkpoint c = tiny_rn();
    std::vector<float> var = c.get("visual.bn2.running_var").to_f32();
    var[1] = -1.0f;
    c.tensors["visual.bn2.running_var"] = Tensor::from_f32(var, {4});
    try {
      make_resnet_encoder(c, Architecture{}, ModelOptions{});
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("visual.bn2"), std::string::npos) << e.what();
    }
  }
}

// A second shape: more blocks in stage 2 (blocks without a downsample), width 16, resolution 96
// (3×3 final grid), 8 heads, embed_dim 48. No fixture exists, so the fast path is checked against
// the scalar reference.
TEST(ResNetSynthetic, MatchesScalarReferenceEndToEnd) {
  const Checkpoint ckpt = make_random_resnet_checkpoint({1, 2, 1, 1}, 16, 96, 48, 7);
  const ResNetLayout L = resnet_layout(ckpt, Architecture{});
  EXPECT_EQ(L.stages[1].size(), 2u);
  EXPECT_FALSE(L.stages[1][1].downsample);
  EXPECT_EQ(L.grid, 3);
  EXPECT_EQ(L.heads, 8);
  EXPECT_EQ(L.resolution, 96);
  const int64_t batch = 3;
  const auto pixels = modeltest::structured_pixels(batch, 96, 8);
  std::vector<float> ref(static_cast<size_t>(batch * 48));
  DebugTrace tr;
  resnet_reference_forward(ckpt, Architecture{}, pixels.data(), batch, ref.data(), &tr);
  for (const ModelOptions& mode : conv_modes()) {
    SCOPED_TRACE("convolution " + mode.convolution);
    const auto enc = make_resnet_encoder(ckpt, Architecture{}, mode);
    std::vector<float> fast(static_cast<size_t>(batch * 48));
    DebugTrace tf;
    enc->encode(pixels.data(), batch, fast.data(), &tf);
    expect_matches(fast, ref, static_cast<size_t>(batch), mode.convolution + " synthetic image_embeds", 0.999999,
                   1e-5);
    const std::vector<std::pair<std::string, size_t>> sizes = {
        {"stem", 16 * 24 * 24}, {"layer1", 64 * 24 * 24}, {"layer2", 128 * 12 * 12},
        {"layer3", 256 * 6 * 6}, {"layer4", 512 * 3 * 3}, {"attnpool_tokens", 10 * 512}};
    for (const auto& [key, size] : sizes) {
      const std::string name = "image0." + key;
      ASSERT_TRUE(tf.count(name) && tr.count(name)) << name;
      EXPECT_EQ(tf[name].size(), size) << name;
      expect_matches(tf[name], tr[name], 1, mode.convolution + " synthetic " + name, 0.999999, 1e-5);
    }
    // the embeddings depend on the image
    EXPECT_LT(test::cosine(fast.data(), fast.data() + 48, 48), 0.999);
  }
}

TEST(ResNetSynthetic, WideModelsRunBlockedWinogradByDefault) {
  // base width 32 (a 16-channel stem, like every CLIP ResNet's 32 and up): the default mode picks
  // the blocked layout and Winograd 3x3 convolutions on AVX-512 CPUs where oneDNN has them, "direct" keeps the layout
  // without Winograd, "nhwc" is channels-last; all three match the scalar reference
  const Checkpoint ckpt = make_random_resnet_checkpoint({1, 2, 1, 1}, 32, 64, 32, 11);
  const int64_t batch = 3;
  const auto pixels = modeltest::structured_pixels(batch, 64, 12);
  std::vector<float> ref(static_cast<size_t>(batch * 32));
  resnet_reference_forward(ckpt, Architecture{}, pixels.data(), batch, ref.data());
  for (const ModelOptions& mode : conv_modes()) {
    const auto enc = make_resnet_encoder(ckpt, Architecture{}, mode);
    const std::string k = enc->kernels();
    if (blocked_layout_supported() && mode.convolution != "nhwc") {
      EXPECT_NE(k.find("nChw16c"), std::string::npos) << mode.convolution << ": " << k;
      // Winograd where oneDNN offers it on this CPU (the 32-channel 3x3 layers at this batch size)
      const bool wino = mode.convolution != "direct" && winograd_available(32, 32, batch, 16, 16);
      EXPECT_EQ(k.find("wino") != std::string::npos, wino) << mode.convolution << ": " << k;
    } else {
      EXPECT_NE(k.find("nhwc"), std::string::npos) << mode.convolution << ": " << k;
    }
    EXPECT_EQ(k.find("ref"), std::string::npos) << mode.convolution << ": " << k;
    std::vector<float> fast(ref.size());
    enc->encode(pixels.data(), batch, fast.data(), nullptr);
    expect_matches(fast, ref, static_cast<size_t>(batch), mode.convolution + " width 32", 0.999999, 1e-5);
  }
}

TEST(ResNetSynthetic, OtherArchitecturesLoad) {
  // odd resolution (not a multiple of 32): 80 -> 40 -> 20 -> 10 -> 5 -> 2
  const Checkpoint ckpt = make_random_resnet_checkpoint({2, 1, 1, 2}, 8, 80, 16, 9);
  Architecture arch;
  arch.image_resolution = 80;
  const auto pixels = modeltest::structured_pixels(2, 80, 10);
  std::vector<float> ref(32);
  resnet_reference_forward(ckpt, arch, pixels.data(), 2, ref.data());
  for (const ModelOptions& mode : conv_modes()) {
    SCOPED_TRACE("convolution " + mode.convolution);
    const auto enc = make_resnet_encoder(ckpt, arch, mode);
    std::vector<float> fast(32);
    enc->encode(pixels.data(), 2, fast.data(), nullptr);
    // width 8: channel counts 4 and 8 leave most of each 16-channel block as padding
    expect_matches(fast, ref, 2, mode.convolution + " resolution 80", 0.999999, 1e-5);
    for (float f : fast) EXPECT_TRUE(std::isfinite(f));
  }
}

// resnet_layout on the fixture with one tensor's shape or dtype changed: each inconsistency is an
// Error naming the tensor and what was expected.
TEST(ResNetLayout, InconsistentTensorsNameTheProblem) {
  const ResNetLayout L = resnet_layout(tiny_rn(), Architecture{});
  const int64_t stem = L.stem_channels, width = L.width, planes = L.stages[0][0].planes, f = L.feature_dim;
  ASSERT_TRUE(L.stages[0][0].downsample);
  struct Case {
    std::function<void(Checkpoint&)> change;
    ErrorCode code;
    std::string part;
  };
  const std::string b = "visual.layer1.0.";
  const std::vector<Case> cases = {
      {[&](Checkpoint& c) { c.tensors["visual.conv1.weight"].shape = {stem, 3, 5, 5}; }, ErrorCode::Shape,
       "'visual.conv1.weight' has shape [" + std::to_string(stem) + ", 3, 5, 5], expected [out, in, 3, 3]"},
      {[&](Checkpoint& c) { c.tensors["visual.conv1.weight"].dtype = DType::I64; }, ErrorCode::Shape,
       "'visual.conv1.weight' is not floating point"},
      {[&](Checkpoint& c) { c.tensors["visual.conv2.weight"].shape = {stem + 1, stem, 3, 3}; }, ErrorCode::Shape,
       "expected " + std::to_string(stem) + " output channels"},
      {[&](Checkpoint& c) { c.tensors[b + "conv2.weight"].shape = {planes + 1, planes, 3, 3}; }, ErrorCode::Shape,
       "'" + b + "conv2.weight' has shape [" + std::to_string(planes + 1) + ", " + std::to_string(planes) +
           ", 3, 3], expected " + std::to_string(planes) + " output channels"},
      {[&](Checkpoint& c) { c.tensors[b + "conv3.weight"].shape = {4 * planes + 1, planes, 1, 1}; }, ErrorCode::Shape,
       "expected " + std::to_string(4 * planes) + " output channels (4 × planes)"},
      {[&](Checkpoint& c) { c.tensors[b + "downsample.0.weight"].shape = {4 * planes + 1, width, 1, 1}; },
       ErrorCode::Shape, "'" + b + "downsample.0.weight' has shape"},
      {[&](Checkpoint& c) {
         for (auto it = c.tensors.begin(); it != c.tensors.end();)
           it = it->first.rfind("visual.layer2.", 0) == 0 ? c.tensors.erase(it) : std::next(it);
       },
       ErrorCode::NotFound, "no tensor 'visual.layer2.0.conv1.weight' (ResNet stage 2 has no blocks)"},
      {[&](Checkpoint& c) { c.tensors["visual.layer5.0.conv1.weight"] = c.tensors.at("visual.layer4.0.conv1.weight"); },
       ErrorCode::Format, "unexpected tensor 'visual.layer5.0.conv1.weight'"},
      {[&](Checkpoint& c) { c.tensors["visual.attnpool.positional_embedding"].shape = {L.tokens, f + 1}; },
       ErrorCode::Shape, "expected [grid² + 1, " + std::to_string(f) + "]"},
      {[&](Checkpoint& c) { c.tensors["visual.attnpool.k_proj.weight"].shape = {f, f + 1}; }, ErrorCode::Shape,
       "'visual.attnpool.k_proj.weight' has shape [" + std::to_string(f) + ", " + std::to_string(f + 1) + "], expected [" +
           std::to_string(f) + ", " + std::to_string(f) + "]"},
      {[&](Checkpoint& c) { c.tensors["visual.attnpool.c_proj.weight"].shape = {L.embed_dim, f + 1}; },
       ErrorCode::Shape, "expected [embed_dim, " + std::to_string(f) + "]"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.part);
    Checkpoint c = tiny_rn();
    k.change(c);
    try {
      resnet_layout(c, Architecture{});
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), k.code);
      EXPECT_NE(std::string(e.what()).find(k.part), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.path), std::string::npos) << e.what();
    }
  }
}
