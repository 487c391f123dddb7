// clipkit help [VERB...]: the overview or one verb's help; `clipkit help --markdown` writes the
// reference of every verb (docs/cli.md is generated with it: scripts/gen-cli-doc.sh).
// clipkit completion bash: a bash completion script built from the same command tree.
#include <algorithm>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"

namespace {

using clipkit::cli::UsageError;

std::vector<const CLI::App*> visible_subcommands(const CLI::App* app) {
  std::vector<const CLI::App*> out;
  for (const CLI::App* s : app->get_subcommands([](const CLI::App* c) { return !c->get_group().empty(); })) out.push_back(s);
  std::sort(out.begin(), out.end(), [](const CLI::App* a, const CLI::App* b) { return a->get_name() < b->get_name(); });
  return out;
}

const CLI::App* find_child(const CLI::App* app, const std::string& name) {
  for (const CLI::App* s : app->get_subcommands([](const CLI::App*) { return true; }))
    if (s->get_name() == name) return s;
  return nullptr;
}

std::vector<const CLI::Option*> visible_options(const CLI::App* app) {
  std::vector<const CLI::Option*> out;
  for (const CLI::Option* o : app->get_options([](const CLI::Option* o) { return !o->get_group().empty(); })) out.push_back(o);
  return out;
}

std::string option_names(const CLI::Option* o) {
  if (o->get_lnames().empty() && o->get_snames().empty()) return o->get_name(true);
  std::string s;
  for (const auto& l : o->get_lnames()) s += (s.empty() ? "" : ", ") + std::string("--") + l;
  for (const auto& n : o->get_snames()) s += (s.empty() ? "" : ", ") + std::string("-") + n;
  return s;
}

std::string md_escape(std::string s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else out += c;
  }
  return out;
}

// Footer "Examples:" lines, without the heading.
std::vector<std::string> examples_of(const CLI::App* app) {
  std::vector<std::string> out;
  std::stringstream ss(app->get_footer());
  std::string line;
  bool in = false;
  while (std::getline(ss, line)) {
    if (line == "Examples:") in = true;
    else if (in && line.size() > 2) out.push_back(line.substr(2));
  }
  return out;
}

void markdown_verb(std::string& out, const CLI::App* app, const std::string& path) {
  out += "### `" + path + "`\n\n" + app->get_description() + "\n\n";
  const auto subs = visible_subcommands(app);
  if (!subs.empty()) {
    out += "Subcommands: ";
    for (size_t i = 0; i < subs.size(); ++i) out += (i ? ", " : "") + std::string("`") + subs[i]->get_name() + "`";
    out += ".\n\n";
  }
  const auto opts = visible_options(app);
  bool any = false;
  for (const CLI::Option* o : opts)
    if (option_names(o) != "--help, -h") any = true;
  if (any) {
    out += "| argument | value | meaning |\n|---|---|---|\n";
    for (const CLI::Option* o : opts) {
      const std::string names = option_names(o);
      if (names == "--help, -h") continue;
      std::string value = o->get_type_size() == 0 ? "" : o->get_type_name();
      if (o->get_expected_max() > 1) value += " ...";
      std::string meaning = o->get_description();
      if (o->get_required()) meaning += " (required)";
      else if (!o->get_default_str().empty() && o->get_type_size() != 0) meaning += " (default " + o->get_default_str() + ")";
      out += "| `" + names + "` | " + md_escape(value) + " | " + md_escape(meaning) + " |\n";
    }
    out += "\n";
  }
  const auto ex = examples_of(app);
  if (!ex.empty()) {
    out += "```sh\n";
    for (const auto& e : ex) out += e + "\n";
    out += "```\n\n";
  }
  for (const CLI::App* s : subs) markdown_verb(out, s, path + " " + s->get_name());
}

std::string app_path(const CLI::App* app) {
  std::string p = app->get_name();
  for (const CLI::App* a = app->get_parent(); a; a = a->get_parent()) p = a->get_name() + " " + p;
  return p;
}

const char* kConventions = R"(# The clipkit command line

This reference is generated from the CLI's own help (`clipkit help --markdown`); `clipkit help VERB`
and `clipkit VERB --help` print the same text for one verb.

## Conventions

- **One spelling per meaning.** `--batch-size` is the number of inputs per forward pass on every
  verb that encodes; `--top-k` (`-k`) is how many results `classify` and `search` return;
  `--threads` is the number of compute threads and `--dtype` the weights/compute type (f32, f16,
  int8) on every verb that loads a model; `--format` chooses `table`, `json` or `csv` on every verb
  that prints results (JSON is always one compact object per line; `info` and `bench` print JSON
  unless told otherwise, since their output is a record for scripts, the other verbs a table).
  Sizes carry their unit in their name (`--max-upload-mb`).
- **Folders.** A folder given where images are expected (`classify`, `index add`) is read with its
  sub-folders, in sorted order; `index add --no-recursive` reads only the folder's own files. A
  command that finds no image file says so and fails.
