// clipkit dedup: list groups of near-duplicate images in an index.
//
//   clipkit dedup INDEX_DIR [--threshold 0.95] [--format table|json]
//
// A group holds items whose cosine similarity chains above the threshold (single linkage), and
// every content stored under several paths (exact duplicates). Scores are cosines with the group's
// first item. Uses the stored vectors: no model needed.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "clipkit/verb.h"

namespace {

using namespace clipkit;

struct Args {
  std::string dir, format = "table";
  float threshold = 0.95f;
};

void run(const Args& a) {
  if (a.format != "table" && a.format != "json") throw Error(ErrorCode::InvalidArgument, "--format must be table or json, not '" + a.format + "'");
  Index idx = Index::open(a.dir, Index::Mode::ReadOnly);
  for (const auto& n : idx.open_notes()) std::cerr << "clipkit: note: " << n << "\n";
  const auto groups = idx.dedup(a.threshold);
  int g = 0;
  for (const auto& grp : groups) {
    ++g;
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
  if (a.format == "table" && groups.empty()) std::printf("no duplicates at threshold %.4g\n", static_cast<double>(a.threshold));
}

const bool registered = cli::register_verb([](CLI::App& app) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("dedup", "List near-duplicate image groups in an index");
  cmd->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  cmd->add_option("--threshold", args->threshold, "Cosine similarity at or above which images are duplicates (default 0.95)");
  cmd->add_option("--format", args->format, "table or json (JSON lines)");
  cmd->callback([args] { run(*args); });
});

}  // namespace
