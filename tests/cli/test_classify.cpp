// clipkit classify: output formats, golden zero-shot numbers through the CLI, skipped images.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/mapped_file.h"
#include "io/safetensors.h"
#include "support/test_support.h"

namespace {

using clipkit::test::data_path;
using clipkit::test::nonempty_lines;
using clipkit::test::run_cli;

struct GoldenZs {
  std::string labels;  // comma-joined classes
  std::string templates_file;
  std::vector<std::string> classes;
};

GoldenZs golden_zs(const std::string& model) {
  const auto meta = nlohmann::json::parse(clipkit::read_file(data_path("golden/" + model + ".json")));
  GoldenZs g;
  for (const auto& c : meta["zeroshot"]["classes"]) {
    g.classes.push_back(c.get<std::string>());
    if (!g.labels.empty()) g.labels += ',';
    g.labels += c.get<std::string>();
  }
  g.templates_file = clipkit::test::temp_dir() + "/templates.txt";
  std::ofstream f(g.templates_file);
  f << "# the fixtures' five templates\n";
  for (const auto& t : meta["zeroshot"]["templates"]) f << t.get<std::string>() << "\n";
  return g;
}

}  // namespace

TEST(CliClassify, JsonMatchesZeroShotGoldens) {
  const auto g = golden_zs("tiny-vit");
  const auto r = run_cli({"classify", "--model", data_path("models/tiny-vit.safetensors"), "--labels", g.labels,
                          "--templates", g.templates_file, "--scale", "100", "--top-k", "5", "--format", "json",
                          data_path("images")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto st = clipkit::read_safetensors(data_path("golden/tiny-vit.safetensors"));
  const auto probs = st.tensors.at("zeroshot.probs_100").to_f32();
  const auto* top5 = static_cast<const int64_t*>(st.tensors.at("zeroshot.top5_100").data);
  const auto logits = st.tensors.at("zeroshot.logits_100").to_f32();
  const auto lines = nonempty_lines(r.out);
  ASSERT_EQ(lines.size(), 12u) << r.out;  // index.json in the folder is not an image
  for (size_t i = 0; i < 12; ++i) {
    const auto j = nlohmann::json::parse(lines[i]);
    char prefix[8];
    std::snprintf(prefix, sizeof prefix, "%02zu_", i);
    EXPECT_NE(j["image"].get<std::string>().find(std::string("/images/") + prefix), std::string::npos) << j["image"];
    ASSERT_EQ(j["top"].size(), 5u);
    for (size_t k = 0; k < 5; ++k) {
      const auto c = static_cast<size_t>(top5[i * 5 + k]);
      EXPECT_EQ(j["top"][k]["label"].get<std::string>(), g.classes[c]) << "image " << i << " rank " << k;
      EXPECT_NEAR(j["top"][k]["prob"].get<double>(), probs[i * 10 + c], 1e-5);
      EXPECT_NEAR(j["top"][k]["score"].get<double>(), logits[i * 10 + c], 1e-3);
    }
  }
}

TEST(CliClassify, DefaultScaleIsTheModelsLogitScale) {
  const auto g = golden_zs("tiny-rn");
  const auto r = run_cli({"classify", "--model", data_path("models/tiny-rn.safetensors"), "--labels", g.labels,
                          "--templates", g.templates_file, "--format", "json", "--top-k", "3",
                          data_path("images/00_astronaut.png")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto st = clipkit::read_safetensors(data_path("golden/tiny-rn.safetensors"));
  const auto probs = st.tensors.at("zeroshot.probs_scale").to_f32();
  const auto* top5 = static_cast<const int64_t*>(st.tensors.at("zeroshot.top5_scale").data);
  const auto j = nlohmann::json::parse(nonempty_lines(r.out).at(0));
  ASSERT_EQ(j["top"].size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(j["top"][k]["label"].get<std::string>(), g.classes[static_cast<size_t>(top5[k])]);
    EXPECT_NEAR(j["top"][k]["prob"].get<double>(), probs[static_cast<size_t>(top5[k])], 1e-5);
  }
}

TEST(CliClassify, TableAndCsv) {
  const std::string model = data_path("models/tiny-vit.safetensors");
  const auto table = run_cli({"classify", "--model", model, "--labels", "cat,dog|puppy,rocket", "--top-k", "2",
                              data_path("images/00_astronaut.png"), data_path("images/03_rocket_q75.jpg")});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  const auto tl = nonempty_lines(table.out);
  ASSERT_EQ(tl.size(), 3u) << table.out;
  EXPECT_EQ(tl[0].rfind("image", 0), 0u);
  EXPECT_NE(tl[1].find("00_astronaut.png"), std::string::npos);
  EXPECT_NE(tl[1].find('%'), std::string::npos);

  const auto csv = run_cli({"classify", "--model", model, "--labels", "cat,dog|puppy,rocket", "--top-k", "2",
                            "--format", "csv", data_path("images/00_astronaut.png"), data_path("images/03_rocket_q75.jpg")});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  const auto cl = nonempty_lines(csv.out);
  ASSERT_EQ(cl.size(), 5u) << csv.out;
  EXPECT_EQ(cl[0], "image,rank,label,score,prob");
  EXPECT_NE(cl[1].find(",1,"), std::string::npos);
  EXPECT_NE(cl[2].find(",2,"), std::string::npos);
  // the csv rows agree with the json output
  const auto js = run_cli({"classify", "--model", model, "--labels", "cat,dog|puppy,rocket", "--top-k", "2",
                           "--format", "json", data_path("images/00_astronaut.png")});
  const auto j = nlohmann::json::parse(nonempty_lines(js.out).at(0));
  std::string field = ",";
  field += j["top"][0]["label"].get<std::string>();
  field += ',';
  EXPECT_NE(cl[1].find(field), std::string::npos);
}

TEST(CliClassify, UnreadableImagesAreSkipped) {
  const std::string dir = clipkit::test::temp_dir();
  std::filesystem::copy_file(data_path("images/02_coffee.png"), dir + "/b_good.png");
  std::ofstream(dir + "/a_broken.jpg") << "definitely not a jpeg";
  const std::string model = data_path("models/tiny-vit.safetensors");
  auto r = run_cli({"classify", "--model", model, "--labels", "coffee,tea", "--format", "json", dir});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nonempty_lines(r.out).size(), 1u);
  EXPECT_NE(r.err.find("a_broken.jpg"), std::string::npos) << r.err;
  // nothing readable: exit code 1
  r = run_cli({"classify", "--model", model, "--labels", "coffee,tea", dir + "/a_broken.jpg"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("a_broken.jpg"), std::string::npos) << r.err;
}

TEST(CliClassify, BadArgumentsGiveOneLineErrors) {
  const std::string model = data_path("models/tiny-vit.safetensors");
  const std::string img = data_path("images/00_astronaut.png");
  const std::string dir = clipkit::test::temp_dir();
  const std::string bad_templates = dir + "/t.txt";
  std::ofstream(bad_templates) << "a photo of a {}.\nno placeholder\n";
  struct Case {
    std::vector<std::string> args;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {{"classify", "--model", model, img}, "--labels"},
      {{"classify", "--model", model, "--labels", "a", "--label-set", "cifar10", img}, "mutually exclusive"},
      {{"classify", "--model", model, "--labels", "a,b", "--templates", bad_templates, img}, bad_templates + ":2"},
      {{"classify", "--model", model, "--labels", "a,b", "--templates", "nosuchset", img}, "imagenet80"},
      {{"classify", "--model", model, "--label-set", "nosuchset", img}, "nosuchset"},
      {{"classify", "--model", model, "--labels", "a,b", "--format", "xml", img}, "--format"},
      {{"classify", "--model", model, "--labels", "a,b", dir + "/missing.png"}, "missing.png"},
      {{"classify", "--model", model, "--labels", "a,,b", img}, "empty label"},
  };
  for (const auto& c : cases) {
    const auto r = run_cli(c.args);
    EXPECT_EQ(r.exit_code, c.needle == "--format" ? 2 : 1) << c.needle;  // 2: a value not among the option's choices
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << r.err;
    EXPECT_EQ(nonempty_lines(r.err).size(), 1u) << r.err;
  }
}

TEST(CliClassify, ComputeDtypesKeepTheGoldenTop1) {
  // The int8 contract: zero-shot top-1 identical to fp32 on the fixture images (f16 too).
  const auto g = golden_zs("tiny-vit");
  const auto st = clipkit::read_safetensors(data_path("golden/tiny-vit.safetensors"));
  const auto* top5 = static_cast<const int64_t*>(st.tensors.at("zeroshot.top5_100").data);
  for (const char* dtype : {"f16", "int8"}) {
    const auto r = run_cli({"classify", "--model", data_path("models/tiny-vit.safetensors"), "--labels", g.labels,
                            "--templates", g.templates_file, "--scale", "100", "--top-k", "1", "--format", "json",
                            "--dtype", dtype, "--threads", "1", data_path("images")});
    ASSERT_EQ(r.exit_code, 0) << dtype << ": " << r.err;
    const auto lines = nonempty_lines(r.out);
    ASSERT_EQ(lines.size(), 12u) << r.out;
    for (size_t i = 0; i < 12; ++i) {
      const auto j = nlohmann::json::parse(lines[i]);
      EXPECT_EQ(j["top"][0]["label"].get<std::string>(), g.classes[static_cast<size_t>(top5[i * 5])])
          << dtype << " image " << i;
    }
  }
  const auto bad = run_cli({"classify", "--model", data_path("models/tiny-vit.safetensors"), "--labels", "a,b",
                            "--dtype", "int4", data_path("images")});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("int4"), std::string::npos) << bad.err;
}
