// clipkit tokenize [--context-length N] [--no-truncate] [--no-normalize] TEXT...
// Prints one compact JSON array of token ids (the padded clip.tokenize row) per TEXT.
#include <charconv>
#include <cstdio>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/options.h"
#include "clipkit/tokenizer.h"
#include "clipkit/verb.h"

namespace {

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenize", "Print CLIP token ids: one JSON array per TEXT (padded to the context length)");
  struct Opts {
    int context_length = clipkit::Tokenizer::kDefaultContextLength;
    bool no_truncate = false;
    bool no_normalize = false;
    std::vector<std::string> texts;
  };
  auto opts = std::make_shared<Opts>();
  cmd->add_option("--context-length", opts->context_length, "Row length in tokens")
      ->capture_default_str()
      ->check(clipkit::cli::integer_at_least(1));
  cmd->add_flag("--no-truncate", opts->no_truncate, "Fail on texts longer than the context instead of cutting them");
  cmd->add_flag("--no-normalize", opts->no_normalize,
                "Skip the ftfy-style text repair (ids then match OpenAI's tokenizer without ftfy)");
  cmd->add_option("text", opts->texts, "Texts to tokenize (use -- before a text that starts with '-')")->required();
  clipkit::cli::add_examples(cmd, {"clipkit tokenize 'a photo of a cat.'", "clipkit tokenize --context-length 16 -- '-1 cats'"});
  cmd->callback([opts] {
    const int ctx = opts->context_length;
    const auto& tok = clipkit::Tokenizer::instance();
    const auto rows = tok.tokenize(opts->texts, ctx, !opts->no_truncate, !opts->no_normalize);
    std::string out;
    for (const auto& row : rows) {
      out.push_back('[');
      for (size_t i = 0; i < row.size(); ++i) {
        if (i) out.push_back(',');
        out += std::to_string(row[i]);
      }
      out += "]\n";
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  });
});

}  // namespace
