// clipkit dedup: list groups of near-duplicate images in an index.
//
//   clipkit dedup INDEX_DIR [--threshold 0.95] [--format table|json|csv]
//
// A group holds items whose cosine similarity chains above the threshold (single linkage), and
// every content stored under several paths (exact duplicates). Scores are cosines with the group's
// first item. Uses the stored vectors: no model needed.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"

namespace {

using namespace clipkit;

struct Args {
  std::string dir, format = "table";
  float threshold = 0.95f;
};

void run(const Args& a) {
  Index idx = Index::open(a.dir, Index::Mode::ReadOnly);
  for (const auto& n : idx.open_notes()) cli::warn("dedup", "note: " + n);
  const auto groups = idx.dedup(a.threshold);
  int g = 0;
  std::vector<std::vector<std::string>> csv = {{"group", "id", "score", "path"}};
  for (const auto& grp : groups) {
    ++g;
    if (a.format == "csv") {
      for (size_t i = 0; i < grp.ids.size(); ++i)
        for (const auto& p : grp.paths[i]) {
          char score[32];
          std::snprintf(score, sizeof score, "%.6g", static_cast<double>(grp.scores[i]));
          csv.push_back({std::to_string(g), std::to_string(grp.ids[i]), score, p});
        }
      continue;
    }
    if (a.format == "json") {
      nlohmann::json items = nlohmann::json::array();
      for (size_t i = 0; i < grp.ids.size(); ++i) items.push_back({{"id", grp.ids[i]}, {"score", grp.scores[i]}, {"paths", grp.paths[i]}});
      nlohmann::json line = {{"group", g}, {"items", items}};
      std::cout << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      continue;
    }
    size_t npaths = 0;
    for (const auto& p : grp.paths) npaths += p.size();
    std::printf("group %d: %zu item(s), %zu path(s)\n", g, grp.ids.size(), npaths);
    for (size_t i = 0; i < grp.ids.size(); ++i)
      for (size_t j = 0; j < grp.paths[i].size(); ++j)
        std::printf("  %7.4f  %6lld  %s%s\n", static_cast<double>(grp.scores[i]), static_cast<long long>(grp.ids[i]),
                    grp.paths[i][j].c_str(), j > 0 ? "  (same content)" : "");
  }
  if (a.format == "csv") cli::print_csv(csv);
  if (a.format == "table" && groups.empty()) std::printf("no duplicates at threshold %.4g\n", static_cast<double>(a.threshold));
}

const bool registered = cli::register_verb([](CLI::App& app) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("dedup", "List near-duplicate image groups in an index");
  cmd->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  cmd->add_option("--threshold", args->threshold, "Cosine similarity at or above which images are duplicates (default 0.95)");
  cli::add_format(cmd, args->format, {"table", "json", "csv"});
  cli::add_examples(cmd, {"clipkit dedup photos.idx", "clipkit dedup photos.idx --threshold 0.9 --format csv > duplicates.csv"});
  cmd->callback([args] { run(*args); });
});

}  // namespace
