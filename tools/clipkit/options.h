// Shared option vocabulary of the clipkit CLI: one spelling per meaning, with the older spellings
// kept as hidden aliases (listed in docs/cli.md), and the checks every verb applies the same way.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <tuple>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace clipkit::cli {

// An error in how the command line was written (exit status 2, like the parse errors).
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Records that `alias` is an older spelling of `canonical` on `cmd` (for docs/cli.md).
void note_alias(CLI::App* cmd, const std::string& alias, const std::string& canonical);
// (command, alias, canonical) for every alias, in registration order.
std::vector<std::tuple<const CLI::App*, std::string, std::string>>& aliases();

// A hidden alias: the option works but is listed neither in --help nor in the completion.
template <typename T>
CLI::Option* add_alias(CLI::App* cmd, const std::string& alias, const std::string& canonical, T& value) {
  note_alias(cmd, alias, canonical);
  return cmd->add_option(alias, value, "")->group("");
}
// The same for a flag.
CLI::Option* add_alias_flag(CLI::App* cmd, const std::string& alias, const std::string& canonical, bool& value);

// Setups that run after every verb registered (they may add to a verb another file created).
bool register_late_setup(std::function<void(CLI::App&)> setup);
// Runs the late setups; called by main() once all verbs are registered.
void finish_setup(CLI::App& app);

// A library's exception text in clipkit's words: drops faiss's "Error in FUNCTION at FILE:LINE: "
// and nlohmann's "[json.exception.parse_error.101] " prefixes.
std::string library_message(const std::string& text);

// "clipkit VERB: message" on stderr (warnings and notes of a verb).
void warn(const std::string& verb, const std::string& message);

// --batch-size: inputs per forward pass (hidden alias --batch).
void add_batch_size(CLI::App* cmd, int& value, const std::string& what = "Inputs per forward pass");

// --text-model DIR and --tokenizer FILE for the verbs that load a model (ModelOptions::text_model
// and ::tokenizer): a multilingual text tower (M-CLIP) paired with the image model, and the
// SentencePiece model of an XLM-RoBERTa text tower. `recorded`: the verb opens an index, whose
// recorded pair is the default (use_recorded_text_model) and must not be contradicted.
void add_text_model_options(CLI::App* cmd, std::string& text_model, std::string& tokenizer, bool recorded = false);

// The text tower a verb that opens an index uses: --text-model when given, else the one the index
// recorded; the same for --tokenizer (recorded only with its text tower, or the model's own).
void use_recorded_text_model(std::string& text_model, std::string& tokenizer, const std::string& recorded_text_model,
                             const std::string& recorded_tokenizer);
// --decode-threads: image decoding threads of the ingest pipeline (0 = automatic).
void add_decode_threads(CLI::App* cmd, int& value);

// --fast-decode: decode large JPEGs at a reduced size first (ingest_decode_options).
void add_fast_decode(CLI::App* cmd, bool& value);

// --top-k,-k: how many results (hidden alias --k).
void add_top_k(CLI::App* cmd, int& value, const std::string& what);

// --where EXPR: the metadata filter of search and recommend (docs/search.md, "Filters").
void add_where(CLI::App* cmd, std::string& value);

// --format with the allowed values; `what` describes the table output. The value is checked
// at parse time (a usage error naming the allowed values).
void add_format(CLI::App* cmd, std::string& value, const std::vector<std::string>& allowed);

// A check for an integer option: the whole text an integer, at least `min` (a usage error otherwise).
CLI::Validator integer_at_least(long long min);

// The "Examples:" footer of a verb's --help; each line one command.
void add_examples(CLI::App* cmd, const std::vector<std::string>& lines);

// Fails at once when `path` cannot be written later: its folder does not exist or is not a folder
// (so a long run does not fail only at its end). `option` names the flag in the message.
void check_output_path(const std::string& path, const std::string& option);

// A CSV field, quoted when needed.
std::string csv_cell(const std::string& s);

// Display width of UTF-8 text (code points).
size_t text_width(const std::string& s);

// Prints rows as aligned columns (the first row is the header), 2 spaces between columns.
void print_table(const std::vector<std::vector<std::string>>& rows);

// Prints rows as CSV (the first row is the header).
void print_csv(const std::vector<std::vector<std::string>>& rows);

}  // namespace clipkit::cli
