// `clipkit preprocess`: the .npy it writes equals the golden pixel_values; errors are one line.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/npy.h"
#include "io/safetensors.h"
#include "support/test_support.h"

namespace clipkit {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(CliPreprocess, MatchesGoldenPixelValuesForEveryFixtureImage) {
  const auto st = read_safetensors(test::data_path("golden/tiny-vit.safetensors"));
  const std::vector<float> golden = st.tensors.at("pixel_values").to_f32();
  const auto meta = nlohmann::json::parse(slurp(test::data_path("golden/tiny-vit.json")));
  const std::string dir = test::temp_dir();
  size_t i = 0;
  for (const auto& info : meta.at("images")) {
    const std::string out = dir + "/img" + std::to_string(i) + ".npy";
    const auto r = test::run_cli({"preprocess", "--resolution", "64", test::data_path(info.at("file")), "--out", out});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const Tensor t = read_npy(out);
    ASSERT_EQ(t.dtype, DType::F32);
    ASSERT_EQ(t.shape, (Shape{3, 64, 64}));
    const std::vector<float> v = t.to_f32();
    EXPECT_LE(test::max_abs_diff(v.data(), golden.data() + i * 3 * 64 * 64, v.size()), 1e-6) << info.at("file");
    ++i;
  }
  EXPECT_EQ(i, 12u);
}

TEST(CliPreprocess, CustomMeanAndStd) {
  const std::string dir = test::temp_dir();
  const std::string out = dir + "/x.npy";
  const auto r = test::run_cli({"preprocess", "--resolution", "16", "--mean", "0,0,0", "--std", "1,1,1",
                                test::data_path("images/08_pixel_1x1.png"), "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<float> v = read_npy(out).to_f32();
  ASSERT_EQ(v.size(), 3u * 16 * 16);
  // with mean 0 / std 1 the tensor is v / 255: every value an 8-bit level in [0, 1]
  for (float x : v) {
    EXPECT_GE(x, 0.0f);
    EXPECT_LE(x, 1.0f);
    const float level = x * 255.0f;
    EXPECT_NEAR(level, std::round(level), 1e-3);
  }
}

TEST(CliPreprocess, ErrorsAreOneLineAndNonZero) {
  const std::string dir = test::temp_dir();
  std::ofstream(dir + "/bad.png") << "this is not an image";
  struct Case {
    std::vector<std::string> args;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {{"preprocess", "--resolution", "64", dir + "/missing.png", "--out", dir + "/o.npy"}, "missing.png"},
      {{"preprocess", "--resolution", "64", dir + "/bad.png", "--out", dir + "/o.npy"}, "bad.png"},
      {{"preprocess", "--resolution", "0", test::data_path("images/08_pixel_1x1.png"), "--out", dir + "/o.npy"},
       "--resolution"},
      {{"preprocess", "--resolution", "8", "--mean", "1,2", test::data_path("images/08_pixel_1x1.png"), "--out",
        dir + "/o.npy"},
       "--mean"},
      {{"preprocess", "--resolution", "8", "--std", "1,0,1", test::data_path("images/08_pixel_1x1.png"), "--out",
        dir + "/o.npy"},
       "--std"},
  };
  for (const auto& c : cases) {
    const auto r = test::run_cli(c.args);
    EXPECT_NE(r.exit_code, 0) << c.needle;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  // a missing required option is a usage error
  const auto r = test::run_cli({"preprocess", test::data_path("images/08_pixel_1x1.png")});
  EXPECT_NE(r.exit_code, 0);
}

TEST(CliPreprocess, Help) {
  const auto r = test::run_cli({"preprocess", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE((r.out + r.err).find("--resolution"), std::string::npos);
  EXPECT_NE((r.out + r.err).find("--out"), std::string::npos);
}

}  // namespace
}  // namespace clipkit
