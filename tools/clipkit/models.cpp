// clipkit models list [--format table|json]
// clipkit models download NAME [--dir D]
// Lists the known checkpoints (OpenAI's official ones and the open_clip pretrained models, named
// ARCH/TAG), or downloads one (resumable, SHA-256 verified, atomic). open_clip models go to
// $CLIPKIT_HOME/openclip/ARCH/TAG/ with an open_clip_config.json beside the weights, where
// `--model ARCH/TAG` finds them.
// The hidden option --base-url (or $CLIPKIT_DOWNLOAD_BASE_URL) replaces scheme://host of the URLs.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/lists.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "io/download.h"
#include "io/openclip_pretrained.h"
#include "model/openclip_download.h"

namespace {

using clipkit::OpenClipPretrained;

std::string source_of(const clipkit::ModelSource& m) {
  if (m.kind == "hf") return "https://huggingface.co/" + m.name;
  return m.files.at(0).url;
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string top1_text(const OpenClipPretrained& m) {
  return m.imagenet_top1 < 0 ? "-" : fixed(100.0 * m.imagenet_top1, 2) + "%";
}

std::string preprocess_text(const OpenClipPretrained& m) {
  std::string s = m.resize_mode + " " + m.interpolation;
  if (m.mean[0] == 0.5 && m.mean[1] == 0.5 && m.mean[2] == 0.5 && m.std[0] == 0.5 && m.std[1] == 0.5 && m.std[2] == 0.5)
    s += " mean=std=0.5";
  else
    s += " openai-mean/std";
  return s;
}

// Columns padded to the widest cell, two spaces apart.
std::string format_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w;
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], r[i].size());
    }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) line += r[i] + (i + 1 < r.size() ? std::string(w[i] - r[i].size() + 2, ' ') : "");
    out += line + "\n";
  }
  return out;
}

