// Helpers shared by the zero-shot CLI verbs (classify, classifier, eval).
#pragma once
#include <string>
#include <vector>

#include "clipkit/zeroshot.h"

namespace clipkit {

// Classes from exactly one of --labels / --labels-file / --label-set (Error(InvalidArgument)
// otherwise). `default_templates` gets the templates to use when --templates is not given:
// the label set's own for --label-set, else the built-in "photo" set.
std::vector<ClassSpec> resolve_cli_classes(const std::string& labels, const std::string& labels_file,
                                           const std::string& label_set, std::vector<std::string>* default_templates);

// RFC 4180 field quoting (only when needed).
std::string csv_field(const std::string& s);

}  // namespace clipkit
