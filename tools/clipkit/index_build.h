// `clipkit index build`: registered under `clipkit index` by index.cpp.
#pragma once
#include <CLI/CLI.hpp>

namespace clipkit::cli {
void add_index_build(CLI::App* index);
}
