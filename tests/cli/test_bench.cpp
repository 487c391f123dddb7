// clipkit bench: one JSON line with the documented fields.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace {

using clipkit::test::data_path;
using clipkit::test::run_cli;

TEST(CliBench, PrintsOneJsonLine) {
  for (const char* dtype : {"f32", "int8"}) {
    const auto r = run_cli({"bench", "--model", data_path("models/tiny-vit.pt"), "--dtype", dtype, "--threads", "1",
                            "--batch", "2", "--images", "4", "--texts", "8"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    for (const char* key : {"image_per_s", "text_per_s", "image_ms_batch1", "load_s", "peak_rss_mb", "first_image_batch_ratio",
                            "first_image_batch_cpu_ratio", "image_cpu_ms"}) {
      ASSERT_TRUE(j.contains(key)) << key;
      EXPECT_GT(j[key].get<double>(), 0.0) << key;
    }
    EXPECT_EQ(j["dtype"], dtype);
    EXPECT_EQ(j["threads"], 1);
    EXPECT_EQ(j["batch"], 2);
    EXPECT_EQ(j["images"], 4);
    EXPECT_EQ(j["texts"], 8);
    EXPECT_NE(j["kernels"].get<std::string>().find("oneDNN"), std::string::npos);
  }
}

TEST(CliBench, RejectsBadOptions) {
  auto r = run_cli({"bench", "--model", data_path("models/tiny-vit.pt"), "--batch", "0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--batch"), std::string::npos) << r.err;
  r = run_cli({"bench", "--model", data_path("models/tiny-vit.pt"), "--dtype", "bf8"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--dtype"), std::string::npos) << r.err;
  r = run_cli({"bench", "--model", data_path("models/nope.safetensors")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nope.safetensors"), std::string::npos) << r.err;
}

}  // namespace
