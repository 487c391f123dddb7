// Shared helpers for the test suites.
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"

namespace clipkit::test {

// Path of a file under tests/data.
std::string data_path(const std::string& relative);
// A fresh empty temporary directory, removed at process exit.
std::string temp_dir();

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
// Runs the built `clipkit` CLI with the given arguments (no shell), capturing stdout/stderr.
CommandResult run_cli(const std::vector<std::string>& args, const std::string& stdin_data = "");

// The non-empty lines of a command's output, in order.
std::vector<std::string> nonempty_lines(const std::string& text);
// How many lines of a command's stderr are not warnings ("clipkit VERB: warning: ..."). The tiny
// fixtures state neither their activation nor their head widths, so every load of one warns once.
long non_warning_lines(const std::string& err);

// Comparison metrics used by the golden tests.
double cosine(const float* a, const float* b, size_t n);
double max_abs_diff(const float* a, const float* b, size_t n);
double max_abs(const float* a, size_t n);

}  // namespace clipkit::test
