// Printing of the CLI's built-in lists (shared by `clipkit list ...` and `clipkit models list`).
#pragma once
#include <string>

namespace clipkit::cli {

// The models `clipkit models download` knows: name, kind, source; format table, json or csv.
void print_models(const std::string& format);
// The open_clip architecture names --arch accepts (tools/clipkit/list.cpp).
void list_archs(const std::string& format);

}  // namespace clipkit::cli
