// A Hugging Face model folder's JSON files come from whoever published the folder: configs nested
// past the JSON limit, and preprocessor numbers that have no float value, are Format errors that
// name the file; the unchanged folder still loads.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using namespace clipkit;

namespace {

std::string copy_tiny_hf() {
  const std::string dir = test::temp_dir() + "/hf";
  fs::create_directories(dir);
  for (const char* f : {"config.json", "preprocessor_config.json", "model.safetensors"})
    fs::copy_file(test::data_path(std::string("models/tiny-vit-hf/") + f), dir + "/" + f);
  return dir;
}

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

std::string load_error(const std::string& dir) {
  try {
    Model::load(dir);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format) << e.what();
    return e.what();
  }
  return "";
}

}  // namespace

TEST(HfFolderConfigs, DeepConfigIsAFormatError) {
  const std::string dir = copy_tiny_hf();
  EXPECT_NO_THROW(Model::load(dir));
  write(dir + "/config.json", "{\"a\": " + std::string(100000, '[') + std::string(100000, ']') + "}");
  const std::string msg = load_error(dir);
  EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nested more than 64 levels"), std::string::npos) << msg;
}

TEST(HfFolderConfigs, PreprocessorNumbersOutOfFloatRange) {
  // 1e300 has no float value (converting it was undefined behaviour)
  const std::string dir = copy_tiny_hf();
  write(dir + "/preprocessor_config.json", R"({"image_mean": [0.5, 0.5, 0.5], "image_std": [1e300, 0.5, 0.5]})");
  const std::string msg = load_error(dir);
  EXPECT_NE(msg.find("image_std"), std::string::npos) << msg;
  EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;
}
