// Checkpoint loading: the three fixture layouts of tiny-vit (OpenAI safetensors, TorchScript .pt,
// Hugging Face folder) must give the same OpenAI-named tensors with equal values; torch.save
// archives and sharded HF folders are built here from the fixtures; corrupt inputs must fail with
// an Error that names the problem.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "clipkit/error.h"
#include "core/half.h"
#include "core/mapped_file.h"
#include "io/checkpoint.h"
#include "io/packed_weights.h"
#include "io/safetensors.h"
#include "io/torch_writer.h"
#include "support/test_support.h"

using namespace clipkit;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string vit_st() { return test::data_path("models/tiny-vit.safetensors"); }
std::string vit_pt() { return test::data_path("models/tiny-vit.pt"); }
std::string vit_hf() { return test::data_path("models/tiny-vit-hf"); }
std::string rn_st() { return test::data_path("models/tiny-rn.safetensors"); }

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Asserts that `fn` throws a clipkit::Error whose message contains every fragment.
template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& fragments, ErrorCode code = ErrorCode::Format) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown; expected one mentioning '" << fragments.at(0) << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.code(), code) << msg;
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line message: " << msg;
  }
}

// Same names, shapes and float values (exact).
void expect_same_tensors(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, ta] : a.tensors) {
    ASSERT_TRUE(b.has(name)) << name << " missing from " << b.path;
    const Tensor& tb = b.get(name);
    EXPECT_EQ(ta.shape, tb.shape) << name;
    const auto va = ta.to_f32(), vb = tb.to_f32();
    ASSERT_EQ(va.size(), vb.size()) << name;
    size_t diff = 0;
    for (size_t i = 0; i < va.size(); ++i) diff += std::memcmp(&va[i], &vb[i], 4) != 0;
    EXPECT_EQ(diff, 0u) << name << ": " << diff << " of " << va.size() << " values differ";
  }
}

std::string slurp(const std::string& path) { return read_file(path); }

}  // namespace

TEST(Checkpoint, OpenAISafetensorsVit) {
  Checkpoint ck = load_checkpoint(vit_st());
  EXPECT_EQ(ck.format, "safetensors");
  EXPECT_EQ(ck.tensors.size(), 62u);
  EXPECT_EQ(ck.get("visual.conv1.weight").shape, (Shape{128, 3, 16, 16}));
  EXPECT_EQ(ck.get("visual.transformer.resblocks.1.attn.in_proj_weight").shape, (Shape{384, 128}));
  EXPECT_EQ(ck.get("token_embedding.weight").shape, (Shape{49408, 64}));
  EXPECT_EQ(ck.get("logit_scale").shape, Shape{});
  EXPECT_EQ(ck.weight_dtypes(), "F32");
  // logit_scale = 3.2 rounded to float16 (FIXTURES.md); its exp is the documented 24.5133705.
  const float ls = ck.f32("logit_scale", {})[0];
  EXPECT_EQ(ls, half_to_float(float_to_half(3.2f)));
  EXPECT_NEAR(std::exp(ls), 24.5133705, 1e-5);
  EXPECT_EQ(ck.metadata.at("layout"), "openai-clip");
  EXPECT_TRUE(ck.hf_config.is_null());
  // Zero-copy: every tensor is a view into the one mapping of the file.
  EXPECT_EQ(ck.get("visual.proj").owner, ck.get("ln_final.bias").owner);
}

TEST(Checkpoint, TorchScriptArchiveMatchesSafetensors) {
  Checkpoint st = load_checkpoint(vit_st());
  Checkpoint pt = load_checkpoint(vit_pt());
  EXPECT_EQ(pt.format, "openai-jit");
  expect_same_tensors(st, pt);
  int f16 = 0, f32 = 0;
  for (const auto& [n, t] : pt.tensors) (t.dtype == DType::F16 ? f16 : f32) += t.dtype == DType::F16 || t.dtype == DType::F32;
  EXPECT_EQ(f16, 36);  // FIXTURES.md: 36 tensors are F16, the rest F32
  EXPECT_EQ(f32, 26);
  EXPECT_EQ(pt.get("visual.proj").dtype, DType::F16);
  EXPECT_EQ(pt.get("token_embedding.weight").dtype, DType::F16);
  EXPECT_EQ(pt.get("visual.ln_pre.weight").dtype, DType::F32);
  EXPECT_EQ(pt.weight_dtypes(), "F16+F32");
  // The top-level int buffers of the archive are kept as metadata.
  EXPECT_EQ(pt.metadata.at("input_resolution"), "64");
  EXPECT_EQ(pt.metadata.at("context_length"), "77");
  EXPECT_EQ(pt.metadata.at("vocab_size"), "49408");
  // Stored entries are memory-mapped: both views share the file mapping.
  EXPECT_EQ(pt.get("visual.proj").owner, pt.get("ln_final.bias").owner);
}

