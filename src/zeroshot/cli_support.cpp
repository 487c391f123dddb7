#include "zeroshot/cli_support.h"

#include "clipkit/error.h"

namespace clipkit {

std::vector<ClassSpec> resolve_cli_classes(const std::string& labels, const std::string& labels_file,
                                           const std::string& label_set, std::vector<std::string>* default_templates) {
  const int given = !labels.empty() + !labels_file.empty() + !label_set.empty();
  if (given != 1)
    throw Error(ErrorCode::InvalidArgument,
                given == 0 ? "give the classes with one of --labels, --labels-file or --label-set"
                           : "--labels, --labels-file and --label-set are mutually exclusive");
  if (default_templates) *default_templates = builtin_template_set("photo");
  if (!labels.empty()) return parse_label_list(labels);
  if (!labels_file.empty()) return read_label_file(labels_file);
  auto classes = builtin_label_set(label_set);
  if (default_templates) *default_templates = builtin_label_set_templates(label_set);
  return classes;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) {
    if (c == '"') o += '"';
    o += c;
  }
  return o + "\"";
}

}  // namespace clipkit
