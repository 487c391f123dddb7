// Template filling (Python str.format semantics), built-in sets and the template/label file formats.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "clipkit/zeroshot.h"
#include "core/mapped_file.h"
#include "support/test_support.h"

using namespace clipkit;

namespace {
std::string write_temp(const std::string& name, const std::string& text) {
  const std::string p = test::temp_dir() + "/" + name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}
ErrorCode code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no Error thrown";
  return ErrorCode::Internal;
}
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
std::vector<std::string> json_strings(const std::string& rel) {
  return nlohmann::json::parse(read_file(test::data_path(rel))).get<std::vector<std::string>>();
}
}  // namespace

TEST(ZeroShotTemplates, FillFollowsStrFormat) {
  // Expected strings are what Python's "template".format("cat") returns.
  EXPECT_EQ(fill_template("a photo of a {}.", "cat"), "a photo of a cat.");
  EXPECT_EQ(fill_template("{}", "tabby cat"), "tabby cat");
  EXPECT_EQ(fill_template("a {0} and {0}", "dog"), "a dog and dog");
  EXPECT_EQ(fill_template("{{literal}} {}", "x"), "{literal} x");
  EXPECT_EQ(fill_template("}}{}{{", "y"), "}y{");
  EXPECT_EQ(fill_template("a zoomed in photo of a \"{}\" traffic sign.", "stop"),
            "a zoomed in photo of a \"stop\" traffic sign.");
  // labels are substituted verbatim, braces included
  EXPECT_EQ(fill_template("a {}.", "{weird}"), "a {weird}.");
}