TEST(Checkpoint, HuggingFaceFolderMatchesSafetensors) {
  Checkpoint st = load_checkpoint(vit_st());
  Checkpoint hf = load_checkpoint(vit_hf());
  EXPECT_EQ(hf.format, "hf");
  expect_same_tensors(st, hf);  // F16 file == F32 file exactly (values are fp16-representable)
  EXPECT_EQ(hf.weight_dtypes(), "F16");
  EXPECT_EQ(hf.get("visual.proj").shape, (Shape{128, 64}));  // transposed from visual_projection.weight
  EXPECT_EQ(hf.get("transformer.resblocks.0.attn.in_proj_bias").shape, (Shape{192}));
  ASSERT_TRUE(hf.hf_config.is_object());
  EXPECT_EQ(hf.hf_config["text_config"]["hidden_act"], "quick_gelu");
  EXPECT_EQ(hf.hf_config["vision_config"]["patch_size"], 16);
  ASSERT_TRUE(hf.hf_preprocessor.is_object());
  EXPECT_NEAR(hf.hf_preprocessor["image_mean"][0].get<double>(), 0.48145466, 1e-9);
}

TEST(Checkpoint, HuggingFaceSafetensorsFileDirectly) {
  Checkpoint st = load_checkpoint(vit_st());
  Checkpoint hf = load_checkpoint(vit_hf() + "/model.safetensors");
  EXPECT_EQ(hf.format, "hf");
  expect_same_tensors(st, hf);
  EXPECT_EQ(hf.hf_config["projection_dim"], 64);  // config.json found beside the file

  // Without config.json beside it the weights still load; the config is simply unknown.
  const std::string dir = test::temp_dir();
  fs::copy_file(vit_hf() + "/model.safetensors", dir + "/weights.safetensors");
  Checkpoint bare = load_checkpoint(dir + "/weights.safetensors");
  EXPECT_EQ(bare.format, "hf");
  EXPECT_TRUE(bare.hf_config.is_null());
  EXPECT_TRUE(bare.hf_preprocessor.is_null());
  expect_same_tensors(st, bare);
}

TEST(Checkpoint, HuggingFaceMappingIsTheDocumentedOne) {
  // Independent check of the renaming on a few tensors, reading the HF file directly.
  SafetensorsFile raw = read_safetensors(vit_hf() + "/model.safetensors");
  Checkpoint hf = load_checkpoint(vit_hf());
  auto f16 = [&](const std::string& n) { return raw.tensors.at(n).to_f32(); };
  // in_proj_weight rows = [q; k; v]
  const auto q = f16("vision_model.encoder.layers.1.self_attn.q_proj.weight");
  const auto k = f16("vision_model.encoder.layers.1.self_attn.k_proj.weight");
  const auto v = f16("vision_model.encoder.layers.1.self_attn.v_proj.weight");
  const auto in = hf.f32("visual.transformer.resblocks.1.attn.in_proj_weight", {384, 128});
  for (size_t i = 0; i < q.size(); ++i) {
    ASSERT_EQ(in[i], q[i]);
    ASSERT_EQ(in[q.size() + i], k[i]);
    ASSERT_EQ(in[2 * q.size() + i], v[i]);
  }
  // visual.proj [width, embed] = visual_projection.weight [embed, width] transposed
  const auto vp = f16("visual_projection.weight");
  const auto proj = hf.f32("visual.proj", {128, 64});
  for (int r = 0; r < 128; ++r)
    for (int c = 0; c < 64; ++c) ASSERT_EQ(proj[r * 64 + c], vp[c * 128 + r]);
  EXPECT_EQ(hf.f32("visual.ln_pre.weight"), f16("vision_model.pre_layrnorm.weight"));
  EXPECT_EQ(hf.f32("ln_final.bias"), f16("text_model.final_layer_norm.bias"));
  EXPECT_EQ(hf.f32("transformer.resblocks.0.mlp.c_proj.weight"), f16("text_model.encoder.layers.0.mlp.fc2.weight"));
  EXPECT_FALSE(hf.has("text_model.embeddings.position_ids"));
  EXPECT_FALSE(hf.has("position_ids"));
}

TEST(Checkpoint, OpenAISafetensorsResNet) {
  Checkpoint ck = load_checkpoint(rn_st());
  EXPECT_EQ(ck.format, "safetensors");
  // Independent reading of the header: same names, shapes, dtypes and bytes.
  const std::string bytes = slurp(rn_st());
  uint64_t hl;
  std::memcpy(&hl, bytes.data(), 8);
  const json header = json::parse(bytes.substr(8, hl));
  size_t n = 0;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    ++n;
    ASSERT_TRUE(ck.has(it.key())) << it.key();
    const Tensor& t = ck.get(it.key());
    EXPECT_EQ(dtype_name(t.dtype), it.value()["dtype"].get<std::string>());
    EXPECT_EQ(t.shape, it.value()["shape"].get<Shape>());
    const uint64_t b = it.value()["data_offsets"][0], e = it.value()["data_offsets"][1];
    ASSERT_EQ(t.nbytes(), e - b);
    EXPECT_EQ(std::memcmp(t.data, bytes.data() + 8 + hl + b, e - b), 0) << it.key();
  }
  EXPECT_EQ(ck.tensors.size(), n);
  EXPECT_EQ(ck.get("visual.attnpool.positional_embedding").shape, (Shape{5, 256}));
  EXPECT_EQ(ck.get("visual.bn1.num_batches_tracked").dtype, DType::I64);
  EXPECT_EQ(ck.get("visual.bn1.num_batches_tracked").to_f32()[0], 1.0f);
  EXPECT_NEAR(std::exp(ck.f32("logit_scale", {})[0]), 18.1812458, 1e-5);
  EXPECT_EQ(ck.weight_dtypes(), "F32");
}

