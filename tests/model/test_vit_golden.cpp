// The ViT model (image tower, text tower, logits) against the reference goldens of tiny-vit,
// loaded from each stored format: OpenAI-layout safetensors (F32), TorchScript archive (F16/F32)
// and Hugging Face folder (F16).
#include <gtest/gtest.h>
#include <omp.h>

#include <map>

#include <cmath>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/mapped_file.h"
#include "kernels/gemm.h"

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "model/model_test_util.h"

using namespace clipkit;
using namespace clipkit::modeltest;

namespace {

const char* const kModel = "tiny-vit";

std::shared_ptr<Model> load(const std::string& relative) {
  static std::map<std::string, std::shared_ptr<Model>> cache;
  auto it = cache.find(relative);
  if (it == cache.end()) it = cache.emplace(relative, Model::load(test::data_path(relative))).first;
  return it->second;
}

class TinyVit : public ::testing::TestWithParam<const char*> {
 protected:
  std::shared_ptr<Model> model() { return load(GetParam()); }
};

TEST_P(TinyVit, ArchitectureMatchesTheReferenceConfig) {
  const Architecture& a = model()->info().arch;
  // Values from FIXTURES.md (the config the goldens were built with).
  EXPECT_EQ(a.kind, "vit");
  EXPECT_EQ(a.embed_dim, 64);
  EXPECT_EQ(a.image_resolution, 64);
  EXPECT_EQ(a.vision_layers, 2);
  EXPECT_EQ(a.vision_width, 128);
  EXPECT_EQ(a.vision_patch_size, 16);
  EXPECT_EQ(a.vision_heads, 2);
  EXPECT_EQ(a.context_length, 77);
  EXPECT_EQ(a.vocab_size, 49408);
  EXPECT_EQ(a.text_width, 64);
  EXPECT_EQ(a.text_layers, 2);
  EXPECT_EQ(a.text_heads, 1);
  EXPECT_EQ(a.activation, "quick_gelu");
  EXPECT_NEAR(model()->logit_scale(), 24.5133705, 1e-5);
  EXPECT_EQ(model()->preprocess_config().resolution, 64);
}

TEST_P(TinyVit, ImageEmbeddingsMatchGolden) {
  const Tensor& px = golden_tensor(kModel, "pixel_values");
  const auto pixels = px.to_f32();
  Embeddings e = model()->encode_images(pixels.data(), px.shape[0]);
  ASSERT_EQ(e.rows, 12);
  ASSERT_EQ(e.dim, 64);
  expect_matches(e.data, golden_f32(kModel, "image_embeds"), 12, "image_embeds");
  Embeddings n = model()->encode_images(pixels.data(), px.shape[0], /*normalize=*/true);
  expect_matches(n.data, golden_f32(kModel, "image_embeds_normalized"), 12, "image_embeds_normalized");
}

TEST_P(TinyVit, TextEmbeddingsMatchGolden) {
  Embeddings e = model()->encode_tokens(golden_ids(kModel));
  ASSERT_EQ(e.rows, 40);
  expect_matches(e.data, golden_f32(kModel, "text_embeds"), 40, "text_embeds");
  Embeddings n = model()->encode_tokens(golden_ids(kModel), /*normalize=*/true);
  expect_matches(n.data, golden_f32(kModel, "text_embeds_normalized"), 40, "text_embeds_normalized");
}

TEST_P(TinyVit, EveryDebugTensorMatchesGolden) {
  const Tensor& px = golden_tensor(kModel, "pixel_values");
  const auto pixels = px.to_f32();
  DebugTrace trace;
  model()->encode_images(pixels.data(), 3, false, &trace);
  model()->encode_tokens(golden_ids(kModel), false, &trace);
  int checked = 0;
  for (const auto& [name, t] : golden(kModel).tensors) {
    if (name.rfind("debug.", 0) != 0) continue;
    const std::string key = name.substr(6);
    ASSERT_TRUE(trace.count(key)) << "trace lacks " << key;
    const std::vector<float> want = t.to_f32();
    ASSERT_EQ(trace[key].size(), want.size()) << key;
    expect_matches(trace[key], want, 1, key);
    ++checked;
  }
  EXPECT_EQ(checked, 13);  // 6 image, 5 text, 2 final embeddings
}

TEST_P(TinyVit, LogitsMatchGolden) {
  const Tensor& px = golden_tensor(kModel, "pixel_values");
  const auto pixels = px.to_f32();
  Embeddings img = model()->encode_images(pixels.data(), 12, true);
  Embeddings txt = model()->encode_tokens(golden_ids(kModel), true);
  std::vector<float> logits(12 * 40);
  for (int i = 0; i < 12; ++i)
    for (int t = 0; t < 40; ++t) {
      double dot = 0;
      for (int k = 0; k < 64; ++k) dot += static_cast<double>(img.row(i)[k]) * txt.row(t)[k];
      logits[static_cast<size_t>(i * 40 + t)] = static_cast<float>(model()->logit_scale() * dot);
    }
  expect_matches(logits, golden_f32(kModel, "logits_per_image"), 12, "logits_per_image");
}

TEST(TinyVitBehaviour, BatchSizeDoesNotChangeResults) {
  auto model = [] { return load("models/tiny-vit.safetensors"); };
  const Tensor& px = golden_tensor(kModel, "pixel_values");
  const auto pixels = px.to_f32();
  Embeddings all = model()->encode_images(pixels.data(), 12);
  const auto want = golden_f32(kModel, "image_embeds");
  for (int i : {0, 7, 11}) {
    Embeddings one = model()->encode_images(pixels.data() + i * 3 * 64 * 64, 1);
    expect_matches(one.data.data(), std::vector<float>(want.begin() + i * 64, want.begin() + (i + 1) * 64), 1,
                   "image " + std::to_string(i) + " alone");
    EXPECT_LE(test::max_abs_diff(one.data.data(), all.row(i), 64), 1e-5);
  }
  const auto ids = golden_ids(kModel);
  Embeddings texts = model()->encode_tokens(ids);
  for (int t : {0, 5, 39}) {
    Embeddings one = model()->encode_tokens({ids[static_cast<size_t>(t)]});
    EXPECT_LE(test::max_abs_diff(one.data.data(), texts.row(t), 64), 1e-5) << "text " << t;
  }
}

TEST(TinyVitBehaviour, ClassTokenOnlyLastBlockEqualsTheFullRun) {
  // Without a trace the last block runs attention and the MLP for the class token alone; with a
  // trace every token goes through every block. Both must give the same embeddings in every dtype.
  const Tensor& px = golden_tensor(kModel, "pixel_values");
  const auto pixels = px.to_f32();
  for (const char* dtype : {"f32", "f16", "int8"}) {
    ModelOptions options;
    options.dtype = dtype;
    const auto m = Model::load(test::data_path("models/tiny-vit.safetensors"), options);
    const Embeddings rows = m->encode_images(pixels.data(), 12);
    for (int i : {0, 5, 11}) {  // the traced path runs one image at a time here
      DebugTrace trace;
      const Embeddings full = m->encode_images(pixels.data() + i * 3 * 64 * 64, 1, false, &trace);
      ASSERT_TRUE(trace.count("image0.block1")) << dtype;
      EXPECT_LE(test::max_abs_diff(full.data.data(), rows.row(i), 64), 1e-5 * test::max_abs(full.data.data(), 64))
          << dtype << " image " << i;
      EXPECT_GE(test::cosine(full.data.data(), rows.row(i), 64), 0.9999999) << dtype << " image " << i;
    }
  }
}

TEST(TinyVitBehaviour, Int8BatchesSplitAcrossThreadsGiveTheSameBits) {
  // int8 batches of at least 4 images (or 512 token rows) per thread are split between the
  // threads, each running the tower alone on its share; activations are quantised per token, so
  // every image must come out exactly as it does when encoded on its own (one image is never split).
  const Tensor& px = golden_tensor(kModel, "pixel_values");
  const auto pixels = px.to_f32();
  const int before = clipkit::num_threads();
  ModelOptions options;
  options.dtype = "int8";
  options.threads = 1;
  const auto single = Model::load(test::data_path("models/tiny-vit.safetensors"), options);
  std::vector<Embeddings> alone;
  for (int i = 0; i < 12; ++i) alone.push_back(single->encode_images(pixels.data() + i * 3 * 64 * 64, 1));
  auto expect_alone = [&](const Embeddings& all, int64_t batch, const std::string& what) {
    for (int64_t i = 0; i < batch; ++i)
      EXPECT_EQ(0.0, test::max_abs_diff(all.row(i), alone[static_cast<size_t>(i)].data.data(), 64))
          << what << ", batch " << batch << ", image " << i;
  };
  for (int threads : {2, 3}) {
    options.threads = threads;
    const auto m = Model::load(test::data_path("models/tiny-vit.safetensors"), options);
    EXPECT_NE(m->info().kernels.find("split between the threads"), std::string::npos) << m->info().kernels;
    for (int64_t batch : {12, 9})
      expect_alone(m->encode_images(pixels.data(), batch), batch, std::to_string(threads) + " threads");
    // the shares ran on one thread each; the caller's own team size is untouched
    EXPECT_EQ(omp_get_max_threads(), threads);
    // callers on several threads at once (a server's), each call splitting its own batch
    std::vector<Embeddings> got(3);
    std::vector<std::thread> callers;
    for (size_t k = 0; k < got.size(); ++k)
      callers.emplace_back([&, k] { got[k] = m->encode_images(pixels.data(), 12); });
    for (auto& t : callers) t.join();
    for (const Embeddings& e : got) expect_alone(e, 12, std::to_string(threads) + " threads, concurrent callers");
  }
  clipkit::set_num_threads(before);
}

TEST(TinyVitBehaviour, ConcurrentCallsGiveTheSameResults) {
  auto model = [] { return load("models/tiny-vit.safetensors"); };
  auto m = model();
  const Tensor& px = golden_tensor(kModel, "pixel_values");
  const auto pixels = px.to_f32();
  const auto ids = golden_ids(kModel);
  const Embeddings img = m->encode_images(pixels.data(), 12);
  const Embeddings txt = m->encode_tokens(ids);
  std::vector<double> diffs(4, 1.0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      if (k % 2 == 0) {
        Embeddings e = m->encode_images(pixels.data(), 12);
        diffs[static_cast<size_t>(k)] = test::max_abs_diff(e.data.data(), img.data.data(), img.data.size());
      } else {
        Embeddings e = m->encode_tokens(ids);
        diffs[static_cast<size_t>(k)] = test::max_abs_diff(e.data.data(), txt.data.data(), txt.data.size());
      }
    });
  for (auto& t : threads) t.join();
  for (double d : diffs) EXPECT_LE(d, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Formats, TinyVit,
                         ::testing::Values("models/tiny-vit.safetensors", "models/tiny-vit.pt", "models/tiny-vit-hf"),
                         [](const auto& info) {
                           std::string s = info.param;
                           if (s.find("-hf") != std::string::npos) return std::string("HuggingFace");
                           if (s.find(".pt") != std::string::npos) return std::string("TorchScript");
                           return std::string("Safetensors");
                         });

TEST(TinyVitInfo, FormatsAgreeOnParametersAndFingerprint) {
  const ModelInfo& st = load("models/tiny-vit.safetensors")->info();
  const ModelInfo& pt = load("models/tiny-vit.pt")->info();
  const ModelInfo& hf = load("models/tiny-vit-hf")->info();
  EXPECT_EQ(st.format, "safetensors");
  EXPECT_EQ(pt.format, "openai-jit");
  EXPECT_EQ(hf.format, "hf");
  EXPECT_EQ(st.weight_dtype, "F32");
  EXPECT_EQ(hf.weight_dtype, "F16");
  EXPECT_EQ(pt.weight_dtype, "F16+F32");
  // sum(p.numel() for p in CLIP(**config).parameters()) for the tiny-vit config, written out:
  // text: token 49408·64 + pos 77·64 + 2 blocks · (4·64² + 2·64·256 + 3·64 + 64 + 256 + 64 + 4·64) + ln 2·64 + proj 64·64
  // vision: conv 128·3·16·16 + cls 128 + pos 17·128 + 2 ln_pre/post 4·128 + 2 blocks · (... width 128) + proj 128·64
  // + logit_scale.
  const int64_t text_block = 3 * 64 * 64 + 3 * 64 + 64 * 64 + 64 + 256 * 64 + 256 + 64 * 256 + 64 + 4 * 64;
  const int64_t vis_block = 3 * 128 * 128 + 3 * 128 + 128 * 128 + 128 + 512 * 128 + 512 + 128 * 512 + 128 + 4 * 128;
  const int64_t expected = 49408 * 64 + 77 * 64 + 2 * text_block + 2 * 64 + 64 * 64 + 128 * 3 * 16 * 16 + 128 +
                           17 * 128 + 4 * 128 + 2 * vis_block + 128 * 64 + 1;
  EXPECT_EQ(st.parameter_count, expected);
  EXPECT_EQ(pt.parameter_count, expected);
  EXPECT_EQ(hf.parameter_count, expected);
  EXPECT_EQ(st.fingerprint.size(), 16u);
  EXPECT_EQ(st.fingerprint, pt.fingerprint);
  EXPECT_EQ(st.fingerprint, hf.fingerprint);
  EXPECT_FALSE(st.kernels.empty());
  // HF preprocessor_config.json holds the OpenAI mean/std too.
  EXPECT_FLOAT_EQ(hf.preprocess.mean[0], 0.48145466f);
  EXPECT_FLOAT_EQ(hf.preprocess.std[2], 0.27577711f);
}

TEST(TinyVitInfo, WeightBytesFollowTheComputeDtype) {
  // f32 holds 4 bytes per parameter (packing may pad a little); f16 about half of the packed
  // matrices; int8 about a quarter of them (the embeddings stay f32 in every dtype).
  std::map<std::string, int64_t> bytes;
  int64_t params = 0;
  for (const char* dtype : {"f32", "f16", "int8"}) {
    ModelOptions opt;
    opt.dtype = dtype;
    auto m = Model::load(test::data_path("models/tiny-vit.safetensors"), opt);
    bytes[dtype] = m->info().weight_bytes;
    params = m->info().parameter_count;
  }
  EXPECT_GE(bytes["f32"], params * 4 - 4 * 2);  // logit_scale is not a layer weight
  EXPECT_LE(bytes["f32"], params * 5);
  EXPECT_LT(bytes["f16"], bytes["f32"]);
  EXPECT_LT(bytes["int8"], bytes["f16"]);
}

TEST(TinyVitInfo, ActivationOverrideChangesTheOutput) {
  ModelOptions opt;
  opt.activation = "gelu";
  auto m = Model::load(test::data_path("models/tiny-vit.safetensors"), opt);
  EXPECT_EQ(m->info().arch.activation, "gelu");
  Embeddings e = m->encode_tokens(golden_ids(kModel));
  const auto want = golden_f32(kModel, "text_embeds");
  EXPECT_GT(test::max_abs_diff(e.data.data(), want.data(), want.size()), 1e-3);
  opt.activation = "relu";
  EXPECT_THROW(Model::load(test::data_path("models/tiny-vit.safetensors"), opt), Error);
}

TEST(TinyVitErrors, BadInputsThrowClearErrors) {
  auto m = load("models/tiny-vit.safetensors");
  try {
    m->encode_tokens({{49406, 49408, 49407}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("49408"), std::string::npos) << e.what();
  }
  try {
    m->encode_tokens({std::vector<int32_t>(78, 1)});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Limit);
    EXPECT_NE(std::string(e.what()).find("77"), std::string::npos) << e.what();
  }
  EXPECT_THROW(m->encode_tokens({{}}), Error);
  EXPECT_THROW(m->encode_images(nullptr, 2), Error);
  EXPECT_EQ(m->encode_tokens({}).rows, 0);
  EXPECT_EQ(m->encode_images(nullptr, 0).rows, 0);
  ModelOptions opt;
  opt.dtype = "f64";
  EXPECT_THROW(Model::load(test::data_path("models/tiny-vit.safetensors"), opt), Error);
  EXPECT_THROW(Model::load(test::data_path("images/00_astronaut.png")), Error);
}

}  // namespace

