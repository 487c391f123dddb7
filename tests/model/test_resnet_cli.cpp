// `clipkit embed` on the ResNet checkpoint: the CLI's image embeddings equal the reference
// fixtures (decode + preprocess + ResNet tower + output formatting, end to end).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "core/npy.h"
#include "model/model_test_util.h"

using namespace clipkit;
using namespace clipkit::modeltest;

namespace {

const char* const kImages[] = {"00_astronaut.png", "01_chelsea_q90_progressive.jpg", "02_coffee.png",
                               "03_rocket_q75.jpg", "04_camera_gray.png", "05_rgba_alpha.png",
                               "06_wide_hubble.png", "07_tall_immuno.png", "08_pixel_1x1.png",
                               "09_tiny_7x5.png", "10_small_40x50.png", "11_palette.png"};

void expect_row(const float* got, const float* want, size_t dim, const std::string& what) {
  EXPECT_GE(test::cosine(got, want, dim), 0.99999) << what;
  EXPECT_LE(test::max_abs_diff(got, want, dim), 1e-4 * test::max_abs(want, dim)) << what;
}

}  // namespace

TEST(ResNetCli, EmbedJsonLinesMatchGoldens) {
  const auto want = golden_f32("tiny-rn", "image_embeds");
  const std::vector<size_t> picks = {0, 3, 5, 11};
  std::vector<std::string> args = {"embed", "--model", test::data_path("models/tiny-rn.safetensors"), "--batch", "3"};
  for (size_t i : picks) {
    args.push_back("--image");
    args.push_back(test::data_path(std::string("images/") + kImages[i]));
  }
  const auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  size_t n = 0;
  while (std::getline(lines, line)) {
    ASSERT_LT(n, picks.size()) << line;
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["kind"], "image");
    const auto e = j["embedding"].get<std::vector<float>>();
    ASSERT_EQ(e.size(), 64u);
    expect_row(e.data(), want.data() + picks[n] * 64, 64, std::string("image ") + kImages[picks[n]]);
    ++n;
  }
  EXPECT_EQ(n, picks.size());
}

TEST(ResNetCli, EmbedNpyNormalizedMatchesGoldens) {
  const auto want = golden_f32("tiny-rn", "image_embeds_normalized");
  const std::string out = test::temp_dir() + "/rn.npy";
  std::vector<std::string> args = {"embed", "--model", test::data_path("models/tiny-rn.safetensors"), "--normalize",
                                   "--out", out};
  for (const char* f : kImages) {
    args.push_back("--image");
    args.push_back(test::data_path(std::string("images/") + f));
  }
  const auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Tensor t = read_npy(out);
  ASSERT_EQ(t.shape, (Shape{12, 64}));
  const auto got = t.to_f32();
  for (size_t i = 0; i < 12; ++i) expect_row(got.data() + i * 64, want.data() + i * 64, 64, kImages[i]);
}

TEST(ResNetCli, ConvolutionModesGiveTheGoldensAndABadOneIsNamed) {
  // --convolution blocked runs the blocked layout and Winograd kernels (on AVX-512) on this
  // narrow model; direct and nhwc the direct kernels: every mode prints the fixture embeddings
  const auto want = golden_f32("tiny-rn", "image_embeds");
  for (const char* mode : {"blocked", "direct", "nhwc"}) {
    const auto r = test::run_cli({"embed", "--model", test::data_path("models/tiny-rn.safetensors"), "--convolution",
                                  mode, "--image", test::data_path(std::string("images/") + kImages[2])});
    ASSERT_EQ(r.exit_code, 0) << mode << ": " << r.err;
    const auto e = nlohmann::json::parse(r.out)["embedding"].get<std::vector<float>>();
    ASSERT_EQ(e.size(), 64u) << mode;
    expect_row(e.data(), want.data() + 2 * 64, 64, mode);
  }
  const auto bad = test::run_cli({"embed", "--model", test::data_path("models/tiny-rn.safetensors"), "--convolution",
                                  "fft", "--text", "a photo of a cat"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("unknown convolution mode 'fft'"), std::string::npos) << bad.err;
  EXPECT_TRUE(bad.out.empty()) << bad.out;
}