TEST(Checkpoint, GetAndShapeErrorsNameTheTensor) {
  Checkpoint ck = load_checkpoint(vit_st());
  expect_error([&] { ck.get("visual.nope"); }, {"visual.nope", "tiny-vit.safetensors"}, ErrorCode::NotFound);
  expect_error([&] { ck.f32("visual.proj", {64, 128}); }, {"visual.proj", "[128, 64]", "[64, 128]"}, ErrorCode::Shape);
}

TEST(Checkpoint, SpansAndSharedViewsHoldTheTensorsValues) {
  std::vector<float> expected;
  Checkpoint::SharedF32 shared;
  {
    Checkpoint ck = load_checkpoint(vit_st());
    EXPECT_EQ(ck.weight_dtypes(), "F32");
    expected = ck.f32("visual.proj", {128, 64});
    ASSERT_EQ(expected.size(), 128u * 64u);
    const Checkpoint::F32Span span = ck.f32_span("visual.proj", {128, 64});
    ASSERT_NE(span.data, nullptr);
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), span.data));
    shared = ck.f32_shared("visual.proj", {128, 64});
    EXPECT_EQ(shared.size, 128 * 64);
    ASSERT_NE(shared.owner, nullptr);
    ck.release_pages("visual.proj");  // the pages are read back from the file when used
    ck.release_pages("visual.nope");  // nothing to release
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), span.data));
    expect_error([&] { ck.f32_span("visual.proj", {64, 128}); }, {"visual.proj", "[128, 64]", "[64, 128]"}, ErrorCode::Shape);
    expect_error([&] { ck.f32_shared("visual.proj", {128}); }, {"visual.proj", "[128, 64]", "[128]"}, ErrorCode::Shape);
    expect_error([&] { ck.f32_shared("visual.nope", {1}); }, {"visual.nope"}, ErrorCode::NotFound);
  }
  // the shared view outlives the checkpoint
  EXPECT_TRUE(std::equal(expected.begin(), expected.end(), shared.data));
}

// A lookup table stays in the file whether it is stored F32 or F16; its rows read as the values of
// a converted copy, also after the checkpoint is gone.
TEST(Checkpoint, SharedTablesReadRowsInPlaceForF32AndF16) {
  const Shape shape{49408, 64};
  std::vector<float> expected;
  Checkpoint::SharedTable f32_table, f16_table;
  {
    Checkpoint f32_ck = load_checkpoint(vit_st());
    Checkpoint f16_ck = load_checkpoint(vit_hf());
    ASSERT_EQ(f16_ck.get("token_embedding.weight").dtype, DType::F16);
    expected = f16_ck.f32("token_embedding.weight", shape);
    EXPECT_EQ(f32_ck.f32("token_embedding.weight", shape), expected);  // the fixtures hold the same values
    f32_table = f32_ck.table_shared("token_embedding.weight", shape);
    f16_table = f16_ck.table_shared("token_embedding.weight", shape);
    EXPECT_EQ(f32_table.f32, static_cast<const float*>(f32_ck.get("token_embedding.weight").data));
    EXPECT_EQ(f16_table.f16, static_cast<const uint16_t*>(f16_ck.get("token_embedding.weight").data));
    EXPECT_EQ(f16_table.f32, nullptr);
    EXPECT_EQ(f32_table.bytes(), 49408 * 64 * 4);
    EXPECT_EQ(f16_table.bytes(), 49408 * 64 * 2);
    expect_error([&] { f16_ck.table_shared("token_embedding.weight", {64}); }, {"token_embedding.weight", "[64]"},
                 ErrorCode::Shape);
    expect_error([&] { f16_ck.table_shared("nope", {1}); }, {"nope"}, ErrorCode::NotFound);
  }
  std::vector<float> scratch(64);
  for (int64_t r : {int64_t{0}, int64_t{320}, int64_t{49407}}) {
    const float* want = expected.data() + r * 64;
    EXPECT_TRUE(std::equal(want, want + 64, f32_table.row(r, 64, scratch.data()))) << r;
    EXPECT_TRUE(std::equal(want, want + 64, f16_table.row(r, 64, scratch.data()))) << r;
  }
}

// ---- torch.save archives, written here from the safetensors fixture --------------------------

