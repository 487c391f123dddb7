// Evaluation metrics, stratified splits and forward template selection on hand-checked data.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "clipkit/error.h"
#include "clipkit/zeroshot.h"
#include "support/test_support.h"

using namespace clipkit;

namespace {
Embeddings rows(const std::vector<std::vector<float>>& r) {
  Embeddings e(static_cast<int64_t>(r.size()), static_cast<int64_t>(r[0].size()));
  for (size_t i = 0; i < r.size(); ++i) std::copy(r[i].begin(), r[i].end(), e.row(static_cast<int64_t>(i)));
  return e;
}
}  // namespace

TEST(ZeroShotEval, MetricsOnAHandCheckedSet) {
  // Classes a, b, c embed exactly as axes 0, 1, 2 whatever the template.
  TextEncoder enc = [](const std::vector<std::string>& ps) {
    Embeddings e(static_cast<int64_t>(ps.size()), 4);
    for (size_t i = 0; i < ps.size(); ++i) {
      const char last = ps[i].back();
      const int k = last == 'a' ? 0 : last == 'b' ? 1 : 2;
      e.row(static_cast<int64_t>(i))[k] = 2.0f;
    }
    return e;
  };
  ClassifierOptions opt;
  opt.templates = {"{}"};
  auto clf = ZeroShotClassifier::build(enc, parse_label_list("a,b,c"), opt, "", 1.0f);
  // 7 images: predicted class = the largest coordinate
  //   truth a: predicted a, a, b    -> 2/3
  //   truth b: predicted b, c       -> 1/2
  //   truth c: predicted c, c       -> 2/2
  Embeddings img = rows({{0.9f, 0.1f, 0.0f, 0.3f},
                         {0.6f, 0.5f, 0.1f, 0.0f},
                         {0.2f, 0.7f, 0.1f, 0.0f},
                         {0.1f, 0.8f, 0.3f, 0.0f},
                         {0.0f, 0.4f, 0.5f, 0.0f},
                         {0.3f, 0.0f, 0.9f, 0.0f},
                         {0.0f, 0.1f, 0.2f, 0.0f}});
  const std::vector<int> truth = {0, 0, 0, 1, 1, 2, 2};
  auto r = evaluate(clf, img, truth, 100.0f);
  EXPECT_EQ(r.n, 7);
  EXPECT_DOUBLE_EQ(r.top1, 5.0 / 7.0);
  EXPECT_DOUBLE_EQ(r.top5, 1.0);  // 3 classes: top-5 covers everything
  ASSERT_EQ(r.per_class.size(), 3u);
  EXPECT_DOUBLE_EQ(r.per_class[0], 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(r.per_class[1], 0.5);
  EXPECT_DOUBLE_EQ(r.per_class[2], 1.0);
  EXPECT_DOUBLE_EQ(r.mean_per_class, (2.0 / 3.0 + 0.5 + 1.0) / 3.0);
  EXPECT_EQ(r.class_counts, (std::vector<int64_t>{3, 2, 2}));
  EXPECT_EQ(r.predictions, (std::vector<int>{0, 0, 1, 1, 2, 2, 2}));
  const std::vector<std::vector<int64_t>> confusion = {{2, 1, 0}, {0, 1, 1}, {0, 0, 2}};
  EXPECT_EQ(r.confusion, confusion);
  EXPECT_THROW(evaluate(clf, img, {0, 1}, 1.0f), Error);
  EXPECT_THROW(evaluate(clf, img, {0, 0, 0, 1, 1, 2, 3}, 1.0f), Error);
}

TEST(ZeroShotEval, TopFiveWithManyClasses) {
  // 7 classes, logits given directly: truth ranks 1st, 5th and 6th.
  Embeddings lg = rows({{7, 6, 5, 4, 3, 2, 1}, {7, 6, 5, 4, 3, 2, 1}, {7, 6, 5, 4, 3, 2, 1}});
  auto r = evaluate_logits(lg, {0, 4, 5});
  EXPECT_DOUBLE_EQ(r.top1, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(r.top5, 2.0 / 3.0);
  // classes without images do not count in the mean per-class accuracy
  EXPECT_DOUBLE_EQ(r.mean_per_class, (1.0 + 0.0 + 0.0) / 3.0);
}

TEST(ZeroShotEval, StratifiedSplitIsDeterministicAndBalanced) {
  std::vector<int> truth;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 10 + c; ++i) truth.push_back(c);
  truth.push_back(3);  // a class with a single image
  auto a = stratified_split(truth, 4, 0.5);
  auto b = stratified_split(truth, 4, 0.5);
  EXPECT_EQ(a, b);
  std::map<int, int> sel, all;
  for (size_t i = 0; i < truth.size(); ++i) {
    all[truth[i]]++;
    sel[truth[i]] += a[i];
  }
  EXPECT_EQ(sel[0], 5);
  EXPECT_EQ(sel[1], 6);  // round(11 * 0.5) = 6 (half away from zero)
  EXPECT_EQ(sel[2], 6);
  EXPECT_EQ(sel[3], 1);
  auto c = stratified_split(truth, 4, 0.9);  // at least one image each side for n >= 2
  int c0 = 0;
  for (size_t i = 0; i < 10; ++i) c0 += c[i];
  EXPECT_EQ(c0, 1);
  // not simply the first half of each class
  bool shuffled = false;
  for (size_t i = 0; i < 5; ++i) shuffled |= !a[i];
  EXPECT_TRUE(shuffled);
  EXPECT_THROW(stratified_split(truth, 4, 0.0), Error);
  EXPECT_THROW(stratified_split(truth, 4, 1.0), Error);
}

TEST(ZeroShotEval, ForwardSelectionPicksTheInformativeTemplates) {
  // Two classes x, y; images of x lie on axis 0, images of y on axis 1 (plus a little of axis 2).
  // Template "good {}" embeds x/y on their own axes; "swap {}" on the other class's axis;
  // "noise {}" puts both classes on axis 2 (useless); "half {}" puts x on axis 0 and y on axis 0
  // too (only half right).
  TextEncoder enc = [](const std::vector<std::string>& ps) {
    Embeddings e(static_cast<int64_t>(ps.size()), 4);
    for (size_t i = 0; i < ps.size(); ++i) {
      const std::string& p = ps[i];
      const bool x = p.back() == 'x';
      int k = 2;
      if (p.rfind("good", 0) == 0) k = x ? 0 : 1;
      if (p.rfind("swap", 0) == 0) k = x ? 1 : 0;
      if (p.rfind("half", 0) == 0) k = 0;
      e.row(static_cast<int64_t>(i))[k] = 1.0f;
      e.row(static_cast<int64_t>(i))[3] = 0.01f * static_cast<float>(i % 3);
    }
    return e;
  };
  std::vector<std::vector<float>> im;
  std::vector<int> truth;
  for (int i = 0; i < 6; ++i) {
    im.push_back({1.0f, 0.1f * static_cast<float>(i % 2), 0.2f, 0.0f});
    truth.push_back(0);
    im.push_back({0.1f * static_cast<float>(i % 2), 1.0f, 0.2f, 0.0f});
    truth.push_back(1);
  }
  const Embeddings img = rows(im);
  const auto split = stratified_split(truth, 2, 0.5);
  const std::vector<std::string> pool = {"noise {}", "swap {}", "good {}", "half {}"};
  auto res = select_templates(enc, parse_label_list("x,y"), pool, img, truth, split, 2, 100.0f);
  EXPECT_EQ(res.selection_images, 6);
  EXPECT_EQ(res.heldout_images, 6);
  ASSERT_EQ(res.steps.size(), 2u);
  EXPECT_EQ(res.steps[0].template_text, "good {}");
  EXPECT_EQ(res.steps[0].template_index, 2);
  EXPECT_DOUBLE_EQ(res.steps[0].selection_top1, 1.0);
  EXPECT_DOUBLE_EQ(res.steps[0].heldout_top1, 1.0);
  // second pick: "noise" keeps 100% (adds the same vector to both classes), "half" and "swap"
  // hurt; noise has the better true-class log-probability than the others that stay at 100%.
  EXPECT_EQ(res.steps[1].template_text, "noise {}");
  EXPECT_DOUBLE_EQ(res.steps[1].selection_top1, 1.0);
  // max 0 = the whole pool, in some order
  auto all = select_templates(enc, parse_label_list("x,y"), pool, img, truth, split, 0, 100.0f);
  EXPECT_EQ(all.steps.size(), 4u);
  // a direct check of the last step: with every template the class rows are normalise(sum)
  auto clf_opt = ClassifierOptions{};
  clf_opt.templates = pool;
  auto clf = ZeroShotClassifier::build(enc, parse_label_list("x,y"), clf_opt, "", 1.0f);
  auto r = evaluate(clf, img, truth, 100.0f);
  const double want = all.steps.back().selection_top1 * 0.5 + all.steps.back().heldout_top1 * 0.5;
  EXPECT_DOUBLE_EQ(r.top1, want);
}

TEST(ZeroShotEval, LabeledFolderAndImageListing) {
  namespace fs = std::filesystem;
  const std::string root = test::temp_dir();
  auto touch = [&](const std::string& rel) {
    fs::create_directories(fs::path(root + "/" + rel).parent_path());
    std::ofstream(root + "/" + rel) << "x";
  };
  touch("zebra/b.png");
  touch("zebra/a.JPG");
  touch("zebra/notes.txt");
  touch("ant/sub/c.webp");
  touch("empty/readme.md");
  std::ofstream(root + "/labels.json") << R"({"ant": "an ant", "zebra": ["zebra", "striped horse"]})";
  auto d = read_labeled_folder(root);
  EXPECT_EQ(d.folders, (std::vector<std::string>{"ant", "zebra"}));
  ASSERT_EQ(d.classes.size(), 2u);
  EXPECT_EQ(d.classes[0].names, std::vector<std::string>{"an ant"});
  EXPECT_EQ(d.classes[1].names, (std::vector<std::string>{"zebra", "striped horse"}));
  ASSERT_EQ(d.images.size(), 3u);
  EXPECT_EQ(d.images[0], root + "/ant/sub/c.webp");
  EXPECT_EQ(d.images[1], root + "/zebra/a.JPG");
  EXPECT_EQ(d.images[2], root + "/zebra/b.png");
  EXPECT_EQ(d.truth, (std::vector<int>{0, 1, 1}));

  auto files = list_image_files({root + "/zebra", root + "/ant/sub/c.webp"});
  EXPECT_EQ(files, (std::vector<std::string>{root + "/zebra/a.JPG", root + "/zebra/b.png", root + "/ant/sub/c.webp"}));
  EXPECT_THROW(list_image_files({root + "/missing"}), Error);
  std::ofstream(root + "/labels.json") << R"([1, 2])";
  EXPECT_THROW(read_labeled_folder(root), Error);
  EXPECT_THROW(read_labeled_folder(root + "/nothing-here"), Error);
}
