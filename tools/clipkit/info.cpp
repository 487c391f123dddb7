// clipkit info --model PATH [--activation auto|quick_gelu|gelu] [--arch NAME] [--dtype D] [--threads N]
//              [--format json|table|csv]
// Prints one JSON object (one line) describing the model: format, what configured it, architecture
// (head counts and widths, activation), parameter count, stored weight dtype, logit scale,
// fingerprint, GEMM kernels and preprocessing; or the same fields as a table or CSV (nested fields
// as "architecture.kind").
#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "model/model_info_json.h"

namespace {

// (field, value) pairs of a JSON object, nested objects flattened as "outer.inner".
void flatten(const nlohmann::ordered_json& j, const std::string& prefix, std::vector<std::vector<std::string>>& rows) {
  for (const auto& [key, value] : j.items()) {
    const std::string name = prefix.empty() ? key : prefix + "." + key;
    if (value.is_object()) flatten(value, name, rows);
    else rows.push_back({name, value.is_string() ? value.get<std::string>() : value.dump()});
  }
}

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Describe a model: architecture, parameters, fingerprint (one JSON object by default)");
  struct Opts {
    std::string model;
    std::string activation = "auto";
    std::string dtype = "f32";
    int threads = 0;
    std::string format = "json";
    std::string arch;
    std::string text_model, tokenizer;
  };
  auto opts = std::make_shared<Opts>();
  cmd->add_option("--model", opts->model, "Model file or folder (.pt, .safetensors, Hugging Face or open_clip folder)")
      ->required();
  cmd->add_option("--activation", opts->activation, "MLP activation: auto (default), quick_gelu or gelu");
  clipkit::cli::add_arch_option(cmd, opts->arch);
  clipkit::cli::add_text_model_options(cmd, opts->text_model, opts->tokenizer);
  cmd->add_option("--dtype", opts->dtype, "Weights/compute: f32 (default), f16 or int8 (shown as compute_dtype)");
  cmd->add_option("--threads", opts->threads, "Compute threads (0 = one per core)");
  clipkit::cli::add_format(cmd, opts->format, {"json", "table", "csv"});
  clipkit::cli::add_examples(cmd, {"clipkit info --model ViT-B-32.pt", "clipkit info --model RN50.pt --format table"});
  cmd->callback([opts] {
    clipkit::ModelOptions mo;
    mo.activation = opts->activation;
    mo.dtype = opts->dtype;
    mo.threads = opts->threads;
    mo.arch = opts->arch;
    mo.text_model = opts->text_model;
    mo.tokenizer = opts->tokenizer;
    auto model = clipkit::Model::load(opts->model, mo);
    const auto j = clipkit::model_info_json(model->info());
    if (opts->format != "json") {
      std::vector<std::vector<std::string>> rows;
      flatten(j, "", rows);
      if (opts->format == "table") {
        rows.insert(rows.begin(), {"field", "value"});
        clipkit::cli::print_table(rows);
      } else {
        std::vector<std::vector<std::string>> csv(2);
        for (const auto& r : rows) {
          csv[0].push_back(r[0]);
          csv[1].push_back(r[1]);
        }
        clipkit::cli::print_csv(csv);
      }
      std::fflush(stdout);
      return;
    }
    const std::string out = j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  });
});

}  // namespace