namespace {

struct ArchiveOptions {
  bool zip64 = false;
  bool wrap = true;       // open_clip style {"epoch":..., "state_dict": {...}} with "module." names
  bool deflate = false;   // deflate data.pkl and the small storages
};

// A torch.save(state_dict) zip written from the tensors of `src`, exercising shared storages
// with offsets, a non-contiguous (transposed) view, F16 storages and scalar tensors.
std::string torch_save_archive(const Checkpoint& src, const ArchiveOptions& o) {
  iotest::Pickler p;
  std::vector<iotest::ZipEntryIn> storages;
  int key = 0;
  auto add_storage = [&](const std::string& bytes) {
    const std::string k = std::to_string(key++);
    storages.push_back({"archive/data/" + k, bytes, o.deflate && bytes.size() < 65536 && key % 2 == 0});
    return k;
  };
  auto raw = [](const Tensor& t) { return std::string(static_cast<const char*>(t.data), t.nbytes()); };
  if (o.wrap) {
    p.op('}');
    p.op('(');
    p.str("epoch");
    p.integer(32);
    p.str("name");
    p.str("run-1");
    p.str("state_dict");
  }
  p.ordered_dict();
  const std::string pre = o.wrap ? "module." : "";
  for (const auto& [name, t] : src.tensors) {
    if (name == "visual.ln_pre.bias") continue;  // shares a storage with the weight below
    std::vector<int64_t> stride(t.shape.size(), 1);
    for (size_t d = t.shape.size(); d-- > 1;) stride[d - 1] = stride[d] * t.shape[d];
    p.str(pre + name);
    if (name == "visual.ln_pre.weight") {
      const Tensor& bias = src.get("visual.ln_pre.bias");
      const std::string k = add_storage(raw(bias) + raw(t));  // [bias | weight]
      p.tensor("FloatStorage", k, 256, 128, t.shape, stride);
      p.op('s');
      p.str(pre + "visual.ln_pre.bias");
      p.tensor("FloatStorage", k, 256, 0, bias.shape, stride);
    } else if (name == "visual.proj") {
      // stored as its transpose: a [128, 64] view with strides (1, 128)
      const auto v = t.to_f32();
      std::vector<float> tr(v.size());
      for (int r = 0; r < 128; ++r)
        for (int c = 0; c < 64; ++c) tr[c * 128 + r] = v[r * 64 + c];
      const std::string k = add_storage(std::string(reinterpret_cast<const char*>(tr.data()), tr.size() * 4));
      p.tensor("FloatStorage", k, t.numel(), 0, t.shape, {1, 128});
    } else if (name == "transformer.resblocks.0.mlp.c_fc.weight") {
      const auto v = t.to_f32();
      std::vector<uint16_t> h(v.size());
      for (size_t i = 0; i < v.size(); ++i) h[i] = float_to_half(v[i]);
      const std::string k = add_storage(std::string(reinterpret_cast<const char*>(h.data()), h.size() * 2));
      p.tensor("HalfStorage", k, t.numel(), 0, t.shape, stride);
    } else {
      const std::string k = add_storage(raw(t));
      p.tensor("FloatStorage", k, t.numel(), 0, t.shape, stride);
    }
    p.op('s');  // SETITEM
  }
  p.op('(');
  p.op('u');  // an empty SETITEMS
  if (o.wrap) p.op('u');
  p.op('.');
  std::vector<iotest::ZipEntryIn> entries{{"archive/data.pkl", p.b, o.deflate}};
  entries.push_back({"archive/byteorder", "little"});
  for (auto& s : storages) entries.push_back(std::move(s));
  entries.push_back({"archive/version", "3\n"});
  return iotest::write_zip(entries, o.zip64);
}

// A minimal archive whose data.pkl is `pickle` and which holds one 4-float storage "0".
std::string archive_with_pickle(const std::string& pickle, const std::string& storage = std::string(16, '\0')) {
  return iotest::write_zip({{"archive/data.pkl", pickle}, {"archive/data/0", storage}, {"archive/version", "3\n"}});
}

std::string one_tensor_pickle(int64_t offset, std::vector<int64_t> size, std::vector<int64_t> stride,
                              const std::string& type = "FloatStorage", int64_t numel = 4) {
  iotest::Pickler p;
  p.ordered_dict();
  p.op('(');
  p.str("w");
  p.tensor(type, "0", numel, offset, size, stride);
  p.op('u');
  p.op('.');
  return p.b;
}

}  // namespace

TEST(Checkpoint, TorchSaveStateDictArchives) {
  Checkpoint st = load_checkpoint(vit_st());
  const std::string dir = test::temp_dir();
  int i = 0;
  for (ArchiveOptions o : {ArchiveOptions{false, true, false}, ArchiveOptions{true, false, true}}) {
    SCOPED_TRACE(i);
    const std::string path = dir + "/open_clip_" + std::to_string(i++) + ".bin";
    write_bytes(path, torch_save_archive(st, o));
    Checkpoint ck = load_checkpoint(path);
    EXPECT_EQ(ck.format, "torch-state-dict");
    expect_same_tensors(st, ck);  // "module." and the state_dict wrapper are removed
    EXPECT_EQ(ck.get("transformer.resblocks.0.mlp.c_fc.weight").dtype, DType::F16);
    EXPECT_EQ(ck.get("visual.proj").dtype, DType::F32);
  }
}

TEST(Checkpoint, ArchivesWrittenByPythonZipfile) {
  // An independent zip writer (see tests/data/io/README.md): unaligned stored data, deflate.
  for (const char* f : {"io/python_zipfile_stored.zip", "io/python_zipfile_deflated.zip"}) {
    SCOPED_TRACE(f);
    Checkpoint ck = load_checkpoint(test::data_path(f));
    EXPECT_EQ(ck.format, "torch-state-dict");
    ASSERT_EQ(ck.tensors.size(), 2u);
    EXPECT_EQ(ck.f32("w", {2, 2}), (std::vector<float>{0, 2, 1, 3}));
    EXPECT_EQ(ck.f32("b", {3}), (std::vector<float>{4, 5, 6}));
  }
}

