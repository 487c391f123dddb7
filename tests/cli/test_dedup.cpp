// clipkit dedup: exact copies and near-duplicates (a few pixels changed) are grouped; the scores
// are the cosines of the stored embeddings.
#include <gtest/gtest.h>

#include <filesystem>

#include "clipkit/image.h"
#include "clipkit/index.h"
#include "search/cli_helpers.h"
#include "search/search_helpers.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using namespace clipkit;

TEST(CliDedup, GroupsCopiesAndNearDuplicates) {
  const std::string imgs = test::fixture_image_folder();
  fs::copy_file(imgs + "/04_camera_gray.png", imgs + "/camera_copy.png");
  Image img = decode_image_file(test::data_path("images/00_astronaut.png"));
  ASSERT_EQ(img.mode, PixelMode::RGB);
  for (int i = 0; i < 30; ++i) img.pixels[static_cast<size_t>(i) * 3] ^= 0x08;
  test::write_png(imgs + "/astronaut_edited.png", img.width, img.height, img.pixels);

  const std::string dir = test::temp_dir() + "/idx";
  ASSERT_EQ(test::run_cli({"index", "create", dir, "--model", test::tiny_vit_path()}).exit_code, 0);
  auto r = test::run_cli({"index", "add", dir, imgs});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  r = test::run_cli({"dedup", dir, "--threshold", "0.995", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto groups = test::json_lines(r.out);
  bool saw_copy = false, saw_near = false;
  Index idx = Index::open(dir, Index::Mode::ReadOnly);
  for (const auto& g : groups) {
    const auto& items = g["items"];
    if (items.size() == 1) {
      ASSERT_EQ(items[0]["paths"].size(), 2u);
      EXPECT_EQ(test::basename_of(items[0]["paths"][0]), "04_camera_gray.png");
      EXPECT_EQ(test::basename_of(items[0]["paths"][1]), "camera_copy.png");
      saw_copy = true;
    } else {
      std::vector<std::string> names;
      for (const auto& it : items) names.push_back(test::basename_of(it["paths"][0]));
      if (std::find(names.begin(), names.end(), "00_astronaut.png") != names.end()) {
        EXPECT_NE(std::find(names.begin(), names.end(), "astronaut_edited.png"), names.end());
        saw_near = true;
      }
      // every member's score is its cosine with the first member
      const auto v0 = idx.vector(items[0]["id"].get<int64_t>());
      for (const auto& it : items) {
        EXPECT_NEAR(it["score"].get<float>(), test::dot(v0, idx.vector(it["id"].get<int64_t>())), 1e-5);
      }
    }
  }
  EXPECT_TRUE(saw_copy);
  EXPECT_TRUE(saw_near) << r.out;

  r = test::run_cli({"dedup", dir, "--threshold", "0.995"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("(same content)"), std::string::npos) << r.out;
  r = test::run_cli({"dedup", dir, "--threshold", "7"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("threshold"), std::string::npos);
}
