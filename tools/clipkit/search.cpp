// clipkit search: query an index by text, image, indexed item or a weighted combination.
//
//   clipkit search INDEX_DIR (--text T | --image FILE | --like PATH_OR_ID | --query EXPR)
//                  [--minus TEXT]... [--templates NAME|FILE] [--top-k 20] [--min-score S]
//                  [--path-prefix P] [--tag T]... [--where EXPR] [--format table|json|csv] [--model M]
//
// --text, --image and --like may be combined (each weight 1); --minus subtracts a text. --query
// takes the full syntax: "image:a.jpg + 0.5*text:in red - text:indoors" (see docs/search.md).
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "clipkit/hits.h"
#include "clipkit/index.h"
#include "clipkit/index_model.h"
#include "clipkit/model.h"
#include "clipkit/options.h"
#include "clipkit/search_request.h"
#include "clipkit/verb.h"
#include "clipkit/zeroshot.h"

namespace {

using namespace clipkit;

struct Args {
  std::string dir, model, image, like, query, templates, format = "table", path_prefix, dtype = "f32", arch, where;
  std::string text_model, tokenizer;
  std::vector<std::string> texts, minus, tags;
  int k = 20, nprobe = 0, ef = 0, threads = 0;
  float min_score = -2.0f;
  bool no_rerank = false;
};

void run(const Args& a) {
  if (a.k <= 0) throw Error(ErrorCode::InvalidArgument, "--top-k must be positive");
  if (a.threads < 0) throw Error(ErrorCode::InvalidArgument, "--threads must be 0 (one per core) or more");
  if (a.query.empty() && a.texts.empty() && a.image.empty() && a.like.empty() && a.minus.empty())
    throw Error(ErrorCode::InvalidArgument, "give a query: --text, --image, --like or --query");
  SearchRequest r;
  r.expression = a.query;
  r.texts = a.texts;
  if (!a.image.empty()) r.images.push_back(a.image);
  if (!a.like.empty()) r.likes.push_back(a.like);
  r.minus = a.minus;
  r.templates = a.templates;
  const Query q = build_query(r);

  Index idx = Index::open(a.dir, Index::Mode::ReadOnly);
  for (const auto& n : idx.open_notes()) cli::warn("search", "note: " + n);
  bool needs_model = false;
  for (const auto& t : q.terms) needs_model |= t.kind == QueryTerm::Kind::Text || t.kind == QueryTerm::Kind::Image;
  std::shared_ptr<Model> model;
  if (needs_model) model = cli::load_query_model(idx, {a.model, a.dtype, a.threads, a.arch, a.text_model, a.tokenizer});
  SearchOptions o;
  o.k = a.k;
  o.min_score = a.min_score;
  o.filter.path_prefix = a.path_prefix;
  o.filter.tags = a.tags;
  o.where = a.where;
  o.nprobe = a.nprobe;
  o.ef_search = a.ef;
  o.rerank = !a.no_rerank;
  cli::print_hits(idx.search(q, model.get(), o), a.format);
}

const bool registered = cli::register_verb([](CLI::App& app) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("search", "Search an index by text, image or indexed item");
  cmd->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  cmd->add_option("--text", args->texts, "Text query (repeatable: added)");
  cmd->add_option("--image", args->image, "Image file query");
  cmd->add_option("--like", args->like, "Indexed path or id: more like this (excluding itself and its duplicates)");
  cmd->add_option("--query", args->query, "Weighted expression, e.g. \"image:a.jpg + 0.5*text:in red - text:indoors\"");
  cmd->add_option("--minus", args->minus, "Text to subtract (repeatable)");
  cmd->add_option("--templates", args->templates, "Prompt templates for text terms: a built-in set (e.g. photo) or a file");
  cli::add_top_k(cmd, args->k, "Number of results");
  cmd->add_option("--min-score", args->min_score, "Drop results with a lower cosine score");
  cmd->add_option("--path-prefix", args->path_prefix, "Only paths under this prefix");
  cmd->add_option("--tag", args->tags, "Only paths with this tag (repeatable: all required)");
  cli::add_where(cmd, args->where);
  cli::add_format(cmd, args->format, {"table", "json", "csv"});
  cmd->add_option("--model", args->model, "Use this model file instead of the recorded one");
  cmd->add_option("--dtype", args->dtype, "Weights/compute for the query: f32 (default), f16 or int8");
  cmd->add_option("--threads", args->threads, "Compute threads (0 = one per core)");
  clipkit::cli::add_arch_option(cmd, args->arch);
  clipkit::cli::add_text_model_options(cmd, args->text_model, args->tokenizer, /*recorded=*/true);
  cmd->add_option("--nprobe", args->nprobe, "IVF lists to probe (0 = automatic)");
  cmd->add_option("--ef-search", args->ef, "HNSW efSearch (0 = automatic)");
  cli::add_alias(cmd, "--ef", "--ef-search", args->ef);
  cmd->add_flag("--no-rerank", args->no_rerank, "Approximate kinds: keep faiss's scores instead of re-scoring with the exact vectors");
  cli::add_examples(cmd, {"clipkit search photos.idx --query 'image:cat.jpg + 0.5*text:in the snow' --format json",
                          "clipkit search shop.idx --text 'summer dress' --where 'category = \"dress\" and price < 50'"});
  cmd->callback([args] { run(*args); });
});

}  // namespace
