#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "clipkit/error.h"
#include "clipkit/version.h"
#include "clipkit/verb.h"

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

int main(int argc, char** argv) {
  CLI::App app{"clipkit — CLIP image/text embeddings, zero-shot classification and image search"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("clipkit ") + CLIPKIT_VERSION_STRING);
  for (auto& setup : clipkit::cli::verbs()) setup(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const clipkit::Error& e) {
    std::cerr << "clipkit: error: " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "clipkit: error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "clipkit: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
