// The built-in template/label data (data/zeroshot/*), compiled in by data/zeroshot/embed.py.
#pragma once
#include <string_view>

namespace clipkit::zeroshot_data {

std::string_view prompts_json();                      // {dataset: {classes, templates}}
std::string_view imagenet_classes_json();             // 1000 class names
std::string_view imagenet_templates_json();           // 80 templates
std::string_view imagenet_templates_selected_json();  // 7 templates
std::string_view patterns_templates_txt();            // 5 domain templates (template file syntax)
std::string_view patterns_labels_txt();               // 8 pattern labels (label file syntax)

}  // namespace clipkit::zeroshot_data