namespace {

TEST(TinyVitConvenience, ImageFilesAndTextsMatchGolden) {
  // decode + preprocess + encode of the 12 source images, and tokenize + encode of plain texts.
  auto m = load("models/tiny-vit.safetensors");
  const nlohmann::json j = nlohmann::json::parse(read_file(test::data_path("golden/tiny-vit.json")));
  std::vector<std::string> files;
  for (const auto& img : j.at("images")) files.push_back(test::data_path(img.at("file").get<std::string>()));
  ASSERT_EQ(files.size(), 12u);
  Embeddings e = m->encode_image_files(files);
  expect_matches(e.data, golden_f32(kModel, "image_embeds"), 12, "encode_image_files");
  std::vector<std::string> texts;
  for (int i = 0; i < 4; ++i) texts.push_back(j.at("texts").at(static_cast<size_t>(i)).get<std::string>());
  Embeddings t = m->encode_texts(texts, /*normalize=*/true);
  const auto want = golden_f32(kModel, "text_embeds_normalized");
  expect_matches(t.data, std::vector<float>(want.begin(), want.begin() + 4 * 64), 4, "encode_texts");
  try {
    m->encode_image_files({files[0], test::data_path("images/nope.png")});
    FAIL();
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("nope.png"), std::string::npos) << err.what();
  }
}

}  // namespace
