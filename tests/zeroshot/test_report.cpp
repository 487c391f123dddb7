// Evaluation reports: the same numbers in every format, escaping, self-contained HTML.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "support/test_support.h"
#include "zeroshot/report.h"

using namespace clipkit;

namespace {
EvalReport sample() {
  EvalReport r;
  r.model = "m.safetensors";
  r.dataset = "ds";
  r.labels = {"cat <&>", "dog|puppy"};
  r.class_counts = {3, 1};
  r.images = 4;
  Embeddings lg(4, 2);
  const float v[] = {2, 1, 0, 3, 5, 1, 1, 4};  // predictions 0, 1, 0, 1; truth 0, 0, 0, 1
  std::copy(v, v + 8, lg.data.begin());
  r.strategies.push_back({"photo", {"a photo of a {}."}, evaluate_logits(lg, {0, 0, 0, 1})});
  SelectionReport s;
  s.pool_name = "pool.txt";
  s.pool_size = 3;
  s.result.selection_images = 2;
  s.result.heldout_images = 2;
  s.result.steps.push_back({"a {} thing.", 2, 0.5, 1.0});
  r.selection = s;
  return r;
}
}  // namespace

TEST(ZeroShotReport, FormatsCarryTheSameNumbers) {
  const EvalReport r = sample();
  EXPECT_DOUBLE_EQ(r.strategies[0].result.top1, 0.75);
  const auto j = nlohmann::json::parse(render_eval_json(r));
  EXPECT_DOUBLE_EQ(j["strategies"][0]["top1"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(j["strategies"][0]["mean_per_class"].get<double>(), (2.0 / 3.0 + 1.0) / 2.0);
  EXPECT_EQ(j["strategies"][0]["confusion"], nlohmann::json::parse("[[2,1],[0,1]]"));
  EXPECT_EQ(j["selection"]["steps"][0]["template"], "a {} thing.");
  const std::string text = render_eval_text(r);
  EXPECT_NE(text.find("75.0%"), std::string::npos) << text;
  EXPECT_NE(text.find("83.3%"), std::string::npos) << text;
  const std::string md = render_eval_markdown(r);
  EXPECT_NE(md.find("75.0%"), std::string::npos);
  EXPECT_NE(md.find("dog\\|puppy"), std::string::npos) << md;  // pipes escaped in tables
  const std::string html = render_eval_html(r);
  EXPECT_NE(html.find("75.0%"), std::string::npos);
  EXPECT_NE(html.find("cat &lt;&amp;&gt;"), std::string::npos);
  EXPECT_EQ(html.find("cat <&>"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_THROW(write_eval_report(r, test::temp_dir() + "/r.pdf"), Error);
}
