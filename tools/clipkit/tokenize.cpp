// clipkit tokenize [--context-length N] [--no-truncate] [--no-normalize] [--tokenizer SPM.model] TEXT...
// Prints one compact JSON array of token ids (the padded clip.tokenize row) per TEXT. With
// --tokenizer: XLM-RoBERTa's ids from a SentencePiece model, <s> ... </s> as they are (M-CLIP), or
// with --context-length cleaned, cut and padded as open_clip's HFTokenizer does.
#include <charconv>
#include <cstdio>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/options.h"
#include "clipkit/sentencepiece_tokenizer.h"
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
    std::string tokenizer;
  };
  auto opts = std::make_shared<Opts>();
  auto* ctx_opt = cmd->add_option("--context-length", opts->context_length,
                                  "Row length in tokens (with --tokenizer: none unless given)")
                      ->capture_default_str()
                      ->check(clipkit::cli::integer_at_least(1));
  cmd->add_option("--tokenizer", opts->tokenizer,
                  "SentencePiece model of an XLM-RoBERTa text tower (sentencepiece.bpe.model): its ids instead of "
                  "CLIP's");
  cmd->add_flag("--no-truncate", opts->no_truncate, "Fail on texts longer than the context instead of cutting them");
  cmd->add_flag("--no-normalize", opts->no_normalize,
                "Skip the ftfy-style text repair (ids then match OpenAI's tokenizer without ftfy)");
  cmd->add_option("text", opts->texts, "Texts to tokenize (use -- before a text that starts with '-')")->required();
  clipkit::cli::add_examples(cmd, {"clipkit tokenize --context-length 16 -- '-1 cats'",
                                   "clipkit tokenize --tokenizer sentencepiece.bpe.model 'ein Foto einer Katze'"});
  cmd->callback([opts, ctx_opt] {
    const int ctx = opts->context_length;
    std::vector<std::vector<int32_t>> rows;
    if (!opts->tokenizer.empty()) {
      if (opts->no_truncate || opts->no_normalize)
        throw clipkit::cli::UsageError("--no-truncate and --no-normalize apply to CLIP's tokenizer, not --tokenizer");
      const auto spm = clipkit::SentencePieceTokenizer::load(opts->tokenizer);
      const bool padded = ctx_opt->count() > 0;
      if (padded && ctx < 2) throw clipkit::cli::UsageError("--context-length must be at least 2 with --tokenizer");
      for (const auto& t : opts->texts) rows.push_back(padded ? spm->encode_openclip(t, ctx) : spm->encode(t));
    } else {
      rows = clipkit::Tokenizer::instance().tokenize(opts->texts, ctx, !opts->no_truncate, !opts->no_normalize);
    }
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
