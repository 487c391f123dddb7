// clipkit classifier build / info, and classify --classifier.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "support/test_support.h"

namespace {
using clipkit::test::data_path;
using clipkit::test::run_cli;
}  // namespace

TEST(CliClassifier, BuildThenClassifyMatchesDirectClassification) {
  const std::string dir = clipkit::test::temp_dir();
  const std::string labels = dir + "/labels.txt";
  std::ofstream(labels) << "# three classes\nastronaut|spaceman\ncoffee\nrocket\n";
  const std::string clf = dir + "/space.clf";
  const std::string model = data_path("models/tiny-vit.safetensors");
  auto b = run_cli({"classifier", "build", "--model", model, "--labels-file", labels, "--templates", "imagenet7", "--out", clf});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(b.out.find("3 classes"), std::string::npos) << b.out;

  const auto direct = run_cli({"classify", "--model", model, "--labels-file", labels, "--templates", "imagenet7",
                               "--format", "json", data_path("images")});
  const auto saved = run_cli({"classify", "--model", model, "--classifier", clf, "--format", "json", data_path("images")});
  ASSERT_EQ(direct.exit_code, 0) << direct.err;
  ASSERT_EQ(saved.exit_code, 0) << saved.err;
  EXPECT_EQ(saved.out, direct.out);  // bit-identical class rows give identical output

  const auto info = run_cli({"classifier", "info", clf});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("astronaut | spaceman"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("itap of a {}."), std::string::npos) << info.out;
}

TEST(CliClassifier, LabelSetAndModelMismatch) {
  const std::string dir = clipkit::test::temp_dir();
  const std::string clf = dir + "/cifar.clf";
  auto b = run_cli({"classifier", "build", "--model", data_path("models/tiny-vit.safetensors"), "--label-set", "cifar10",
                    "--templates", "photo", "--out", clf});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(b.out.find("10 classes"), std::string::npos) << b.out;
  // another model: a one-line Mismatch error naming the classifier
  const auto r = run_cli({"classify", "--model", data_path("models/tiny-rn.safetensors"), "--classifier", clf,
                          data_path("images/00_astronaut.png")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cifar.clf"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("fingerprint"), std::string::npos) << r.err;
  // --classifier with --labels is refused
  const auto both = run_cli({"classify", "--model", data_path("models/tiny-vit.safetensors"), "--classifier", clf,
                             "--labels", "a,b", data_path("images/00_astronaut.png")});
  EXPECT_EQ(both.exit_code, 1);
  // a corrupt classifier file
  const std::string junk = dir + "/junk.clf";
  std::ofstream(junk) << "garbage";
  const auto bad = run_cli({"classify", "--model", data_path("models/tiny-vit.safetensors"), "--classifier", junk,
                            data_path("images/00_astronaut.png")});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("junk.clf"), std::string::npos) << bad.err;
  // missing --out
  EXPECT_NE(run_cli({"classifier", "build", "--model", data_path("models/tiny-vit.safetensors"), "--labels", "a"}).exit_code, 0);
}
