// clipkit index: create, fill and maintain an image search index.
//
//   clipkit index create INDEX_DIR --model M [--kind flat|hnsw|ivfpq|FACTORY] [--train-min N]
//   clipkit index add INDEX_DIR PATH... [--recursive] [--batch N] [--tag T]... [--model M]
//   clipkit index remove INDEX_DIR PATH...
//   clipkit index info INDEX_DIR [--format table|json]
//   clipkit index verify INDEX_DIR [--deep]
//   clipkit index rebuild INDEX_DIR --kind K [--train-min N]
//
// add and search use the model recorded at create time unless --model is given.
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "clipkit/model.h"
#include "clipkit/verb.h"

namespace {

using namespace clipkit;

void print_notes(const Index& idx) {
  for (const auto& n : idx.open_notes()) std::cerr << "clipkit: note: " << n << "\n";
}

std::shared_ptr<Model> load_index_model(const Index& idx, const std::string& override_path, const std::string& dtype,
                                        const std::string& arch) {
  const std::string path = override_path.empty() ? idx.info().model_path : override_path;
  if (path.empty()) throw Error(ErrorCode::InvalidArgument, "index " + idx.dir() + " records no model path; pass --model");
  std::shared_ptr<Model> model;
  try {
    ModelOptions mo;
    mo.dtype = dtype;
    mo.arch = arch;
    model = Model::load(path, mo);
  } catch (const Error& e) {
    if (override_path.empty())
      throw Error(e.code(), std::string(e.what()) + " (the model recorded in index " + idx.dir() + "; pass --model to use another copy)");
    throw;
  }
  idx.check_model(*model);
  return model;
}

std::string fmt_time(double unix_s) {
  const std::time_t t = static_cast<std::time_t>(unix_s);
  char buf[64];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

struct Args {
  std::string dir, model, kind = "flat", format = "table", dtype = "f32", arch;
  std::vector<std::string> paths, tags;
  bool recursive = false, deep = false;
  int batch = 32, threads = 0;
  int64_t train_min = 0;
};

void cmd_create(const Args& a) {
  if (a.train_min < 0) throw Error(ErrorCode::InvalidArgument, "--train-min must be >= 0");
  ModelOptions mo;
  mo.arch = a.arch;
  auto model = Model::load(a.model, mo);
  IndexCreateOptions o;
  o.kind = a.kind;
  o.train_min = a.train_min;
  Index idx = Index::create(a.dir, model->info(), o);
  const IndexInfo i = idx.info();
  std::cout << "created index " << a.dir << " (kind " << i.kind << ", dim " << i.dim << ", model " << i.model_path << ")\n";
}

void cmd_add(const Args& a) {
  if (a.batch <= 0) throw Error(ErrorCode::InvalidArgument, "--batch must be positive");
  Index idx = Index::open(a.dir);
  print_notes(idx);
  auto model = load_index_model(idx, a.model, a.dtype, a.arch);
  AddOptions o;
  o.recursive = a.recursive;
  o.batch = a.batch;
  o.tags = a.tags;
  o.threads = a.threads;
  int delay_ms = 0;  // test hook: pause after each committed batch (crash-safety tests)
  if (const char* d = std::getenv("CLIPKIT_TEST_BATCH_DELAY_MS")) delay_ms = std::atoi(d);
  std::unique_ptr<cli::Progress> bar;
  int64_t last = 0;
  o.on_batch = [&](const AddProgress& p) {
    if (!bar) bar = std::make_unique<cli::Progress>("indexing", p.total);
    bar->advance(p.done - last);
    last = p.done;
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  };
  AddReport r = idx.add_files(a.paths, *model, o);
  if (bar) bar->finish();
  for (const auto& f : r.failures) std::cerr << "clipkit: failed: " << f.path << ": " << f.reason << "\n";
  std::cout << "added " << r.added << ", updated " << r.updated << ", duplicates " << r.duplicates << ", skipped " << r.skipped
            << ", failed " << r.failed << " (" << r.candidates << " files considered; index holds " << idx.info().items
            << " items)\n";
  if (r.failed > 0) throw Error(ErrorCode::Io, std::to_string(r.failed) + " file(s) could not be added (listed above)");
}

void cmd_remove(const Args& a) {
  Index idx = Index::open(a.dir);
  print_notes(idx);
  int64_t total = 0;
  std::vector<std::string> missing;
  for (const auto& p : a.paths) {
    const int64_t n = idx.remove_paths({p});
    if (n == 0) missing.push_back(p);
    total += n;
  }
  std::cout << "removed " << total << " path(s); index holds " << idx.info().items << " items\n";
  if (!missing.empty()) {
    for (const auto& p : missing) std::cerr << "clipkit: not indexed: " << p << "\n";
    throw Error(ErrorCode::NotFound, std::to_string(missing.size()) + " path(s) were not in the index");
  }
}

void cmd_info(const Args& a) {
  if (a.format != "table" && a.format != "json") throw Error(ErrorCode::InvalidArgument, "--format must be table or json");
  Index idx = Index::open(a.dir, Index::Mode::ReadOnly);
  print_notes(idx);
  const IndexInfo i = idx.info();
  if (a.format == "json") {
    nlohmann::json j = {{"dir", i.dir},         {"model_path", i.model_path}, {"model_fingerprint", i.model_fingerprint},
                        {"dim", i.dim},         {"kind", i.kind},             {"structure", i.structure},
                        {"trained", i.trained}, {"train_min", i.train_min},   {"items", i.items},
                        {"files", i.files},     {"generation", i.generation}, {"created", i.created}};
    std::cout << j.dump() << "\n";
    return;
  }
  std::cout << "index:       " << i.dir << "\n"
            << "model:       " << i.model_path << "\n"
            << "fingerprint: " << i.model_fingerprint << "\n"
            << "dim:         " << i.dim << "\n"
            << "kind:        " << i.kind << "\n"
            << "structure:   " << i.structure;
  if (!i.trained) std::cout << " (exact until " << i.train_min << " vectors, then trained)";
  std::cout << "\n"
            << "items:       " << i.items << " unique contents\n"
            << "files:       " << i.files << " paths\n"
            << "generation:  " << i.generation << "\n"
            << "created:     " << fmt_time(i.created) << "\n";
}

void cmd_verify(const Args& a) {
  Index idx = Index::open(a.dir, Index::Mode::ReadOnly);
  VerifyReport r = idx.verify(a.deep);
  for (const auto& n : r.notes) std::cout << "note: " << n << "\n";
  for (const auto& p : r.problems) std::cout << "problem: " << p << "\n";
  std::cout << (r.ok ? "ok" : "FAILED") << ": " << r.items << " items, " << r.files << " paths, " << r.vectors << " vectors";
  if (a.deep) std::cout << ", " << r.hashed << " files re-hashed";
  std::cout << "\n";
  if (!r.ok) throw Error(ErrorCode::Format, "index " + a.dir + " is inconsistent: " + std::to_string(r.problems.size()) + " problem(s)");
}

void cmd_rebuild(const Args& a) {
  if (a.train_min < 0) throw Error(ErrorCode::InvalidArgument, "--train-min must be >= 0");
  Index idx = Index::open(a.dir);
  print_notes(idx);
  idx.rebuild(a.kind, a.train_min);
  const IndexInfo i = idx.info();
  std::cout << "rebuilt " << a.dir << " as " << i.kind << " (" << i.structure << (i.trained ? "" : ", exact until trained") << ", "
            << i.items << " vectors)\n";
}

const bool registered = cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand("index", "Create and maintain an image search index");
  cmd->require_subcommand(1);
  auto args = std::make_shared<Args>();

  auto* create = cmd->add_subcommand("create", "Create an empty index for a model");
  create->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  create->add_option("--model", args->model, "Model file or folder")->required();
  clipkit::cli::add_arch_option(create, args->arch);
  create->add_option("--kind", args->kind, "flat (exact, default), hnsw, ivfpq or a faiss factory string");
  create->add_option("--train-min", args->train_min, "Vectors needed before training kinds that need it (0 = automatic)");
  create->callback([args] { cmd_create(*args); });

  auto* add = cmd->add_subcommand("add", "Embed and add image files and folders");
  add->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  add->add_option("PATH", args->paths, "Image files or folders")->required();
  add->add_flag("--recursive,-r", args->recursive, "Descend into sub-folders");
  add->add_option("--batch", args->batch, "Files per committed batch (default 32)");
  add->add_option("--tag", args->tags, "Tag to attach to the added paths (repeatable)");
  add->add_option("--model", args->model, "Use this model file instead of the recorded one");
  clipkit::cli::add_arch_option(add, args->arch);
  add->add_option("--dtype", args->dtype, "Weights/compute for embedding: f32 (default), f16 or int8 (fastest)");
  add->add_option("--threads", args->threads, "Decode threads (0 = one per core)");
  add->callback([args] { cmd_add(*args); });

  auto* remove = cmd->add_subcommand("remove", "Remove paths (files or folders) from the index");
  remove->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  remove->add_option("PATH", args->paths, "Indexed files or folders")->required();
  remove->callback([args] { cmd_remove(*args); });

  auto* info = cmd->add_subcommand("info", "Show what an index holds");
  info->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  info->add_option("--format", args->format, "table or json");
  info->callback([args] { cmd_info(*args); });

  auto* verify = cmd->add_subcommand("verify", "Check that catalog and vectors agree");
  verify->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  verify->add_flag("--deep", args->deep, "Also re-hash the indexed files");
  verify->callback([args] { cmd_verify(*args); });

  auto* rebuild = cmd->add_subcommand("rebuild", "Convert the index to another kind (no re-embedding)");
  rebuild->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  rebuild->add_option("--kind", args->kind, "flat, hnsw, ivfpq or a faiss factory string")->required();
  rebuild->add_option("--train-min", args->train_min, "Vectors needed before training (0 = automatic)");
  rebuild->callback([args] { cmd_rebuild(*args); });
});

}  // namespace
