// clipkit convert --layout packed (the default): weights stored in the kernels' layouts load in
// place and compute the same bits as the plain checkpoint; layouts of another CPU are repacked.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "core/packed_weight.h"
#include "io/checkpoint.h"
#include "io/packed_weights.h"
#include "io/safetensors.h"
#include "support/test_support.h"

namespace {

using clipkit::test::data_path;
using clipkit::test::run_cli;

const std::string kModel = "models/tiny-vit.pt";
const std::vector<std::string> kTexts{"a photo of a cat.", "a diagram", "an astronaut riding a horse"};

std::vector<float> random_pixels(int64_t batch, int res) {
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(batch * 3 * res * res));
  for (auto& x : v) x = d(rng);
  return v;
}

std::string convert(const std::string& dtype, const std::string& layout, const std::string& in, const std::string& out,
                    nlohmann::json* report = nullptr) {
  const auto r = run_cli({"convert", "--dtype", dtype, "--layout", layout, in, out});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (report) *report = nlohmann::json::parse(r.out);
  return out;
}

// Image and text embeddings of `a` and `b` are the same bits.
void expect_same_bits(const clipkit::Model& a, const clipkit::Model& b, const std::string& what) {
  const int res = a.info().arch.image_resolution;
  const auto px = random_pixels(3, res);
  EXPECT_EQ(a.encode_images(px.data(), 3).data, b.encode_images(px.data(), 3).data) << what;
  EXPECT_EQ(a.encode_texts(kTexts).data, b.encode_texts(kTexts).data) << what;
}

clipkit::ModelOptions with_dtype(const std::string& dtype, std::vector<std::string>* warnings) {
  clipkit::ModelOptions o;
  o.dtype = dtype;
  o.on_warning = [warnings](const std::string& w) { warnings->push_back(w); };
  return o;
}

TEST(CliConvertPacked, PackedFilesComputeThePlainFilesBits) {
  const std::string dir = clipkit::test::temp_dir();
  for (const std::string dtype : {"f32", "int8", "f16"}) {
    nlohmann::json report;
    const std::string packed = convert(dtype, "packed", data_path(kModel), dir + "/p-" + dtype + ".safetensors", &report);
    EXPECT_EQ(report["layout"], "packed");
    EXPECT_GE(report["packed"].get<int>(), 2 * 4 + 1) << dtype;  // every block's four layers, the patch embedding
    std::vector<std::string> warnings;
    const auto m = clipkit::Model::load(packed, with_dtype(dtype, &warnings));
    for (const std::string& w : warnings)  // every stored layout was this CPU's
      EXPECT_EQ(w.find("repacked"), std::string::npos) << w;
    // The plain counterpart: the original for f32 and int8 (quantised at load), for f16 the same
    // weights stored as plain halves.
    const std::string plain =
        dtype == "f16" ? convert(dtype, "plain", data_path(kModel), dir + "/plain-f16.safetensors") : data_path(kModel);
    const auto ref = clipkit::Model::load(plain, with_dtype(dtype, &warnings));
    expect_same_bits(*m, *ref, dtype);
    if (dtype == "f32") {
      EXPECT_EQ(m->info().fingerprint, ref->info().fingerprint);
    }
  }
}

TEST(CliConvertPacked, PackedWeightsReadAsTheirValues) {
  // Any reader of the checkpoint sees the original tensors: names, shapes and values (read
  // through the stored blocked layouts), the packed bytes themselves hidden.
  const std::string packed = convert("f32", "packed", data_path(kModel), clipkit::test::temp_dir() + "/values.safetensors");
  const auto orig = clipkit::load_checkpoint(data_path(kModel));
  const auto conv = clipkit::load_checkpoint(packed);
  ASSERT_EQ(orig.tensors.size(), conv.tensors.size());
  int seen_packed = 0;
  for (const auto& [name, t] : orig.tensors) {
    ASSERT_TRUE(conv.has(name)) << name;
    const clipkit::Tensor& c = conv.get(name);
    EXPECT_EQ(c.shape, t.shape) << name;
    if (c.packed) {
      ++seen_packed;
      EXPECT_EQ(c.value_f32(c.numel() - 1), t.value_f32(t.numel() - 1)) << name;
    }
    EXPECT_EQ(c.to_f32(), t.to_f32()) << name;
  }
  EXPECT_GT(seen_packed, 8);
}

