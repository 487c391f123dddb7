// clipkit index meta: show, set and unset the metadata (a JSON object) of indexed paths.
//
//   clipkit index meta INDEX_DIR show PATH|#ID
//   clipkit index meta INDEX_DIR set PATH|#ID JSON [--merge]
//   clipkit index meta INDEX_DIR set --file FILE.jsonl [--merge]
//   clipkit index meta INDEX_DIR unset PATH|#ID [FIELD]...
//
// A #ID target means every path of that item. Each command is one committed change.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"

namespace {

using namespace clipkit;

struct Args {
  std::string dir, action, target, file;
  std::vector<std::string> values;
  bool merge = false;
};

// The paths a target names: an indexed path, or "#ID" / "ID" for every path of an item.
std::vector<std::string> target_paths(const Index& idx, const std::string& target) {
  CatalogItem it;
  if (idx.find_path(target, &it)) return {std::filesystem::absolute(target).lexically_normal().string()};
  std::string v = target;
  if (!v.empty() && v[0] == '#') v = v.substr(1);
  if (!v.empty() && v.size() < 19 && v.find_first_not_of("0123456789") == std::string::npos && idx.find_id(std::stoll(v), &it))
    return it.paths;
  throw Error(ErrorCode::NotFound, "'" + target + "' is neither an indexed path nor an item id of " + idx.dir());
}

void run(const Args& a) {
  if (a.action == "show") {
    if (a.target.empty() || !a.values.empty() || !a.file.empty() || a.merge)
      throw cli::UsageError("show takes one PATH or #ID and no other argument");
    Index idx = Index::open(a.dir, Index::Mode::ReadOnly);
    for (const auto& p : target_paths(idx, a.target)) {
      nlohmann::json j = {{"path", p}, {"meta", nlohmann::json::parse(idx.metadata(p))}};
      std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
    return;
  }
  if (a.action == "set") {
    std::vector<std::pair<std::string, std::string>> entries;
    Index idx = Index::open(a.dir);
    if (!a.file.empty()) {
      if (!a.target.empty()) throw cli::UsageError("set takes either --file or PATH JSON, not both");
      std::ifstream in(a.file);
      if (!in) throw Error(ErrorCode::NotFound, "--file " + a.file + ": cannot open it");
      std::string line;
      for (int n = 1; std::getline(in, line); ++n) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const std::string where = "--file " + a.file + " line " + std::to_string(n);
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
          throw Error(ErrorCode::InvalidArgument, where + ": malformed JSON: " + cli::library_message(e.what()));
        }
        if (!j.is_object() || !j.contains("path") || !j["path"].is_string())
          throw Error(ErrorCode::InvalidArgument, where + ": expected a JSON object with a \"path\"");
        const std::string path = j["path"].get<std::string>();
        j.erase("path");
        entries.emplace_back(path, j.dump());
      }
    } else {
      if (a.target.empty() || a.values.size() != 1) throw cli::UsageError("set takes PATH|#ID and one JSON object (or --file FILE.jsonl)");
      for (const auto& p : target_paths(idx, a.target)) entries.emplace_back(p, a.values[0]);
    }
    const int64_t n = idx.set_metadata(entries, a.merge);
    std::cout << (a.merge ? "merged" : "set") << " the metadata of " << n << " path(s)\n";
    return;
  }
  if (a.action == "unset") {
    if (a.target.empty() || !a.file.empty() || a.merge) throw cli::UsageError("unset takes PATH|#ID and optional FIELD names");
    Index idx = Index::open(a.dir);
    const int64_t n = idx.unset_metadata(target_paths(idx, a.target), a.values);
    std::cout << "removed " << (a.values.empty() ? std::string("the metadata") : std::to_string(a.values.size()) + " field(s)")
              << " of " << n << " path(s)\n";
    return;
  }
}

const bool registered = cli::register_late_setup([](CLI::App& app) {
  CLI::App* index = nullptr;
  for (CLI::App* s : app.get_subcommands([](const CLI::App*) { return true; }))
    if (s->get_name() == "index") index = s;
  if (!index) return;
  auto args = std::make_shared<Args>();
  auto* cmd = index->add_subcommand("meta", "Show, set or unset the metadata (a JSON object) of indexed paths");
  cmd->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  cmd->add_option("ACTION", args->action, "show, set or unset")->required()->check(CLI::IsMember({"show", "set", "unset"}));
  cmd->add_option("TARGET", args->target, "An indexed path, or #ID for every path of an item");
  cmd->add_option("VALUES", args->values, "set: the JSON object; unset: the fields to remove (none: all)");
  cmd->add_option("--file", args->file, "set: a JSON Lines file, one object per line with a \"path\" and its fields");
  cmd->add_flag("--merge", args->merge, "set: merge into the present metadata (JSON merge patch: null removes a field)");
  cli::add_examples(cmd, {"clipkit index meta shop.idx set products/a12.jpg '{\"price\": 39.9, \"category\": \"dress\"}'",
                          "clipkit index meta shop.idx unset '#42' price"});
  cmd->callback([args] { run(*args); });
});

}  // namespace
