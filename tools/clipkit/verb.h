// The clipkit CLI: each verb lives in its own file and registers itself here.
//
//   static const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
//     auto* cmd = app.add_subcommand("tokenize", "Print CLIP token ids");
//     ... cmd->callback([=] { ... });   // throw clipkit::Error on failure
//   });
//
// main() runs the callback and turns any exception into one line on stderr and exit code 1.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "clipkit/model.h"

namespace clipkit::cli {

// --dtype (f32 | f16 | int8), --threads, --arch and --convolution for the verbs that load a model;
// the values land in `options` (checked when the model loads: Model::load names a bad value).
void add_compute_options(CLI::App* cmd, ModelOptions& options);
// --arch NAME alone (ModelOptions::arch), for verbs that take no other compute option.
void add_arch_option(CLI::App* cmd, std::string& arch);

using VerbSetup = std::function<void(CLI::App&)>;
bool register_verb(VerbSetup setup);
std::vector<VerbSetup>& verbs();

// True when stderr is a terminal (progress bars are drawn only then).
bool stderr_is_tty();

// A progress bar on stderr, drawn only when stderr is a terminal: "label  123/456  27.0/s  ETA 12s".
class Progress {
 public:
  Progress(std::string label, int64_t total);
  ~Progress();
  void advance(int64_t n = 1);
  void set_total(int64_t total) { total_ = total; }  // when the total is known only after the work started
  void finish();

 private:
  void draw(bool final);
  std::string label_;
  int64_t total_, done_ = 0;
  double start_, last_draw_ = 0;
  bool enabled_, finished_ = false;
};

// Splits "a,b,c" into floats; throws clipkit::Error naming the option on a malformed list.
std::vector<float> parse_float_list(const std::string& text, const std::string& option, size_t expected);

}  // namespace clipkit::cli