TEST(ZeroShotTemplates, FillRejectsWhatStrFormatRejects) {
  for (const char* bad : {"a {", "a }", "{} and {}", "{name}", "{1}", "{:>5}", "{0} {}", "a {!r}"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(code_of([&] { fill_template(bad, "cat"); }), ErrorCode::InvalidArgument);
  }
  EXPECT_EQ(code_of([] { check_template("no field here"); }), ErrorCode::InvalidArgument);
  EXPECT_NO_THROW(check_template("just {}"));
}

TEST(ZeroShotTemplates, BuiltinSetsMatchTheReferenceData) {
  EXPECT_EQ(builtin_template_set("none"), std::vector<std::string>{"{}"});
  EXPECT_EQ(builtin_template_set("photo"), std::vector<std::string>{"a photo of a {}."});
  EXPECT_EQ(builtin_template_set("imagenet80"), json_strings("imagenet_templates.json"));
  EXPECT_EQ(builtin_template_set("imagenet7"), json_strings("imagenet_templates_selected.json"));
  EXPECT_EQ(builtin_template_set("imagenet80").size(), 80u);
  EXPECT_EQ(builtin_template_set("patterns").size(), 5u);
  EXPECT_EQ(builtin_template_set("patterns")[0], "a photo of a {} garment.");

  const auto prompts = nlohmann::json::parse(read_file(test::data_path("prompts.json")));
  EXPECT_EQ(builtin_template_set("cifar10"), prompts["CIFAR10"]["templates"].get<std::vector<std::string>>());
  EXPECT_EQ(builtin_template_set("food101"), prompts["Food101"]["templates"].get<std::vector<std::string>>());
  EXPECT_EQ(builtin_template_set("stanford_cars"), prompts["StanfordCars"]["templates"].get<std::vector<std::string>>());
  // every dataset is reachable, by alias and by its original name (any case)
  size_t datasets = 0;
  for (const auto& [key, v] : prompts.items()) {
    SCOPED_TRACE(key);
    EXPECT_EQ(builtin_template_set(key), v["templates"].get<std::vector<std::string>>());
    ++datasets;
  }
  EXPECT_EQ(datasets, 26u);
  EXPECT_EQ(builtin_template_set_names().size(), 5u + 26u);
  // every built-in template has exactly one label field
  for (const auto& name : builtin_template_set_names())
    for (const auto& t : builtin_template_set(name)) EXPECT_NO_THROW(check_template(t, name)) << t;
  EXPECT_EQ(code_of([] { builtin_template_set("nope"); }), ErrorCode::NotFound);
  EXPECT_NE(message_of([] { builtin_template_set("nope"); }).find("imagenet80"), std::string::npos);
}

TEST(ZeroShotTemplates, BuiltinLabelSets) {
  const auto imagenet = builtin_label_set("imagenet1000");
  const auto names = json_strings("imagenet_classes.json");
  ASSERT_EQ(imagenet.size(), 1000u);
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(imagenet[i].names, std::vector<std::string>{names[i]});
  EXPECT_EQ(builtin_label_set_templates("imagenet1000").size(), 80u);

  const auto prompts = nlohmann::json::parse(read_file(test::data_path("prompts.json")));
  const auto fer = builtin_label_set("fer2013");
  ASSERT_EQ(fer.size(), prompts["FacialEmotionRecognition2013"]["classes"].size());
  for (size_t i = 0; i < fer.size(); ++i)
    EXPECT_EQ(fer[i].names, prompts["FacialEmotionRecognition2013"]["classes"][i].get<std::vector<std::string>>());
  EXPECT_EQ(fer[5].names, (std::vector<std::string>{"surprised", "shocked", "spooked"}));  // synonym lists
  const auto cifar = builtin_label_set("CIFAR10");
  ASSERT_EQ(cifar.size(), 10u);
  EXPECT_EQ(cifar[0].label(), "airplane");
  EXPECT_EQ(builtin_label_set_templates("cifar10").size(), 18u);
  const auto pats = builtin_label_set("patterns");
  ASSERT_EQ(pats.size(), 8u);
  EXPECT_EQ(pats[1].label(), "polka dot");
  EXPECT_EQ(pats[6].label(), "leopard print");
  EXPECT_EQ(builtin_label_set_names().size(), 2u + 26u);
  EXPECT_EQ(code_of([] { builtin_label_set("nope"); }), ErrorCode::NotFound);
}

TEST(ZeroShotTemplates, TemplateFile) {
  const auto p = write_temp("t.txt", "# my templates\n\na photo of a {}.\r\n  a {} in the wild.  \n# end\n{{x}} {}\n");
  EXPECT_EQ(read_template_file(p), (std::vector<std::string>{"a photo of a {}.", "a {} in the wild.", "{{x}} {}"}));
  EXPECT_EQ(resolve_templates(p), read_template_file(p));
  EXPECT_EQ(resolve_templates("IMAGENET7"), builtin_template_set("imagenet7"));

  const auto bad = write_temp("bad.txt", "a photo of a {}.\n\nno label here\n");
  EXPECT_EQ(code_of([&] { read_template_file(bad); }), ErrorCode::Format);
  const std::string msg = message_of([&] { read_template_file(bad); });
  EXPECT_NE(msg.find(bad + ":3"), std::string::npos) << msg;  // names the file and the line
  const auto brace = write_temp("brace.txt", "ok {}\nbroken { here {}\n");
  EXPECT_NE(message_of([&] { read_template_file(brace); }).find(brace + ":2"), std::string::npos);
  const auto empty = write_temp("empty.txt", "# nothing\n\n");
  EXPECT_EQ(code_of([&] { read_template_file(empty); }), ErrorCode::Format);
  EXPECT_EQ(code_of([] { resolve_templates("missing-templates.txt"); }), ErrorCode::NotFound);
  EXPECT_EQ(code_of([] { resolve_templates("no_such_set"); }), ErrorCode::NotFound);
}

TEST(ZeroShotTemplates, LabelListsAndFiles) {
  auto l = parse_label_list("cat, dog|puppy ,bird");
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(l[0].names, std::vector<std::string>{"cat"});
  EXPECT_EQ(l[1].names, (std::vector<std::string>{"dog", "puppy"}));
  EXPECT_EQ(l[2].label(), "bird");
  EXPECT_EQ(code_of([] { parse_label_list("cat,,dog"); }), ErrorCode::InvalidArgument);
  EXPECT_EQ(code_of([] { parse_label_list("cat|"); }), ErrorCode::InvalidArgument);

  const auto txt = write_temp("labels.txt", "# classes\ntabby cat\n\ncoffee mug|mug\r\n");
  auto t = read_label_file(txt);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[1].names, (std::vector<std::string>{"coffee mug", "mug"}));

  const auto js = write_temp("labels.json",
                             R"(["cat", ["dog", "puppy"], {"name": "car", "templates": ["a photo of my {}."]},
                                 {"names": ["sun", "star"]}])");
  auto j = read_label_file(js);
  ASSERT_EQ(j.size(), 4u);
  EXPECT_EQ(j[1].names, (std::vector<std::string>{"dog", "puppy"}));
  EXPECT_EQ(j[2].templates, std::vector<std::string>{"a photo of my {}."});
  EXPECT_EQ(j[3].names, (std::vector<std::string>{"sun", "star"}));

  const auto obj = write_temp("per-label.json", R"({"cat": ["a {} sleeping."], "dog": null})");
  auto o = read_label_file(obj);
  ASSERT_EQ(o.size(), 2u);
  EXPECT_EQ(o[0].templates, std::vector<std::string>{"a {} sleeping."});
  EXPECT_TRUE(o[1].templates.empty());

  // malformed files: Format errors naming the file and the place
  const auto bad_json = write_temp("bad.json", "[\"cat\", ");
  EXPECT_EQ(code_of([&] { read_label_file(bad_json); }), ErrorCode::Format);
  EXPECT_NE(message_of([&] { read_label_file(bad_json); }).find(bad_json), std::string::npos);
  const auto bad_item = write_temp("item.json", R"(["cat", 3])");
  EXPECT_NE(message_of([&] { read_label_file(bad_item); }).find("item 1"), std::string::npos);
  const auto bad_tmpl = write_temp("tmpl.json", R"([{"name": "cat", "templates": ["no field"]}])");
  EXPECT_EQ(code_of([&] { read_label_file(bad_tmpl); }), ErrorCode::Format);
  const auto bad_line = write_temp("syn.txt", "cat\ndog||puppy\n");
  EXPECT_NE(message_of([&] { read_label_file(bad_line); }).find(bad_line + ":2"), std::string::npos);
  const auto none = write_temp("none.txt", "\n# only comments\n");
  EXPECT_EQ(code_of([&] { read_label_file(none); }), ErrorCode::Format);
  EXPECT_EQ(code_of([&] { read_label_file(test::temp_dir() + "/absent.txt"); }), ErrorCode::NotFound);
}

TEST(ZeroShotTemplates, ClassPromptsOrder) {
  ClassSpec c{{"dog", "puppy"}, {}};
  EXPECT_EQ(class_prompts(c, {"a {}.", "my {}"}), (std::vector<std::string>{"a dog.", "my dog", "a puppy.", "my puppy"}));
  c.templates = {"only {}"};
  EXPECT_EQ(class_prompts(c, {"a {}."}), (std::vector<std::string>{"only dog", "only puppy"}));
}

TEST(LabelFiles, DeeplyNestedJsonIsAFormatError) {
  // a label file of 100,000 nested arrays: refused at the nesting limit, naming the file
  const std::string deep = std::string(100000, '[') + "\"cat\"" + std::string(100000, ']');
  try {
    parse_label_text(deep, "labels.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format);
    EXPECT_NE(std::string(e.what()).find("labels.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nested more than 64 levels"), std::string::npos) << e.what();
  }
  // 64 levels are still read (as far as the label format goes: an error about the content)
  const std::string ok = "[" + std::string(63, '[') + "\"cat\"" + std::string(63, ']') + "]";
  try {
    parse_label_text(ok, "labels.json");
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find("nested more than"), std::string::npos) << e.what();
  }
}
