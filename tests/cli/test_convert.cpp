// clipkit convert: f16 / int8 safetensors that load back through load_checkpoint and Model::load.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "io/checkpoint.h"
#include "io/quantized_int8.h"
#include "io/safetensors.h"
#include "support/test_support.h"

namespace {

using clipkit::test::data_path;
using clipkit::test::run_cli;

const std::string kModel = "models/tiny-vit.pt";

std::vector<float> random_pixels(int64_t batch, int res) {
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(batch * 3 * res * res));
  for (auto& x : v) x = d(rng);
  return v;
}

// Minimum row cosine between two embedding sets.
double min_row_cosine(const clipkit::Embeddings& a, const clipkit::Embeddings& b) {
  double m = 1.0;
  for (int64_t r = 0; r < a.rows; ++r) m = std::min(m, clipkit::test::cosine(a.row(r), b.row(r), static_cast<size_t>(a.dim)));
  return m;
}

TEST(CliConvert, Int8FileLoadsBackAndRequantisesLosslessly) {
  const std::string out = clipkit::test::temp_dir() + "/tiny-int8.safetensors";
  const auto r = run_cli({"convert", "--dtype", "int8", "--layout", "plain", data_path(kModel), out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["dtype"], "int8");
  EXPECT_GT(j["quantized"].get<int>(), 8);
  EXPECT_LT(j["bytes_out"].get<double>(), j["bytes_in"].get<double>());  // tiny model: the f16 token embedding dominates

  // On disk: I8 weights with per-channel F32 scales, and the metadata tag.
  const auto file = clipkit::read_safetensors(out);
  EXPECT_EQ(file.metadata.at(clipkit::kQuantizationKey), clipkit::kQuantizationInt8);
  const auto& q = file.tensors.at("transformer.resblocks.0.mlp.c_fc.weight");
  EXPECT_EQ(q.dtype, clipkit::DType::I8);
  const auto& s = file.tensors.at(std::string("transformer.resblocks.0.mlp.c_fc.weight") + clipkit::kInt8ScaleSuffix);
  EXPECT_EQ(s.dtype, clipkit::DType::F32);
  EXPECT_EQ(s.shape, clipkit::Shape{q.shape[0]});

  // Through load_checkpoint: the same names as the original, dequantised within half a step.
  const auto orig = clipkit::load_checkpoint(data_path(kModel));
  const auto conv = clipkit::load_checkpoint(out);
  ASSERT_EQ(orig.tensors.size(), conv.tensors.size());
  for (const auto& [name, t] : orig.tensors) {
    ASSERT_TRUE(conv.has(name)) << name;
    const auto a = t.to_f32(), b = conv.get(name).to_f32();
    ASSERT_EQ(a.size(), b.size()) << name;
    const bool quantised = file.tensors.at(name).dtype == clipkit::DType::I8;
    const int64_t rows = t.shape.empty() ? 1 : t.shape[0];
    const size_t per = a.size() / static_cast<size_t>(std::max<int64_t>(rows, 1));
    for (size_t i = 0; i < a.size(); ++i) {
      if (!quantised) {
        ASSERT_EQ(a[i], b[i]) << name;
      } else {
        float amax = 0;
        const size_t row = i / per;
        for (size_t k = row * per; k < (row + 1) * per; ++k) amax = std::max(amax, std::fabs(a[k]));
        ASSERT_LE(std::fabs(a[i] - b[i]), 0.5f * amax / 127.0f * 1.001f + 1e-9f) << name << "[" << i << "]";
      }
    }
  }

  // As a model: int8 from the converted file equals int8 from the original, and stays close to f32.
  clipkit::ModelOptions i8;
  i8.dtype = "int8";
  const auto m32 = clipkit::Model::load(data_path(kModel));
  const auto m8 = clipkit::Model::load(data_path(kModel), i8);
  const auto c8 = clipkit::Model::load(out, i8);
  const int res = m32->info().arch.image_resolution;
  const auto px = random_pixels(3, res);
  const auto e32 = m32->encode_images(px.data(), 3), e8 = m8->encode_images(px.data(), 3),
             ec8 = c8->encode_images(px.data(), 3);
  // The stored integers are used as they are; they are exactly what quantising at load gives.
  ASSERT_EQ(ec8.data.size(), e8.data.size());
  EXPECT_EQ(ec8.data, e8.data);
  EXPECT_NE(c8->info().weight_dtype.find("I8"), std::string::npos) << c8->info().weight_dtype;
  EXPECT_GT(min_row_cosine(ec8, e32), 0.99);
  const std::vector<std::string> texts{"a photo of a cat.", "a diagram", "an astronaut riding a horse"};
  EXPECT_GT(min_row_cosine(c8->encode_texts(texts), m8->encode_texts(texts)), 0.99999);
  EXPECT_GT(min_row_cosine(c8->encode_texts(texts), m32->encode_texts(texts)), 0.99);
}

TEST(CliConvert, Int8ResNetKeepsItsConvolutionKernelsAndEncodesAsAPlainFile) {
  // An int8 ResNet quantises each convolution after folding its BatchNorm in, so the file keeps the
  // kernels (and the attention pool's f32 key and value projections) and the images' embeddings
  // are those of the plain file loaded as int8, bit for bit.
  const std::string out = clipkit::test::temp_dir() + "/tiny-rn-int8.safetensors";
  const auto r = run_cli({"convert", "--dtype", "int8", data_path("models/tiny-rn.safetensors"), out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto file = clipkit::read_safetensors(out);
  EXPECT_EQ(file.tensors.at("visual.layer4.0.conv2.weight").dtype, clipkit::DType::F32);
  EXPECT_EQ(file.tensors.at("visual.attnpool.k_proj.weight").dtype, clipkit::DType::F32);
  EXPECT_EQ(file.tensors.at("visual.attnpool.c_proj.weight").dtype, clipkit::DType::I8);
  clipkit::ModelOptions i8;
  i8.dtype = "int8";
  const auto m8 = clipkit::Model::load(data_path("models/tiny-rn.safetensors"), i8);
  const auto c8 = clipkit::Model::load(out, i8);
  const auto px = random_pixels(2, static_cast<int>(m8->info().arch.image_resolution));
  EXPECT_EQ(c8->encode_images(px.data(), 2).data, m8->encode_images(px.data(), 2).data);
}

TEST(CliConvert, Int8FileKeepsItsIdentityThroughFurtherConversions) {
  const std::string dir = clipkit::test::temp_dir();
  const std::string i8 = dir + "/id-int8.safetensors", again = dir + "/id-int8-again.safetensors",
                    f32 = dir + "/id-f32.safetensors";
  ASSERT_EQ(run_cli({"convert", "--dtype", "int8", "--layout", "plain", data_path(kModel), i8}).exit_code, 0);
  ASSERT_EQ(run_cli({"convert", "--dtype", "int8", "--layout", "plain", i8, again}).exit_code, 0);
  ASSERT_EQ(run_cli({"convert", "--dtype", "f32", i8, f32}).exit_code, 0);
  // int8 -> int8 keeps the stored integers and scales byte for byte.
  const auto a = clipkit::read_safetensors(i8), b = clipkit::read_safetensors(again);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, t] : a.tensors) {
    ASSERT_EQ(b.tensors.count(name), 1u) << name;
    const auto& u = b.tensors.at(name);
    ASSERT_EQ(t.dtype, u.dtype) << name;
    ASSERT_EQ(t.nbytes(), u.nbytes()) << name;
    EXPECT_EQ(std::memcmp(t.data, u.data, t.nbytes()), 0) << name;
  }
  // int8 -> f32 writes the dequantised values; the model is the same model (same fingerprint, as
  // saved classifiers and indexes check) and computes the same f32 embeddings.
  const auto m8 = clipkit::Model::load(i8), m32 = clipkit::Model::load(f32);
  EXPECT_EQ(m8->info().fingerprint, m32->info().fingerprint);
  EXPECT_EQ(m32->info().weight_dtype.find("I8"), std::string::npos);
  const std::vector<std::string> texts{"a photo of a cat.", "a sketch"};
  EXPECT_EQ(m8->encode_texts(texts).data, m32->encode_texts(texts).data);
  const int res = m8->info().arch.image_resolution;
  const auto px = random_pixels(2, res);
  EXPECT_EQ(m8->encode_images(px.data(), 2).data, m32->encode_images(px.data(), 2).data);
}

TEST(CliConvert, F16FileMatchesOriginal) {
  const std::string out = clipkit::test::temp_dir() + "/tiny-f16.safetensors";
  const auto r = run_cli({"convert", "--dtype", "f16", data_path(kModel), out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto file = clipkit::read_safetensors(out);
  for (const auto& [name, t] : file.tensors) {
    if (t.is_float()) {
      EXPECT_EQ(t.dtype, clipkit::DType::F16) << name;
    }
  }
  const auto m32 = clipkit::Model::load(data_path(kModel));
  const auto m16 = clipkit::Model::load(out);
  const int res = m32->info().arch.image_resolution;
  const auto px = random_pixels(2, res);
  EXPECT_GT(min_row_cosine(m16->encode_images(px.data(), 2), m32->encode_images(px.data(), 2)), 0.9999);
  const std::vector<std::string> texts{"a photo of a dog.", "a red square"};
  EXPECT_GT(min_row_cosine(m16->encode_texts(texts), m32->encode_texts(texts)), 0.9999);
}

TEST(CliConvert, BadArgumentsGiveOneLineErrors) {
  const std::string dir = clipkit::test::temp_dir();
  auto r = run_cli({"convert", "--dtype", "int4", data_path(kModel), dir + "/x.safetensors"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--dtype"), std::string::npos) << r.err;
  r = run_cli({"convert", "--dtype", "f16", dir + "/missing.pt", dir + "/x.safetensors"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("missing.pt"), std::string::npos) << r.err;
}

TEST(CliConvert, OrphanInt8ScaleIsRejected) {
  // A scale without its weight (or a weight that is not I8) is a format error naming the tensor.
  std::map<std::string, clipkit::Tensor> t;
  t.emplace(std::string("a.weight") + clipkit::kInt8ScaleSuffix, clipkit::Tensor::from_f32({1.0f}, {1}));
  EXPECT_THROW(clipkit::attach_int8_scales(t, "f.safetensors"), clipkit::Error);
  t.emplace("a.weight", clipkit::Tensor::from_f32({1.0f, 2.0f}, {1, 2}));
  try {
    clipkit::attach_int8_scales(t, "f.safetensors");
    FAIL();
  } catch (const clipkit::Error& e) {
    EXPECT_NE(std::string(e.what()).find("a.weight"), std::string::npos);
  }
}

}  // namespace