TEST(Checkpoint, ShardedHuggingFaceFolder) {
  const std::string dir = test::temp_dir();
  SafetensorsFile src = read_safetensors(vit_hf() + "/model.safetensors");
  std::vector<std::pair<std::string, Tensor>> a, b;
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const auto& name : src.order) {
    const bool first = name.rfind("text_model.", 0) == 0;
    (first ? a : b).emplace_back(name, src.tensors.at(name));
    index["weight_map"][name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  write_safetensors(dir + "/model-00001-of-00002.safetensors", a);
  write_safetensors(dir + "/model-00002-of-00002.safetensors", b);
  write_bytes(dir + "/model.safetensors.index.json", index.dump(2));
  fs::copy_file(vit_hf() + "/config.json", dir + "/config.json");

  Checkpoint whole = load_checkpoint(vit_hf());
  Checkpoint sharded = load_checkpoint(dir);
  EXPECT_EQ(sharded.format, "hf");
  expect_same_tensors(whole, sharded);
  EXPECT_EQ(sharded.hf_config["text_config"]["hidden_act"], "quick_gelu");
  // The index file itself is accepted as the checkpoint path too.
  expect_same_tensors(whole, load_checkpoint(dir + "/model.safetensors.index.json"));

  // A tensor the index places in a shard that lacks it.
  index["weight_map"]["text_model.extra"] = "model-00001-of-00002.safetensors";
  write_bytes(dir + "/model.safetensors.index.json", index.dump());
  expect_error([&] { load_checkpoint(dir); }, {"text_model.extra", "model-00001-of-00002.safetensors"});
  // A shard name that escapes the folder.
  index["weight_map"].erase("text_model.extra");
  index["weight_map"]["logit_scale"] = "../x.safetensors";
  write_bytes(dir + "/model.safetensors.index.json", index.dump());
  expect_error([&] { load_checkpoint(dir); }, {"../x.safetensors", "not a plain file name"});
  // A missing shard.
  index["weight_map"]["logit_scale"] = "model-00003-of-00002.safetensors";
  write_bytes(dir + "/model.safetensors.index.json", index.dump());
  expect_error([&] { load_checkpoint(dir); }, {"model-00003-of-00002.safetensors"}, ErrorCode::NotFound);
  // JSON garbage as the index.
  write_bytes(dir + "/model.safetensors.index.json", "{\"weight_map\": {\"a\": ");
  expect_error([&] { load_checkpoint(dir); }, {"invalid JSON", "model.safetensors.index.json"});
}

// ---- corrupt inputs ---------------------------------------------------------------------------

TEST(CheckpointErrors, TruncatedZip) {
  const std::string dir = test::temp_dir();
  const std::string pt = slurp(vit_pt());
  for (size_t keep : {pt.size() / 2, pt.size() - 30, size_t{100}, size_t{4}}) {
    const std::string path = dir + "/cut.pt";
    write_bytes(path, pt.substr(0, keep));
    expect_error([&] { load_checkpoint(path); }, {"cut.pt"});
  }
  write_bytes(dir + "/cut.pt", pt.substr(0, pt.size() / 2));
  expect_error([&] { load_checkpoint(dir + "/cut.pt"); }, {"end-of-central-directory", "truncated"});
}

TEST(CheckpointErrors, BadCentralDirectory) {
  const std::string dir = test::temp_dir();
  const std::string pt = slurp(vit_pt());
  // The end record is the last 22 bytes (no comment); it gives the directory's offset.
  uint32_t cd_off;
  std::memcpy(&cd_off, pt.data() + pt.size() - 22 + 16, 4);
  std::string bad = pt;
  bad[cd_off] = 'X';  // break the first directory entry's signature
  write_bytes(dir + "/a.pt", bad);
  expect_error([&] { load_checkpoint(dir + "/a.pt"); }, {"a.pt", "central directory entry 0"});
  bad = pt;
  const uint32_t past = static_cast<uint32_t>(pt.size());
  std::memcpy(bad.data() + bad.size() - 22 + 16, &past, 4);  // directory offset past the end
  write_bytes(dir + "/b.pt", bad);
  expect_error([&] { load_checkpoint(dir + "/b.pt"); }, {"b.pt", "central directory", "outside the file"});
  bad = pt;
  const uint32_t far = 0x7fffffff;
  std::memcpy(bad.data() + cd_off + 42, &far, 4);  // first entry's local header offset out of range
  write_bytes(dir + "/c.pt", bad);
  expect_error([&] { load_checkpoint(dir + "/c.pt"); }, {"c.pt", "local header"});
}

TEST(CheckpointErrors, BadPickle) {
  const std::string dir = test::temp_dir();
  const std::string path = dir + "/x.bin";
  // an opcode outside the supported subset (0xff)
  write_bytes(path, archive_with_pickle(std::string("\x80\x02}\xff.", 5)));
  expect_error([&] { load_checkpoint(path); }, {"x.bin", "unsupported opcode", "0xff", "byte 3"});
  // a global that is not on the whitelist: never resolved, never called
  write_bytes(path, archive_with_pickle("\x80\x02" "cos\nsystem\n(X\x02\x00\x00\x00lstR."));
  expect_error([&] { load_checkpoint(path); }, {"disallowed global 'os.system'"});
  write_bytes(path, archive_with_pickle("\x80\x02" "cbuiltins\neval\n."));
  expect_error([&] { load_checkpoint(path); }, {"disallowed global 'builtins.eval'"});
  // TorchScript classes are only acceptable inside TorchScript archives
  write_bytes(path, archive_with_pickle("\x80\x02" "c__torch__.clip.model\nCLIP\n)\x81."));
  expect_error([&] { load_checkpoint(path); }, {"disallowed global '__torch__.clip.model.CLIP'"});
  // truncated program (no STOP)
  write_bytes(path, archive_with_pickle(one_tensor_pickle(0, {4}, {1}).substr(0, 40)));
  expect_error([&] { load_checkpoint(path); }, {"x.bin"});
  // stack underflow, bad memo reference, unsupported protocol
  write_bytes(path, archive_with_pickle("\x80\x02R."));
  expect_error([&] { load_checkpoint(path); }, {"empty stack"});
  write_bytes(path, archive_with_pickle("\x80\x02h\x05."));
  expect_error([&] { load_checkpoint(path); }, {"memo entry 5"});
  write_bytes(path, archive_with_pickle("\x80\x09."));
  expect_error([&] { load_checkpoint(path); }, {"protocol 9"});
  // a pickle whose root is not a state dict
  write_bytes(path, archive_with_pickle("\x80\x02K\x05."));
  expect_error([&] { load_checkpoint(path); }, {"expected a state dict"});
}

TEST(CheckpointErrors, BadTensorRecords) {
  const std::string dir = test::temp_dir();
  const std::string path = dir + "/t.pt";
  // the valid baseline loads: 4 floats, one read as a transposed 2x2 view
  std::string four(16, '\0');
  const float vals[4] = {1, 2, 3, 4};
  std::memcpy(four.data(), vals, 16);
  write_bytes(path, archive_with_pickle(one_tensor_pickle(0, {2, 2}, {1, 2}), four));
  Checkpoint ck = load_checkpoint(path);
  EXPECT_EQ(ck.f32("w", {2, 2}), (std::vector<float>{1, 3, 2, 4}));
  write_bytes(path, archive_with_pickle(one_tensor_pickle(1, {3}, {1}), four));
  EXPECT_EQ(load_checkpoint(path).f32("w", {3}), (std::vector<float>{2, 3, 4}));
  // views reaching past the storage
  write_bytes(path, archive_with_pickle(one_tensor_pickle(2, {3}, {1}), four));
  expect_error([&] { load_checkpoint(path); }, {"tensor 'w'", "element 4", "4 elements"});
  write_bytes(path, archive_with_pickle(one_tensor_pickle(0, {2, 2}, {4, 1}), four));
  expect_error([&] { load_checkpoint(path); }, {"tensor 'w'"});
  write_bytes(path, archive_with_pickle(one_tensor_pickle(0, {int64_t{1} << 62, 4}, {1, 1}), four));
  expect_error([&] { load_checkpoint(path); }, {"tensor 'w'"});
  // the record claims more elements than the entry holds (truncated storage)
  write_bytes(path, archive_with_pickle(one_tensor_pickle(0, {4}, {1}, "FloatStorage", 8), four));
  expect_error([&] { load_checkpoint(path); }, {"tensor 'w'", "16 bytes"});
  // unknown storage type, missing storage entry
  write_bytes(path, archive_with_pickle(one_tensor_pickle(0, {4}, {1}, "ComplexFloatStorage"), four));
  expect_error([&] { load_checkpoint(path); }, {"ComplexFloatStorage"});
  write_bytes(path, iotest::write_zip({{"archive/data.pkl", one_tensor_pickle(0, {4}, {1})}}));
  expect_error([&] { load_checkpoint(path); }, {"tensor 'w'", "archive/data/0"});
  // a zip that is not a PyTorch archive
  write_bytes(path, iotest::write_zip({{"hello.txt", "hi"}}));
  expect_error([&] { load_checkpoint(path); }, {"data.pkl", "not a PyTorch archive"});
}

TEST(CheckpointErrors, Safetensors) {
  const std::string dir = test::temp_dir();
  Checkpoint st = load_checkpoint(vit_st());
  const std::string small = dir + "/small.safetensors";
  write_safetensors(small, {{"ln_final.weight", st.get("ln_final.weight")}, {"ln_final.bias", st.get("ln_final.bias")}});
  const std::string good = slurp(small);
  uint64_t hl;
  std::memcpy(&hl, good.data(), 8);
  json header = json::parse(good.substr(8, hl));
  auto with_header = [&](const json& h) {
    std::string s = h.dump();
    std::string out(8, '\0');
    const uint64_t n = s.size();
    std::memcpy(out.data(), &n, 8);
    return out + s + good.substr(8 + hl);
  };
  const std::string path = dir + "/bad.safetensors";
  // offsets beyond the data section
  json h = header;
  h["ln_final.bias"]["data_offsets"] = {256, 1000};
  write_bytes(path, with_header(h));
  expect_error([&] { load_checkpoint(path); }, {"bad.safetensors", "ln_final.bias", "data_offsets", "512-byte"});
  // offsets whose span does not match shape x dtype
  h = header;
  h["ln_final.bias"]["data_offsets"] = {256, 300};
  write_bytes(path, with_header(h));
  expect_error([&] { load_checkpoint(path); }, {"ln_final.bias", "44 bytes", "256"});
  // two tensors claiming the same bytes
  h = header;
  h["ln_final.bias"]["data_offsets"] = h["ln_final.weight"]["data_offsets"];
  write_bytes(path, with_header(h));
  expect_error([&] { load_checkpoint(path); }, {"inside tensor"});
  // absurd shape
  h = header;
  h["ln_final.bias"]["shape"] = {int64_t{1} << 40, int64_t{1} << 40};
  write_bytes(path, with_header(h));
  expect_error([&] { load_checkpoint(path); }, {"ln_final.bias", "too large"});
  // unknown dtype
  h = header;
  h["ln_final.bias"]["dtype"] = "C64";
  write_bytes(path, with_header(h));
  expect_error([&] { load_checkpoint(path); }, {"ln_final.bias", "C64"});
  // truncated files
  write_bytes(path, good.substr(0, good.size() - 10));
  expect_error([&] { load_checkpoint(path); }, {"bad.safetensors", "truncated"});
  write_bytes(path, good.substr(0, 20));
  expect_error([&] { load_checkpoint(path); }, {"bad.safetensors", "truncated"});
  const std::string big = slurp(vit_st());
  write_bytes(path, big.substr(0, big.size() / 3));
  expect_error([&] { load_checkpoint(path); }, {"bad.safetensors", "truncated"});
  // JSON garbage in the header
  std::string garbage(8, '\0');
  const std::string text = "{\"a\": [1, 2,, ]} ";
  const uint64_t gl = text.size();
  std::memcpy(garbage.data(), &gl, 8);
  write_bytes(path, garbage + text);
  expect_error([&] { load_checkpoint(path); }, {"bad.safetensors", "not valid JSON"});
}

TEST(CheckpointErrors, HuggingFaceFolders) {
  const std::string dir = test::temp_dir();
  // garbage config.json
  fs::copy_file(vit_hf() + "/model.safetensors", dir + "/model.safetensors");
  write_bytes(dir + "/config.json", "{\"text_config\": nope}");
  expect_error([&] { load_checkpoint(dir); }, {"invalid JSON", "config.json"});
  // an empty folder
  const std::string empty = test::temp_dir();
  expect_error([&] { load_checkpoint(empty); }, {"model.safetensors"}, ErrorCode::NotFound);
  // a missing q/k/v part
  SafetensorsFile src = read_safetensors(vit_hf() + "/model.safetensors");
  std::vector<std::pair<std::string, Tensor>> keep;
  for (const auto& n : src.order)
    if (n != "text_model.encoder.layers.1.self_attn.k_proj.bias") keep.emplace_back(n, src.tensors.at(n));
  write_safetensors(dir + "/model.safetensors", keep);
  fs::remove(dir + "/config.json");
  expect_error([&] { load_checkpoint(dir); }, {"text_model.encoder.layers.1.self_attn.k_proj.bias", "missing"});
  // an unknown HF tensor name
  keep.emplace_back("vision_model.encoder.layers.0.adapter.weight", src.tensors.at("logit_scale"));
  write_safetensors(dir + "/model.safetensors", keep);
  expect_error([&] { load_checkpoint(dir); }, {"vision_model.encoder.layers.0.adapter.weight"});
}

TEST(CheckpointErrors, UnrecognisedFiles) {
  const std::string dir = test::temp_dir();
  expect_error([&] { load_checkpoint(dir + "/nothing.pt"); }, {"nothing.pt", "does not exist"}, ErrorCode::NotFound);
  write_bytes(dir + "/empty.pt", "");
  expect_error([&] { load_checkpoint(dir + "/empty.pt"); }, {"empty.pt", "empty"});
  write_bytes(dir + "/text.pt", "hello world, not a model");
  expect_error([&] { load_checkpoint(dir + "/text.pt"); }, {"text.pt", "unrecognised"});
  write_bytes(dir + "/legacy.pt", std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15));
  expect_error([&] { load_checkpoint(dir + "/legacy.pt"); }, {"legacy.pt", "legacy PyTorch"});
  write_bytes(dir + "/cfg.json", "{\"a\": 1}");
  expect_error([&] { load_checkpoint(dir + "/cfg.json"); }, {"cfg.json", "weight_map"});
}