void print_list_table() {
  std::vector<std::vector<std::string>> rows = {{"NAME", "KIND", "SOURCE"}};
  for (const auto& m : clipkit::known_models()) rows.push_back({m.name, m.kind, source_of(m)});
  std::string out = format_table(rows);
  out += "\nOpenAI files are verified against the SHA-256 in their URL; Hugging Face files have no published\n"
         "checksum, so the computed one is reported.\n\n";
  rows = {{"OPEN_CLIP NAME", "IMAGENET", "PARAMS", "PREPROCESS", "REPOSITORY", "FILE"}};
  for (const auto& m : clipkit::openclip_pretrained())
    rows.push_back({m.name(), top1_text(m), fixed(m.params_millions, 1) + "M", preprocess_text(m), m.hf_repo, m.file});
  out += format_table(rows);
  out += "\nIMAGENET: zero-shot ImageNet-1k top-1 published by open_clip. open_clip models are fetched from\n"
         "https://huggingface.co/REPOSITORY/resolve/main/FILE into $CLIPKIT_HOME/openclip/NAME, checked against\n"
         "the SHA-256 the hub publishes; use them with --model NAME.\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

void print_list_json() {
  std::string out;
  for (const auto& m : clipkit::known_models()) {
    nlohmann::json files = nlohmann::json::array();
    for (const auto& f : m.files) files.push_back({{"name", f.name}, {"url", f.url}, {"sha256", f.sha256}});
    out += nlohmann::json{{"name", m.name}, {"kind", m.kind}, {"source", source_of(m)}, {"files", files}}.dump() + "\n";
  }
  for (const auto& m : clipkit::openclip_pretrained()) {
    nlohmann::json j = {{"name", m.name()},
                        {"kind", "openclip"},
                        {"arch", m.arch},
                        {"tag", m.tag},
                        {"hf_repo", m.hf_repo},
                        {"file", m.file},
                        {"url", m.url()},
                        {"mean", m.mean},
                        {"std", m.std},
                        {"interpolation", m.interpolation},
                        {"resize_mode", m.resize_mode},
                        {"fill_color", m.fill_color},
                        {"imagenet_top1", m.imagenet_top1 < 0 ? nlohmann::json(nullptr) : nlohmann::json(m.imagenet_top1)},
                        {"params_millions", m.params_millions}};
    out += j.dump() + "\n";
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

[[noreturn]] void unknown_model(const std::string& name) {
  // open_clip names get a precise hint (wrong activation variant, unknown tag).
  (void)clipkit::resolve_openclip_model(name);  // throws for ARCH/TAG of a listed architecture
  std::string names;
  for (const auto& k : clipkit::known_models()) names += (names.empty() ? "" : ", ") + k.name;
  throw clipkit::Error(clipkit::ErrorCode::NotFound, "unknown model '" + name + "' (known: " + names +
                                                         " and the open_clip ARCH/TAG names of `clipkit models list`)");
}

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand("models", "List or download CLIP checkpoints (OpenAI and open_clip)");
  cmd->require_subcommand(1);
  auto format = std::make_shared<std::string>("table");
  auto* list = cmd->add_subcommand("list", "Print the known models: names, sources, and for open_clip models the "
                                           "preprocessing and published ImageNet accuracy");
  clipkit::cli::add_format(list, *format, {"table", "json", "csv"});
  clipkit::cli::add_examples(list, {"clipkit models list", "clipkit models list --format json"});
  list->callback([format] {
    if (*format == "table") print_list_table();
    else if (*format == "json") print_list_json();
    else clipkit::cli::print_models(*format);
  });
  clipkit::cli::add_examples(cmd, {"clipkit models list", "clipkit models download ViT-H-14/laion2b_s32b_b79k"});

  struct Opts {
    std::string name, dir, base_url;
  };
  auto opts = std::make_shared<Opts>();
  auto* dl = cmd->add_subcommand("download", "Download a model (resumable, SHA-256 verified)");
  dl->add_option("name", opts->name,
                 "Model name from `clipkit models list` (e.g. ViT-B/32, openai/clip-vit-base-patch32, "
                 "ViT-H-14/laion2b_s32b_b79k)")
      ->required();
  dl->add_option("--dir", opts->dir,
                 "Destination folder (default: $CLIPKIT_HOME, else $XDG_CACHE_HOME/clipkit or ~/.cache/clipkit; "
                 "open_clip models go to DIR/openclip/ARCH/TAG)");
  dl->add_option("--base-url", opts->base_url, "Replace scheme://host of the download URLs (mirrors, tests)")
      ->group("");  // hidden
  clipkit::cli::add_examples(dl, {"clipkit models download ViT-B/32", "clipkit models download openai/clip-vit-base-patch32 --dir models/"});
  dl->callback([opts] {
    const std::string dir = opts->dir.empty() ? clipkit::clipkit_home() : opts->dir;
    const clipkit::ModelSource* m = clipkit::find_model(opts->name);
    const OpenClipPretrained* oc = m ? nullptr : clipkit::find_openclip_pretrained(opts->name);
    if (!m && !oc) unknown_model(opts->name);
    clipkit::DownloadOptions o;
    o.base_url = opts->base_url;
    std::unique_ptr<clipkit::cli::Progress> bar;
    std::string bar_file;
    int64_t shown = 0;
    o.progress = [&](const std::string& file, uint64_t done, uint64_t total) {
      if (!clipkit::cli::stderr_is_tty()) return;
      if (!bar || bar_file != file) {
        // The bar counts from this first report on: bytes already on disk (a resumed transfer)
        // and the first chunk, whose transfer time the bar did not see, would inflate the rate.
        if (bar) bar->finish();
        bar = std::make_unique<clipkit::cli::Progress>(file + " (bytes)",
                                                       static_cast<int64_t>(total) - static_cast<int64_t>(done));
        bar_file = file;
        shown = static_cast<int64_t>(done);
      }
      bar->advance(static_cast<int64_t>(done) - shown);
      shown = static_cast<int64_t>(done);
    };
    std::vector<clipkit::DownloadResult> results;
    std::string tail;
    if (m) {
      results = clipkit::download_model(m->name, dir, o);
      tail = "model: " + clipkit::model_path(*m, dir) + "\n";
    } else {
      const auto r = clipkit::download_openclip_model(*oc, o, dir);
      results.push_back(r.weights);
      tail = "config: " + r.config_path + "\nmodel: " + oc->name() + " (" + r.folder + ")\n";
    }
    if (bar) bar->finish();
    std::string out;
    for (const auto& r : results) {
      out += r.path + "  " + std::to_string(r.bytes) + " bytes  sha256 " + r.sha256;
      if (r.already_present) out += r.verified ? "  (already present, verified)" : "  (already present)";
      else if (r.verified) out += r.resumed_from ? "  (resumed, verified)" : "  (verified)";
      else out += "  (no published checksum; computed)";
      out += "\n";
    }
    out += tail;
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  });
});

}  // namespace
