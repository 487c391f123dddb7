// clipkit list archs | label-sets | template-sets | models | index-kinds [--format table|json|csv]
// The built-in names other verbs accept. The subcommands join the `list` verb (created here when
// no other file created it first).
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clipkit/lists.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "clipkit/zeroshot.h"
#include "io/download.h"

namespace clipkit::cli {

namespace {

using Rows = std::vector<std::vector<std::string>>;

// rows[0] is the header; json writes one object per row with the header's names as keys
// (`numeric` columns as numbers).
void print_rows(const Rows& rows, const std::string& format, const std::vector<bool>& numeric = {}) {
  if (format == "table") return print_table(rows);
  if (format == "csv") return print_csv(rows);
  std::string out;
  for (size_t r = 1; r < rows.size(); ++r) {
    nlohmann::ordered_json j;
    for (size_t c = 0; c < rows[r].size(); ++c) {
      if (c < numeric.size() && numeric[c]) j[rows[0][c]] = std::stoll(rows[r][c]);
      else j[rows[0][c]] = rows[r][c];
    }
    out += j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

std::string source_of(const ModelSource& m) {
  if (m.kind == "hf") return "https://huggingface.co/" + m.name;
  return m.files.empty() ? "" : m.files.front().url;
}

void list_label_sets(const std::string& format) {
  Rows rows = {{"name", "classes", "templates"}};
  for (const auto& n : builtin_label_set_names())
    rows.push_back({n, std::to_string(builtin_label_set(n).size()), std::to_string(builtin_label_set_templates(n).size())});
  print_rows(rows, format, {false, true, true});
}

void list_template_sets(const std::string& format) {
  Rows rows = {{"name", "templates", "first"}};
  for (const auto& n : builtin_template_set_names()) {
    const auto t = builtin_template_set(n);
    rows.push_back({n, std::to_string(t.size()), t.empty() ? "" : t.front()});
  }
  print_rows(rows, format, {false, true, false});
}

void list_index_kinds(const std::string& format) {
  const Rows rows = {
      {"kind", "structure", "trained", "search"},
      {"flat", "Flat", "no", "exact (the default)"},
      {"hnsw", "HNSW32", "no", "approximate: graph (--ef)"},
      {"ivfpq", "IVF<n>,PQ<dim/8>", "yes", "approximate: inverted lists and product quantisation (--nprobe)"},
      {"FACTORY", "any faiss factory string, e.g. IVF256,PQ32", "if the structure needs it", "as the structure"}};
  print_rows(rows, format);
}

const bool registered = register_late_setup([](CLI::App& app) {
  CLI::App* list = nullptr;
  for (CLI::App* s : app.get_subcommands([](const CLI::App*) { return true; }))
    if (s->get_name() == "list") list = s;
  if (!list) {
    list = app.add_subcommand("list", "List the built-in names other verbs accept");
    list->require_subcommand(1);
  }
  struct Entry {
    const char* name;
    const char* description;
    void (*print)(const std::string&);
    const char* example;
  };
  const Entry entries[] = {
      {"archs", "open_clip architecture names (--arch): tower, activation, head widths", list_archs,
       "clipkit list archs --format json"},
      {"label-sets", "Built-in label sets (classify --label-set): name, classes, default templates", list_label_sets,
       "clipkit list label-sets"},
      {"template-sets", "Built-in template sets (--templates): name, templates, first template", list_template_sets,
       "clipkit list template-sets --format csv"},
      {"models", "Models `clipkit models download` knows: name, kind, source", print_models, "clipkit list models --format json"},
      {"index-kinds", "Index kinds (index create --kind): faiss structure, training, search", list_index_kinds,
       "clipkit list index-kinds"},
  };
  std::vector<std::string> examples;
  for (const Entry& e : entries) {
    auto format = std::make_shared<std::string>("table");
    auto* cmd = list->add_subcommand(e.name, e.description);
    add_format(cmd, *format, {"table", "json", "csv"});
    add_examples(cmd, {e.example});
    auto print = e.print;
    cmd->callback([format, print] { print(*format); });
    examples.push_back(e.example);
  }
  if (list->get_footer().empty()) add_examples(list, {examples[1], examples[0]});
});

}  // namespace

void print_models(const std::string& format) {
  Rows rows = {{"name", "kind", "source"}};
  for (const auto& m : known_models()) rows.push_back({m.name, m.kind, source_of(m)});
  print_rows(rows, format);
}

}  // namespace clipkit::cli