// Random corruptions of small archives must end in clipkit::Error (or a successful load), never
// in a crash or another exception type (the sanitizer build checks for memory errors too).
TEST(CheckpointErrors, RandomCorruptionsFailCleanly) {
  const std::string dir = test::temp_dir();
  Checkpoint st = load_checkpoint(vit_st());
  Checkpoint small;
  for (const char* n : {"ln_final.weight", "ln_final.bias", "logit_scale", "visual.proj", "visual.ln_pre.weight",
                        "visual.ln_pre.bias", "transformer.resblocks.0.mlp.c_fc.weight"})
    small.tensors[n] = st.get(n);
  std::vector<std::string> seeds = {torch_save_archive(small, {false, true, false}),
                                    torch_save_archive(small, {true, false, true})};
  write_safetensors(dir + "/s.safetensors", {{"ln_final.weight", st.get("ln_final.weight")}, {"logit_scale", st.get("logit_scale")}});
  seeds.push_back(slurp(dir + "/s.safetensors"));
  std::mt19937 rng(1234);
  const std::string path = dir + "/m.bin";
  int loaded = 0, errors = 0;
  for (const auto& seed : seeds) {
    for (int it = 0; it < 150; ++it) {
      std::string m = seed;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) m[rng() % m.size()] = static_cast<char>(rng());
      if (rng() % 5 == 0) m.resize(rng() % m.size());
      write_bytes(path, m);
      try {
        Checkpoint ck = load_checkpoint(path);
        for (const auto& [n, t] : ck.tensors) (void)t.to_f32();
        ++loaded;
      } catch (const Error&) {
        ++errors;
      }
    }
  }
  EXPECT_EQ(loaded + errors, 450);
  EXPECT_GT(errors, 0);
}

