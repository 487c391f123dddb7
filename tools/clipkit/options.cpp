#include "options.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <regex>

#include "clipkit/error.h"

namespace clipkit::cli {

std::vector<std::tuple<const CLI::App*, std::string, std::string>>& aliases() {
  static std::vector<std::tuple<const CLI::App*, std::string, std::string>> v;
  return v;
}

void note_alias(CLI::App* cmd, const std::string& alias, const std::string& canonical) {
  aliases().emplace_back(cmd, alias, canonical);
}

CLI::Option* add_alias_flag(CLI::App* cmd, const std::string& alias, const std::string& canonical, bool& value) {
  note_alias(cmd, alias, canonical);
  return cmd->add_flag(alias, value, "")->group("");
}

static std::vector<std::function<void(CLI::App&)>>& late_setups() {
  static std::vector<std::function<void(CLI::App&)>> v;
  return v;
}

bool register_late_setup(std::function<void(CLI::App&)> setup) {
  late_setups().push_back(std::move(setup));
  return true;
}

void finish_setup(CLI::App& app) {
  for (auto& s : late_setups()) s(app);
}

std::string library_message(const std::string& text) {
  static const std::regex faiss_prefix(R"(Error in .*? at [^ ]+:[0-9]+: )");
  static const std::regex json_prefix(R"(\[json\.exception\.[a-z_]+\.[0-9]+\] )");
  std::string m = std::regex_replace(text, faiss_prefix, "");
  m = std::regex_replace(m, json_prefix, "");
  return m;
}

void warn(const std::string& verb, const std::string& message) {
  std::cout.flush();
  std::cerr << "clipkit " << verb << ": " << message << "\n";
}

void add_batch_size(CLI::App* cmd, int& value, const std::string& what) {
  cmd->add_option("--batch-size", value, what)->capture_default_str();
  add_alias(cmd, "--batch", "--batch-size", value);
}

void add_text_model_options(CLI::App* cmd, std::string& text_model, std::string& tokenizer, bool recorded) {
  if (recorded) {
    cmd->add_option("--text-model", text_model,
                    "Multilingual text tower paired with the model's image tower (default: the one the index recorded; "
                    "another is refused)");
    cmd->add_option("--tokenizer", tokenizer,
                    "SentencePiece model of an XLM-RoBERTa text tower (default: the one the index recorded, else "
                    "sentencepiece.bpe.model beside the tower; a file with other content is refused)");
    return;
  }
  cmd->add_option("--text-model", text_model,
                  "Multilingual text tower paired with the model's image tower: an M-CLIP folder "
                  "(docs/multilingual.md)");
  cmd->add_option("--tokenizer", tokenizer,
                  "SentencePiece model of an XLM-RoBERTa text tower (default: sentencepiece.bpe.model beside it)");
}

void use_recorded_text_model(std::string& text_model, std::string& tokenizer, const std::string& recorded_text_model,
                             const std::string& recorded_tokenizer) {
  if (!text_model.empty()) return;
  text_model = recorded_text_model;
  if (tokenizer.empty() && !recorded_text_model.empty()) tokenizer = recorded_tokenizer;
}

void add_decode_threads(CLI::App* cmd, int& value) {
  cmd->add_option("--decode-threads", value,
                  "Image decoding threads, working while the model computes (0 = automatic: one per core)");
}

void add_fast_decode(CLI::App* cmd, bool& value) {
  cmd->add_flag("--fast-decode", value,
                "Decode large JPEGs at 1/2, 1/4 or 1/8 size while they stay at least twice the model's resolution, "
                "then resize as usual: several times faster on photos, not bit-exact");
}

void add_top_k(CLI::App* cmd, int& value, const std::string& what) {
  cmd->add_option("--top-k,-k", value, what)->capture_default_str();
  add_alias(cmd, "--k", "--top-k", value);
}

void add_where(CLI::App* cmd, std::string& value) {
  cmd->add_option("--where", value, "Metadata filter, e.g. 'category = \"dress\" and price < 50' (fields, =, !=, <, <=, >, >=, in, exists, and, or, not)");
}

void add_format(CLI::App* cmd, std::string& value, const std::vector<std::string>& allowed) {
  std::string list;
  for (size_t i = 0; i < allowed.size(); ++i) list += (i ? (i + 1 == allowed.size() ? " or " : ", ") : "") + allowed[i];
  cmd->add_option("--format", value, "Output: " + list + " (JSON: one compact object per line)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [allowed, list](std::string& v) -> std::string {
            if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return {};
            return "must be " + list + ", not '" + v + "'";
          },
          "", "format"));
}

CLI::Validator integer_at_least(long long min) {
  return CLI::Validator(
      [min](std::string& v) -> std::string {
        long long x = 0;
        size_t pos = 0;
        try {
          x = std::stoll(v, &pos);
        } catch (const std::exception&) {
          pos = 0;
        }
        if (v.empty() || pos != v.size() || std::isspace(static_cast<unsigned char>(v[0])))
          return "'" + v + "' is not an integer";
        if (x < min) return "must be at least " + std::to_string(min) + ", got " + v;
        return {};
      },
      "", "integer");
}

void add_examples(CLI::App* cmd, const std::vector<std::string>& lines) {
  std::string text = "Examples:";  // CLI11 puts a blank line before and a newline after the footer
  for (const auto& l : lines) text += "\n  " + l;
  cmd->footer(text);
}

void check_output_path(const std::string& path, const std::string& option) {
  namespace fs = std::filesystem;
  if (path.empty()) throw Error(ErrorCode::InvalidArgument, option + ": the file name is empty");
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(ErrorCode::InvalidArgument, option + " '" + path + "' is a folder, not a file");
  if (!fs::exists(dir, ec))
    throw Error(ErrorCode::NotFound, option + " '" + path + "': folder '" + dir.string() + "' does not exist");
  if (!fs::is_directory(dir, ec))
    throw Error(ErrorCode::InvalidArgument, option + " '" + path + "': '" + dir.string() + "' is not a folder");
  if (::access(dir.c_str(), W_OK) != 0)
    throw Error(ErrorCode::Io, option + " '" + path + "': folder '" + dir.string() + "' is not writable");
}

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

size_t text_width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w;
  for (const auto& r : rows) {
    if (w.size() < r.size()) w.resize(r.size(), 0);
    for (size_t j = 0; j < r.size(); ++j) w[j] = std::max(w[j], text_width(r[j]));
  }
  std::string out;
  for (const auto& r : rows) {
    for (size_t j = 0; j < r.size(); ++j) {
      out += r[j];
      if (j + 1 < r.size()) out += std::string(w[j] - text_width(r[j]) + 2, ' ');
    }
    out += "\n";
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

void print_csv(const std::vector<std::vector<std::string>>& rows) {
  std::string out;
  for (const auto& r : rows) {
    for (size_t j = 0; j < r.size(); ++j) out += (j ? "," : "") + csv_cell(r[j]);
    out += "\n";
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

}  // namespace clipkit::cli