- **Logit scale.** `classify` and `eval` turn cosines into probabilities with the model's own learned
  logit scale unless `--scale` is given (`clipkit info` prints it). OpenAI's checkpoints store 100,
  the value CLIP's training clamps it to; a model trained or fine-tuned elsewhere keeps its own, so
  probabilities are those the model was trained to give. The same image therefore gets the same
  probabilities from both verbs.
- **Errors.** Every error is one line on stderr, `clipkit VERB: message`. Exit status: 0 success,
  1 failure, 2 a command line that cannot be parsed: an unknown verb or option, a missing
  subcommand, option or value, or a value that is not of the option's type (an integer) or not
  among its choices (`--format xml`).
- **Help.** `clipkit` alone or `clipkit help` prints the overview; every `--help` ends with examples.
  `clipkit --version` prints the version; `clipkit completion bash` prints a bash completion script
  (`source <(clipkit completion bash)`).

## Verbs

)";

std::string markdown(const CLI::App& root) {
  std::string out = kConventions;
  for (const CLI::App* v : visible_subcommands(&root)) markdown_verb(out, v, "clipkit " + v->get_name());
  out += "## Aliases\n\nOlder spellings that still work; they are not shown in `--help`.\n\n"
         "| command | alias | same as |\n|---|---|---|\n";
  std::vector<std::string> rows;
  for (const auto& [cmd, alias, canonical] : clipkit::cli::aliases())
    rows.push_back("| `" + app_path(cmd) + "` | `" + alias + "` | `" + canonical + "` |\n");
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  for (const auto& r : rows) out += r;
  return out;
}

// Words to complete after each command path ("" = the top level).
void completion_words(const CLI::App* app, const std::string& path, std::map<std::string, std::string>& out) {
  std::string words;
  for (const CLI::App* s : visible_subcommands(app)) words += (words.empty() ? "" : " ") + s->get_name();
  for (const CLI::Option* o : visible_options(app)) {
    for (const auto& l : o->get_lnames()) words += (words.empty() ? "" : " ") + std::string("--") + l;
  }
  out[path] = words;
  for (const CLI::App* s : visible_subcommands(app)) completion_words(s, path + "/" + s->get_name(), out);
}

std::string bash_completion(const CLI::App& root) {
  std::map<std::string, std::string> words;
  completion_words(&root, "", words);
  std::string s =
      "# bash completion for clipkit (generated by `clipkit completion bash`)\n"
      "_clipkit() {\n"
      "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" path=\"\" i w words\n"
      "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
      "    w=\"${COMP_WORDS[i]}\"\n"
      "    case \"$path/$w\" in\n";
  for (const auto& [p, w] : words)
    if (!p.empty()) s += "      \"" + p + "\") path=\"$path/$w\" ;;\n";
  s += "    esac\n"
       "  done\n"
       "  case \"$path\" in\n";
  for (const auto& [p, w] : words) s += "    \"" + p + "\") words=\"" + w + "\" ;;\n";
  s += "  esac\n"
       "  if [[ \"${COMP_WORDS[COMP_CWORD-1]}\" == --format ]]; then words=\"table json csv\"; fi\n"
       "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
       "}\n"
       "complete -o default -F _clipkit clipkit\n";
  return s;
}

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  CLI::App* root = &app;
  struct Opts {
    std::vector<std::string> words;
    bool markdown = false;
  };
  auto o = std::make_shared<Opts>();
  auto* help = app.add_subcommand("help", "Print the overview, or the help of one verb");
  help->add_option("VERB", o->words, "Verb (and subcommand) to describe, e.g. 'index add'");
  help->add_flag("--markdown", o->markdown, "")->group("");  // docs/cli.md
  clipkit::cli::add_examples(help, {"clipkit help", "clipkit help index add"});
  help->callback([root, o] {
    if (o->markdown) {
      std::cout << markdown(*root);
      return;
    }
    const CLI::App* cur = root;
    std::string path = root->get_name();
    for (const auto& w : o->words) {
      const CLI::App* next = find_child(cur, w);
      if (!next) throw UsageError("unknown verb '" + w + "' (see 'clipkit help')");
      cur = next;
      path += " " + w;
    }
    // The formatter directly: App::help() would describe the selected verb, i.e. `help` itself.
    std::cout << cur->get_formatter()->make_help(cur, path, CLI::AppFormatMode::Normal);
  });

  auto shell = std::make_shared<std::string>();
  auto* completion = app.add_subcommand("completion", "Print a shell completion script (bash)");
  completion->add_option("SHELL", *shell, "Shell: bash")->required()->check(CLI::IsMember({"bash"}));
  clipkit::cli::add_examples(completion, {"source <(clipkit completion bash)",
                                          "clipkit completion bash > /etc/bash_completion.d/clipkit"});
  completion->callback([root, shell] { std::cout << bash_completion(*root); });
});

}  // namespace