namespace {

using nlohmann::json;

// A row-major [2, 16] weight "W" described as a packed weight of one piece (clipkit convert's
// scheme, io/packed_weights.h), with its values.
struct PackedCase {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> meta;
  json desc;
  std::vector<float> values;

  PackedCase() {
    for (int i = 0; i < 32; ++i) values.push_back(0.25f * static_cast<float>(i) - 3.0f);
    std::vector<uint8_t> bytes(values.size() * 4);
    std::memcpy(bytes.data(), values.data(), bytes.size());
    tensors["W.packed"] = Tensor::from_bytes(DType::U8, {128}, std::move(bytes));
    desc = {{"W",
             {{"dtype", "F32"},
              {"shape", {2, 16}},
              {"pieces", json::array({{{"row0", 0},
                                       {"rows", 2},
                                       {"offset", 0},
                                       {"bytes", 128},
                                       {"dims", {16, 2}},
                                       {"padded", {16, 2}},
                                       {"strides", {1, 16}},
                                       {"blocks", json::array()}}})}}}};
    meta[kPackedLayoutKey] = kPackedLayoutVersion;
  }

  // attach_packed_weights' error message ("" when it attached).
  std::string error() {
    if (!desc.is_null()) meta[kPackedWeightsKey] = desc.dump();
    try {
      attach_packed_weights(tensors, meta, "p.safetensors");
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Format) << e.what();
      return e.what();
    }
    return "";
  }
};

}  // namespace

