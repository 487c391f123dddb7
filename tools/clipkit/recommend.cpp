// clipkit recommend: items like the positive examples and unlike the negative ones.
//
//   clipkit recommend INDEX_DIR [--positive X]... [--negative X]... [--strategy average|best-score]
//                     [--diversity L] [--exclude ID]... [--where EXPR] [--tag T]... [--path-prefix P]
//                     [--top-k 20] [--format table|json|csv] [--model M] [--text-model DIR] [--tokenizer FILE]
//
// X is an item id (42 or #42), an indexed path, image:FILE or text:TEXT. The examples and their
// near-duplicates are never returned. Scores and strategies: docs/search.md.
#include <iostream>

#include "clipkit/error.h"
#include "clipkit/hits.h"
#include "clipkit/index.h"
#include "clipkit/index_model.h"
#include "clipkit/model.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"

namespace {

using namespace clipkit;

struct Args {
  std::string dir, strategy = "average", where, path_prefix, format = "table", model, dtype = "f32", arch, text_model,
      tokenizer;
  std::vector<std::string> positive, negative, tags;
  std::vector<int64_t> exclude;
  double diversity = 0;
  int k = 20, threads = 0;
};

QueryTerm example(const std::string& x) {
  QueryTerm t;
  if (x.rfind("image:", 0) == 0) {
    t.kind = QueryTerm::Kind::Image;
    t.value = x.substr(6);
  } else if (x.rfind("text:", 0) == 0) {
    t.kind = QueryTerm::Kind::Text;
    t.value = x.substr(5);
  } else {
    t.kind = QueryTerm::Kind::Item;
    t.value = x;
  }
  if (t.value.empty()) throw Error(ErrorCode::InvalidArgument, "example '" + x + "' is empty");
  return t;
}

void run(const Args& a) {
  if (a.k <= 0) throw Error(ErrorCode::InvalidArgument, "--top-k must be positive");
  if (a.positive.empty() && a.negative.empty()) throw cli::UsageError("give at least one --positive or --negative example");
  if (!(a.diversity >= 0 && a.diversity <= 1)) throw Error(ErrorCode::InvalidArgument, "--diversity must be in [0, 1]");
  RecommendOptions o;
  o.strategy = parse_strategy(a.strategy);
  o.diversity = static_cast<float>(a.diversity);
  for (const auto& x : a.positive) o.positive.push_back(example(x));
  for (const auto& x : a.negative) o.negative.push_back(example(x));
  o.search.k = a.k;
  o.search.where = a.where;
  o.search.filter.tags = a.tags;
  o.search.filter.path_prefix = a.path_prefix;
  o.search.exclude_ids = a.exclude;

  Index idx = Index::open(a.dir, Index::Mode::ReadOnly);
  for (const auto& n : idx.open_notes()) cli::warn("recommend", "note: " + n);
  bool needs_model = false;
  for (const auto* list : {&o.positive, &o.negative})
    for (const auto& t : *list) needs_model |= t.kind != QueryTerm::Kind::Item;
  std::shared_ptr<Model> model;
  if (needs_model) model = cli::load_query_model(idx, {a.model, a.dtype, a.threads, a.arch, a.text_model, a.tokenizer});
  cli::print_hits(idx.recommend(o, model.get()), a.format);
}

const bool registered = cli::register_verb([](CLI::App& app) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("recommend", "Recommend items from positive and negative examples");
  cmd->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  cmd->add_option("--positive", args->positive, "An example to resemble: item id, indexed path, image:FILE or text:TEXT (repeatable)");
  cmd->add_option("--negative", args->negative, "An example to avoid, in the same forms (repeatable)");
  cmd->add_option("--strategy", args->strategy, "average (2·mean(pos) − mean(neg)) or best-score")
      ->capture_default_str()
      ->check(CLI::IsMember({"average", "best-score"}));
  cmd->add_option("--diversity", args->diversity, "Maximal marginal relevance weight in [0, 1] (0 = by score only)");
  cmd->add_option("--exclude", args->exclude, "Item id never to return, e.g. already seen (repeatable)");
  cli::add_where(cmd, args->where);
  cmd->add_option("--tag", args->tags, "Only paths with this tag (repeatable: all required)");
  cmd->add_option("--path-prefix", args->path_prefix, "Only paths under this prefix");
  cli::add_top_k(cmd, args->k, "Number of results");
  cli::add_format(cmd, args->format, {"table", "json", "csv"});
  cmd->add_option("--model", args->model, "Use this model file instead of the recorded one (text: and image: examples)");
  cmd->add_option("--dtype", args->dtype, "Weights/compute for the examples: f32 (default), f16 or int8");
  cmd->add_option("--threads", args->threads, "Compute threads (0 = one per core)");
  clipkit::cli::add_arch_option(cmd, args->arch);
  clipkit::cli::add_text_model_options(cmd, args->text_model, args->tokenizer, /*recorded=*/true);
  cli::add_examples(cmd, {"clipkit recommend shop.idx --positive 12 --positive 40 --negative 7",
                          "clipkit recommend shop.idx --positive 'text:red summer dress' --strategy best-score --where 'price < 50' --format json"});
  cmd->callback([args] { run(*args); });
});

}  // namespace
