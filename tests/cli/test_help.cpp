// The CLI as one tool: help and examples on every verb, the overview, --version, completion,
// one-line errors with their exit statuses, and docs/cli.md generated from the same help.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/mapped_file.h"
#include "support/test_support.h"

namespace {

using clipkit::test::data_path;
using clipkit::test::run_cli;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string l;
  while (std::getline(ss, l)) out.push_back(l);
  return out;
}

// Every command path ("index add") the CLI documents, from its own reference.
std::vector<std::vector<std::string>> command_paths() {
  const auto r = run_cli({"help", "--markdown"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::vector<std::string>> out;
  for (const auto& l : lines_of(r.out)) {
    const std::string head = "### `clipkit ";
    if (l.rfind(head, 0) != 0) continue;
    std::stringstream ss(l.substr(head.size(), l.size() - head.size() - 1));
    std::vector<std::string> words;
    std::string w;
    while (ss >> w) words.push_back(w);
    out.push_back(words);
  }
  return out;
}

// Runs `bash -c script` and returns its stdout.
std::string run_bash(const std::string& script) {
  const std::string file = clipkit::test::temp_dir() + "/script.sh";
  std::ofstream(file) << script;
  std::string out;
  FILE* p = popen(("bash " + file).c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

}  // namespace

TEST(CliHelp, EveryHelpEndsWithExamples) {
  const auto paths = command_paths();
  ASSERT_GE(paths.size(), 20u);
  for (auto args : paths) {
    std::string name;
    for (const auto& w : args) name += " " + w;
    args.push_back("--help");
    const auto r = run_cli(args);
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.err;
    const auto lines = lines_of(r.out);
    const auto at = std::find(lines.begin(), lines.end(), "Examples:");
    ASSERT_NE(at, lines.end()) << name << ":\n" << r.out;
    std::vector<std::string> examples;
    for (auto it = at + 1; it != lines.end(); ++it)
      if (!it->empty()) examples.push_back(*it);
    EXPECT_GE(examples.size(), 1u) << name;
    EXPECT_LE(examples.size(), 2u) << name;
    for (const auto& e : examples) EXPECT_NE(e.find("clipkit"), std::string::npos) << name << ": " << e;
  }
}

TEST(CliHelp, OverviewAloneAndThroughHelp) {
  const auto alone = run_cli({});
  EXPECT_EQ(alone.exit_code, 0) << alone.err;
  EXPECT_TRUE(alone.err.empty()) << alone.err;
  const auto help = run_cli({"help"});
  EXPECT_EQ(help.exit_code, 0) << help.err;
  EXPECT_EQ(alone.out, help.out);
  for (const char* verb : {"classify", "search", "index", "list", "completion"})
    EXPECT_NE(help.out.find(verb), std::string::npos) << verb;

  const auto verb = run_cli({"help", "index", "add"});
  EXPECT_EQ(verb.exit_code, 0) << verb.err;
  const auto direct = run_cli({"index", "add", "--help"});
  EXPECT_EQ(verb.out, direct.out);
  EXPECT_NE(verb.out.find("clipkit index add"), std::string::npos) << verb.out;
  EXPECT_NE(verb.out.find("--commit-every"), std::string::npos) << verb.out;

  const auto bad = run_cli({"help", "bogus"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(bad.err, "clipkit help: unknown verb 'bogus' (see 'clipkit help')\n");
}

TEST(CliHelp, Version) {
  const auto r = run_cli({"--version"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("clipkit ", 0), 0u) << r.out;
  EXPECT_EQ(lines_of(r.out).size(), 1u) << r.out;
}

TEST(CliHelp, HiddenAliasesStayOutOfHelp) {
  const auto search = run_cli({"search", "--help"});
  EXPECT_NE(search.out.find("--top-k"), std::string::npos);
  EXPECT_EQ(search.out.find("--k "), std::string::npos) << search.out;
  const auto embed = run_cli({"embed", "--help"});
  EXPECT_NE(embed.out.find("--batch-size"), std::string::npos);
  EXPECT_EQ(embed.out.find("--batch "), std::string::npos) << embed.out;
}

TEST(CliHelp, BashCompletion) {
  const auto r = run_cli({"completion", "bash"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string file = clipkit::test::temp_dir() + "/clipkit.bash";
  std::ofstream(file) << r.out;
  auto complete = [&](const std::string& words, int cword) {
    return run_bash("source " + file + "\nCOMP_WORDS=(" + words + ")\nCOMP_CWORD=" + std::to_string(cword) +
                    "\n_clipkit\necho \"${COMPREPLY[*]}\"\n");
  };
  EXPECT_EQ(complete("clipkit ind", 1), "index\n");
  EXPECT_EQ(complete("clipkit index a", 2), "add\n");
  EXPECT_EQ(complete("clipkit index add --commit", 3), "--commit-every\n");
  EXPECT_EQ(complete("clipkit search idx --form", 3), "--format\n");
  EXPECT_EQ(complete("clipkit search idx --format c", 4), "csv\n");
  EXPECT_EQ(complete("clipkit list label", 2), "label-sets\n");
  // hidden aliases are not offered
  EXPECT_EQ(complete("clipkit embed --batch", 2), "--batch-size\n");
}

TEST(CliHelp, DocsAreGeneratedFromTheHelp) {
  const auto r = run_cli({"help", "--markdown"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string doc = clipkit::read_file(data_path("../../docs/cli.md"));
  EXPECT_TRUE(doc == r.out) << "docs/cli.md is out of date: run scripts/gen-cli-doc.sh";
  EXPECT_NE(doc.find("## Aliases"), std::string::npos);
  EXPECT_NE(doc.find("| `clipkit index add` | `--batch` | `--commit-every` |"), std::string::npos);
}

TEST(CliErrors, UsageErrorsAreOneLineWithStatusTwo) {
  struct Case {
    std::vector<std::string> args;
    std::string expected;  // the whole of stderr
  };
  const std::vector<Case> cases = {
      {{"index"}, "clipkit index: missing subcommand (one of: add, build, create, info, meta, rebuild, remove, verify) (see 'clipkit help index')\n"},
      {{"models"}, "clipkit models: missing subcommand (one of: download, list) (see 'clipkit help models')\n"},
      {{"tokenize", "--bogus", "x"}, "clipkit tokenize: unknown option or argument: --bogus (see 'clipkit help tokenize')\n"},
      {{"frobnicate"}, "clipkit: unknown verb 'frobnicate' (see 'clipkit help')\n"},
      // a placeholder name keeps its capitals
      {{"index", "add"}, "clipkit index add: INDEX_DIR is required (see 'clipkit help index add')\n"},
  };
  for (const auto& c : cases) {
    const auto r = run_cli(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args[0] << ": " << r.err;
    EXPECT_EQ(r.err, c.expected);
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"embed"}, {"tokenize", "--context-length", "x", "a"}, {"create-random", "--arch", "RN50", "--seed", "-1", "--out", "x"},
        {"search", "idx", "--format", "xml", "--text", "a"}, {"index", "add", "--commit-every"}}) {
    const auto r = run_cli(args);
    EXPECT_EQ(r.exit_code, 2) << args[0] << ": " << r.err;
    EXPECT_EQ(lines_of(r.err).size(), 1u) << r.err;
    EXPECT_EQ(r.err.rfind("clipkit " + args[0], 0), 0u) << r.err;
  }
}

TEST(CliErrors, RunErrorsAreOneLineWithStatusOne) {
  const auto r = run_cli({"classifier", "info", "/nonexistent/x.clf"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(lines_of(r.err).size(), 1u) << r.err;
  EXPECT_EQ(r.err.rfind("clipkit classifier info: ", 0), 0u) << r.err;
}