TEST(PackedWeights, DescriptionsThatDoNotFitAreFormatErrorsNamingTheWeight) {
  {
    PackedCase c;
    ASSERT_EQ(c.error(), "");
    const Tensor& w = c.tensors.at("W");
    ASSERT_TRUE(w.packed);
    EXPECT_EQ(w.shape, (Shape{2, 16}));
    EXPECT_EQ(w.to_f32(), c.values);
    EXPECT_EQ(w.value_f32(17), c.values[17]);
    EXPECT_EQ(c.tensors.count("W.packed"), 0u);
  }
  struct Case {
    std::function<void(PackedCase&)> change;
    std::string message;  // after "checkpoint 'p.safetensors'"
  };
  const std::string w = ": packed weight 'W' ";
  auto piece = [](PackedCase& c) -> json& { return c.desc["W"]["pieces"][0]; };
  const std::vector<Case> cases = {
      {[](PackedCase& c) { c.desc = json(); }, " has clipkit.packed_layout but no clipkit.packed_weights"},
      {[](PackedCase& c) {
         c.desc = json();
         c.meta[kPackedWeightsKey] = "{\"W\": ";
       },
       ": invalid JSON in metadata clipkit.packed_weights: "},
      {[](PackedCase& c) { c.desc = json::array(); }, ": metadata clipkit.packed_weights is not an object"},
      {[](PackedCase& c) { c.tensors["W"] = Tensor::from_f32(c.values, {2, 16}); }, w + "is also stored unpacked"},
      {[](PackedCase& c) { c.desc["W"]["dtype"] = "BF16"; }, w + "has dtype 'BF16' (expected F32, F16 or I8)"},
      {[](PackedCase& c) { c.desc["W"]["shape"] = {32}; }, w + "has no shape of 2 to 8 axes"},
      {[](PackedCase& c) { c.desc["W"]["shape"] = {2, 0}; }, w + "has an invalid shape"},
      {[](PackedCase& c) { c.desc["W"]["pieces"] = json::array(); }, w + "has no list of pieces"},
      {[&](PackedCase& c) { piece(c)["row0"] = 1; }, w + "has pieces that do not cover its 2 rows in order"},
      {[&](PackedCase& c) { piece(c)["strides"] = "1x16"; }, w + "field \"strides\" is not a pair of integers"},
      {[&](PackedCase& c) { piece(c)["blocks"] = {{0}}; }, w + "has a block that is not a pair of integers"},
      {[&](PackedCase& c) { piece(c)["dims"] = {8, 2}; }, w + "has a piece of 8x2, expected 16x2"},
      {[](PackedCase& c) {
         c.desc["W"]["dtype"] = "I8";
         c.desc["W"]["pieces"][0]["bytes"] = 32;
         c.tensors["W.int8_zero_shift"] = Tensor::from_f32({0.0f, 0.0f, 0.0f}, {3});
       },
       w + "has a zero shift that is not F32 [2]"},
      {[](PackedCase& c) { c.tensors["V.packed"] = c.tensors.at("W.packed"); },
       ": tensor 'V.packed' is not described in clipkit.packed_weights"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.message);
    PackedCase c;
    k.change(c);
    EXPECT_EQ(c.error().rfind("checkpoint 'p.safetensors'" + k.message, 0), 0u) << c.error();
  }
}
