#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/version.h"
#include "clipkit/verb.h"
#include "clipkit/options.h"
#include "model/ingest.h"

namespace clipkit::cli {

void add_arch_option(CLI::App* cmd, std::string& arch) {
  cmd->add_option("--arch", arch,
                  "open_clip architecture of a checkpoint that does not carry its configuration, e.g. ViT-H-14 "
                  "(`clipkit list archs`): gives the activation, head widths and preprocessing");
}

void add_compute_options(CLI::App* cmd, ModelOptions& options) {
  cmd->add_option("--dtype", options.dtype,
                  "Weights/compute: f32 (default, exact), f16 (half the weight memory, f32 math) or int8 (fastest)");
  cmd->add_option("--threads", options.threads, "Compute threads (0 = one per core)");
  add_arch_option(cmd, options.arch);
  add_text_model_options(cmd, options.text_model, options.tokenizer);
  cmd->add_option("--convolution", options.convolution,
                  "ResNet convolutions: auto (default: Winograd 3x3 on AVX-512, fastest), direct (least memory), "
                  "nhwc or blocked");
}

std::vector<VerbSetup>& verbs() {
  static std::vector<VerbSetup> v;
  return v;
}

bool register_verb(VerbSetup setup) {
  verbs().push_back(std::move(setup));
  return true;
}

bool stderr_is_tty() { return isatty(STDERR_FILENO) == 1; }

static double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), start_(now_s()), enabled_(stderr_is_tty()) {}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t n) {
  done_ += n;
  const double t = now_s();
  if (t - last_draw_ > 0.1 || done_ >= total_) {
    last_draw_ = t;
    draw(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (done_ == 0 && total_ == 0) return;  // nothing was started (e.g. no file found): no empty bar
  draw(true);
}

void Progress::draw(bool final) {
  if (!enabled_) return;
  const double el = now_s() - start_;
  const double rate = el > 0 ? done_ / el : 0.0;
  char buf[256];
  const int width = 30;
  const int filled = total_ > 0 ? static_cast<int>(width * std::min<int64_t>(done_, total_) / total_) : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(width - filled), '.');
  const double eta = rate > 0 && total_ > done_ ? (total_ - done_) / rate : 0.0;
  std::snprintf(buf, sizeof buf, "\r%s [%s] %lld/%lld  %.1f/s  ETA %.0fs ", label_.c_str(), bar.c_str(),
                static_cast<long long>(done_), static_cast<long long>(total_), rate, eta);
  std::fputs(buf, stderr);
  if (final) std::fputs("\n", stderr);
  std::fflush(stderr);
}

std::vector<float> parse_float_list(const std::string& text, const std::string& option, size_t expected) {
  std::vector<float> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t pos = 0;
      out.push_back(std::stof(item, &pos));
      if (pos != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw Error(ErrorCode::InvalidArgument, option + ": '" + item + "' is not a number");
    }
  }
  if (expected && out.size() != expected)
    throw Error(ErrorCode::InvalidArgument, option + " needs " + std::to_string(expected) + " comma-separated numbers, got " +
                                                std::to_string(out.size()));
  return out;
}

}  // namespace clipkit::cli

