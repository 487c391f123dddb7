// libFuzzer target: label and template files as `clipkit classify --labels/--templates` read them.
// The first byte picks the parser: label text (plain lines or JSON), template text, a label list,
// or one template filled with a label; the rest is the text. Bad input is an Error, nothing else.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "clipkit/error.h"
#include "clipkit/zeroshot.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 4) {
      case 0: {
        const auto classes = clipkit::parse_label_text(text, "labels.json");
        for (const auto& c : classes) {
          if (c.names.empty()) __builtin_trap();
          (void)clipkit::class_prompts(c, {"a photo of a {}."});
        }
        break;
      }
      case 1:
        for (const auto& t : clipkit::parse_template_text(text, "templates.txt")) (void)clipkit::fill_template(t, "cat");
        break;
      case 2:
        (void)clipkit::parse_label_list(text);
        break;
      default: {
        const size_t cut = text.find('\n');
        const std::string_view tmpl = text.substr(0, cut);
        const std::string_view label = cut == std::string_view::npos ? std::string_view() : text.substr(cut + 1);
        (void)clipkit::fill_template(tmpl, label);
        clipkit::check_template(tmpl, "template");
      }
    }
  } catch (const clipkit::Error&) {
  }
  return 0;
}
