// clipkit models list
// clipkit models download NAME [--dir D]
// Lists the known official checkpoints, or downloads one (resumable, SHA-256 verified, atomic).
// The hidden option --base-url (or $CLIPKIT_DOWNLOAD_BASE_URL) replaces scheme://host of the URLs.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "clipkit/error.h"
#include "clipkit/lists.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "io/download.h"

namespace {

std::string default_dir() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/clipkit";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/clipkit";
  return "clipkit-models";
}

std::string source_of(const clipkit::ModelSource& m) {
  if (m.kind == "hf") return "https://huggingface.co/" + m.name;
  return m.files.at(0).url;
}

void print_list() {
  const auto& models = clipkit::known_models();
  size_t w_name = 4, w_kind = 4;
  for (const auto& m : models) {
    w_name = std::max(w_name, m.name.size());
    w_kind = std::max(w_kind, m.kind.size());
  }
  std::string out;
  auto row = [&](const std::string& a, const std::string& b, const std::string& c) {
    out += a + std::string(w_name - a.size() + 2, ' ') + b + std::string(w_kind - b.size() + 2, ' ') + c + "\n";
  };
  row("NAME", "KIND", "SOURCE");
  for (const auto& m : models) row(m.name, m.kind, source_of(m));
  out += "\nOpenAI files are verified against the SHA-256 in their URL; Hugging Face files have no published\n"
         "checksum, so the computed one is reported.\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand("models", "List or download official CLIP checkpoints");
  cmd->require_subcommand(1);
  auto* list = cmd->add_subcommand("list", "Print the known model names, kinds and source URLs");
  auto list_format = std::make_shared<std::string>("table");
  clipkit::cli::add_format(list, *list_format, {"table", "json", "csv"});
  clipkit::cli::add_examples(list, {"clipkit models list", "clipkit models list --format json"});
  list->callback([list_format] { *list_format == "table" ? print_list() : clipkit::cli::print_models(*list_format); });
  clipkit::cli::add_examples(cmd, {"clipkit models list", "clipkit models download ViT-B/32"});

  struct Opts {
    std::string name, dir, base_url;
  };
  auto opts = std::make_shared<Opts>();
  auto* dl = cmd->add_subcommand("download", "Download a model (resumable, SHA-256 verified)");
  dl->add_option("name", opts->name, "Model name from `clipkit models list` (e.g. ViT-B/32, openai/clip-vit-base-patch32)")
      ->required();
  dl->add_option("--dir", opts->dir, "Destination folder (default: $XDG_CACHE_HOME/clipkit or ~/.cache/clipkit)");
  dl->add_option("--base-url", opts->base_url, "Replace scheme://host of the download URLs (mirrors, tests)")
      ->group("");  // hidden
  clipkit::cli::add_examples(dl, {"clipkit models download ViT-B/32", "clipkit models download openai/clip-vit-base-patch32 --dir models/"});
  dl->callback([opts] {
    const std::string dir = opts->dir.empty() ? default_dir() : opts->dir;
    const clipkit::ModelSource* m = clipkit::find_model(opts->name);
    if (!m) {
      std::string names;
      for (const auto& k : clipkit::known_models()) names += (names.empty() ? "" : ", ") + k.name;
      throw clipkit::Error(clipkit::ErrorCode::NotFound,
                           "unknown model '" + opts->name + "' (known: " + names + "; see `clipkit models list`)");
    }
    clipkit::DownloadOptions o;
    o.base_url = opts->base_url;
    std::unique_ptr<clipkit::cli::Progress> bar;
    std::string bar_file;
    int64_t shown = 0;
    o.progress = [&](const std::string& file, uint64_t done, uint64_t total) {
      if (!clipkit::cli::stderr_is_tty()) return;
      if (!bar || bar_file != file) {
        if (bar) bar->finish();
        bar = std::make_unique<clipkit::cli::Progress>(file + " (bytes)", static_cast<int64_t>(total));
        bar_file = file;
        shown = 0;
      }
      bar->advance(static_cast<int64_t>(done) - shown);
      shown = static_cast<int64_t>(done);
    };
    const auto results = clipkit::download_model(m->name, dir, o);
    if (bar) bar->finish();
    std::string out;
    for (const auto& r : results) {
      out += r.path + "  " + std::to_string(r.bytes) + " bytes  sha256 " + r.sha256;
      if (r.already_present) out += r.verified ? "  (already present, verified)" : "  (already present)";
      else if (r.verified) out += r.resumed_from ? "  (resumed, verified)" : "  (verified)";
      else out += "  (no published checksum; computed)";
      out += "\n";
    }
    out += "model: " + clipkit::model_path(*m, dir) + "\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  });
});

}  // namespace