// The packed file with one weight's stored layout replaced by a row-major one: a layout no matmul
// kernel here chooses, as a file written on another kind of CPU would hold.
std::string with_foreign_layout(const std::string& packed, const std::string& weight, const std::string& out,
                                const std::function<void(nlohmann::json&)>& edit = {}) {
  const auto file = clipkit::read_safetensors(packed);
  auto meta = file.metadata;
  auto desc = nlohmann::json::parse(meta.at(clipkit::kPackedWeightsKey));
  const auto orig = clipkit::load_checkpoint(data_path(kModel));
  const clipkit::Tensor& w = orig.get(weight);
  const int64_t rows = w.shape[0], in = w.numel() / rows;
  const std::vector<float> values = w.to_f32();
  std::vector<uint8_t> bytes(values.size() * sizeof(float));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  desc[weight]["pieces"] = nlohmann::json::array({{{"row0", 0},
                                                   {"rows", rows},
                                                   {"offset", 0},
                                                   {"bytes", bytes.size()},
                                                   {"dims", {in, rows}},
                                                   {"padded", {in, rows}},
                                                   {"strides", {1, in}},
                                                   {"blocks", nlohmann::json::array()}}});
  if (edit) edit(desc[weight]);
  meta[clipkit::kPackedWeightsKey] = desc.dump();
  std::vector<std::pair<std::string, clipkit::Tensor>> tensors;
  const std::string blob = weight + clipkit::kPackedSuffix;
  const int64_t n = static_cast<int64_t>(bytes.size());
  tensors.emplace_back(blob, clipkit::Tensor::from_bytes(clipkit::DType::U8, {n}, std::move(bytes)));
  for (const auto& [name, t] : file.tensors)
    if (name != blob) tensors.emplace_back(name, t);
  clipkit::write_safetensors(out, tensors, meta, 64);
  return out;
}

TEST(CliConvertPacked, LayoutsOfAnotherCpuAreRepackedWithAWarning) {
  const std::string dir = clipkit::test::temp_dir();
  const std::string packed = convert("f32", "packed", data_path(kModel), dir + "/foreign-src.safetensors");
  const std::string foreign =
      with_foreign_layout(packed, "transformer.resblocks.0.mlp.c_fc.weight", dir + "/foreign.safetensors");
  std::vector<std::string> warnings;
  const auto m = clipkit::Model::load(foreign, with_dtype("f32", &warnings));
  int repacked = 0;
  for (const std::string& w : warnings)
    if (w.find("repacked") != std::string::npos) {
      ++repacked;
      EXPECT_NE(w.find("1 weight matrices"), std::string::npos) << w;
    }
  EXPECT_EQ(repacked, 1);
  const auto ref = clipkit::Model::load(data_path(kModel), with_dtype("f32", &warnings));
  expect_same_bits(*m, *ref, "repacked");
}

TEST(CliConvertPacked, BadPackedFilesAreRejectedByName) {
  const std::string dir = clipkit::test::temp_dir();
  const std::string packed = convert("int8", "packed", data_path(kModel), dir + "/bad-src.safetensors");
  auto expect_error = [](const std::string& path, const std::string& needle) {
    try {
      (void)clipkit::load_checkpoint(path);
      ADD_FAILURE() << "no error for " << path;
    } catch (const clipkit::Error& e) {
      EXPECT_EQ(e.code(), clipkit::ErrorCode::Format);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  {  // a newer layout scheme
    const auto file = clipkit::read_safetensors(packed);
    auto meta = file.metadata;
    meta.insert_or_assign(clipkit::kPackedLayoutKey, std::string("2"));
    std::vector<std::pair<std::string, clipkit::Tensor>> tensors(file.tensors.begin(), file.tensors.end());
    clipkit::write_safetensors(dir + "/v2.safetensors", tensors, meta, 64);
    expect_error(dir + "/v2.safetensors", "layout version '2'");
  }
  // a piece that claims more bytes than are stored
  expect_error(with_foreign_layout(packed, "transformer.resblocks.1.attn.out_proj.weight", dir + "/long.safetensors",
                                   [](nlohmann::json& w) { w["pieces"][0]["bytes"] = 1 << 30; }),
               "transformer.resblocks.1.attn.out_proj.weight");
  // a layout whose strides reach past its bytes
  expect_error(with_foreign_layout(packed, "transformer.resblocks.1.attn.out_proj.weight", dir + "/stride.safetensors",
                                   [](nlohmann::json& w) { w["pieces"][0]["strides"][1] = 1 << 20; }),
               "spans");
}

}  // namespace