namespace {

// The verb a command line names ("index add"), from the subcommands CLI11 selected, else from
// the words of argv that name subcommands.
std::string verb_of(const CLI::App& app, int argc, char** argv) {
  std::string verb;
  const CLI::App* cur = &app;
  while (true) {
    const auto selected = cur->get_subcommands();
    if (selected.empty()) break;
    cur = selected.front();
    verb += (verb.empty() ? "" : " ") + cur->get_name();
  }
  if (!verb.empty()) return verb;
  cur = &app;
  for (int i = 1; i < argc; ++i) {
    const std::string w = argv[i];
    if (w.empty() || w[0] == '-') continue;
    const CLI::App* next = nullptr;
    for (const CLI::App* sub : cur->get_subcommands([](const CLI::App*) { return true; }))
      if (sub->get_name() == w) next = sub;
    if (!next) break;
    cur = next;
    verb += (verb.empty() ? "" : " ") + w;
  }
  return verb;
}

// One line: newlines become "; ", trailing blanks go.
std::string one_line(std::string m) {
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ' || m.back() == '\r')) m.pop_back();
  std::string out;
  for (char c : m) {
    if (c == '\n') out += "; ";
    else if (c != '\r') out += c;
  }
  return out;
}

// CLI11's parse errors in clipkit's words.
std::string usage_message(const CLI::App& app, const std::string& verb, const CLI::ParseError& e, int argc, char** argv) {
  std::string m = e.what();
  if (e.get_name() == "RequiredError" && m.find("subcommand") != std::string::npos) {
    if (verb.empty())
      for (int i = 1; i < argc; ++i)
        if (argv[i][0] != '-') return std::string("unknown verb '") + argv[i] + "'";
    const CLI::App* cur = &app;
    std::stringstream ss(verb);
    std::string w;
    while (ss >> w) cur = cur->get_subcommand(w);
    std::vector<std::string> subs;
    for (const CLI::App* sub : cur->get_subcommands([](const CLI::App*) { return true; }))
      if (!sub->get_group().empty()) subs.push_back(sub->get_name());
    std::sort(subs.begin(), subs.end());
    std::string names;
    for (const auto& n : subs) names += (names.empty() ? "" : ", ") + n;
    return "missing subcommand (one of: " + names + ")";
  }
  const std::string convert = "Could not convert: ";
  if (m.rfind(convert, 0) == 0 && m.find(" = ") != std::string::npos) {
    const std::string name = m.substr(convert.size(), m.find(" = ") - convert.size());
    const std::string value = m.substr(m.find(" = ") + 3);
    const CLI::App* cur = &app;
    std::stringstream ss(verb);
    std::string w;
    while (ss >> w) cur = cur->get_subcommand(w);
    std::string kind = "a valid value";
    if (const CLI::Option* o = cur->get_option_no_throw(name)) {
      const std::string t = o->get_type_name();
      if (t == "INT") kind = "an integer";
      else if (t == "UINT") kind = "a non-negative integer";
      else if (t == "FLOAT") kind = "a number";
    }
    return name + ": '" + value + "' is not " + kind;
  }
  const std::string extras = "The following argument was not expected: ";
  const std::string extras2 = "The following arguments were not expected: ";
  if (m.rfind(extras, 0) == 0) m = "unknown option or argument: " + m.substr(extras.size());
  else if (m.rfind(extras2, 0) == 0) m = "unknown options or arguments: " + m.substr(extras2.size());
  else if (m.size() > 1 && std::islower(static_cast<unsigned char>(m[1])))  // "Could not…", not "INDEX_DIR…"
    m[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(m[0])));
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"clipkit — CLIP image/text embeddings, zero-shot classification and image search"};
  app.name("clipkit");
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("clipkit ") + CLIPKIT_VERSION_STRING);
  for (auto& setup : clipkit::cli::verbs()) setup(app);
  clipkit::cli::finish_setup(app);
  clipkit::cli::add_examples(&app, {"clipkit classify --model ViT-B-32.pt --labels 'cat,dog' photos/",
                                    "clipkit help index add"});
  if (argc <= 1) {
    std::cout << app.help();
    return 0;
  }
  auto fail = [&](const std::string& message, int status) {
    const std::string verb = verb_of(app, argc, argv);
    std::cout.flush();
    std::cerr << "clipkit" << (verb.empty() ? "" : " " + verb) << ": " << one_line(clipkit::cli::library_message(message)) << "\n";
    return status;
  };
  clipkit::set_default_warning_handler(
      [&](const std::string& w) { clipkit::cli::warn(verb_of(app, argc, argv), "warning: " + w); });
  // Folders of photos decode into large buffers; a server keeps its memory to itself instead.
  if (verb_of(app, argc, argv) != "serve") clipkit::keep_decode_buffers_in_heap();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);  // --help, --version
    return fail(usage_message(app, verb_of(app, argc, argv), e, argc, argv) + " (see 'clipkit help" +
                    (verb_of(app, argc, argv).empty() ? "" : " " + verb_of(app, argc, argv)) + "')",
                2);
  } catch (const clipkit::cli::UsageError& e) {
    return fail(e.what(), 2);
  } catch (const clipkit::Error& e) {
    return fail(e.what(), 1);
  } catch (const std::bad_alloc&) {
    return fail("out of memory", 1);
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
  return 0;
}
