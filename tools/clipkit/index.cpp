// clipkit index: create, fill and maintain an image search index.
//
//   clipkit index create INDEX_DIR --model M [--kind flat|hnsw|ivfpq|FACTORY] [--train-min N]
//   clipkit index add INDEX_DIR PATH... [--no-recursive] [--commit-every N] [--tag T]... [--model M]
//   clipkit index remove INDEX_DIR PATH...
//   clipkit index info INDEX_DIR [--format table|json|csv]
//   clipkit index verify INDEX_DIR [--deep] [--format table|json|csv]
//   clipkit index rebuild INDEX_DIR --kind K [--train-min N]
//   clipkit index build INDEX_DIR SOURCE... --model M (index_build.cpp)
//
// add and search use the model recorded at create time unless --model is given, configured with
// the open_clip name (--arch) it was created with unless --arch is given.
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "clipkit/model.h"
#include "clipkit/server.h"
#include "clipkit/messages.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "clipkit/index_build.h"

namespace {

using namespace clipkit;

void print_notes(const Index& idx, const std::string& verb) {
  for (const auto& n : idx.open_notes()) cli::warn(verb, "note: " + n);
}

std::shared_ptr<Model> load_index_model(const Index& idx, const std::string& override_path, const std::string& dtype,
                                        int threads, const std::string& arch, std::string text_model,
                                        std::string tokenizer) {
  const std::string path = override_path.empty() ? idx.info().model_path : override_path;
  if (path.empty()) throw Error(ErrorCode::InvalidArgument, "index " + idx.dir() + " records no model path; pass --model");
  std::shared_ptr<Model> model;
  try {
    ModelOptions mo;
    mo.dtype = dtype;
    mo.threads = threads;
    mo.arch = arch.empty() ? idx.info().model_arch : arch;  // the name the index was created with
    cli::use_recorded_text_model(text_model, tokenizer, idx.info().text_model_path, idx.info().tokenizer_path);
    mo.text_model = text_model;
    mo.tokenizer = tokenizer;
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

// The --meta file: one JSON object per line with a "path" (as given to add, or absolute); blank
// lines are skipped. Returns normalised path -> metadata JSON. Everything is checked before the
// index is touched.
std::map<std::string, std::string> read_meta_file(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw Error(ErrorCode::NotFound, "--meta " + file + ": cannot open it");
  std::map<std::string, std::string> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = "--meta " + file + " line " + std::to_string(n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorCode::InvalidArgument, where + ": malformed JSON: " + cli::library_message(e.what()));
    }
    if (!j.is_object()) throw Error(ErrorCode::InvalidArgument, where + ": expected a JSON object");
    if (!j.contains("path") || !j["path"].is_string() || j["path"].get<std::string>().empty())
      throw Error(ErrorCode::InvalidArgument, where + ": needs a \"path\" string");
    std::error_code ec;
    const std::string path = std::filesystem::absolute(j["path"].get<std::string>(), ec).lexically_normal().string();
    j.erase("path");
    if (!out.emplace(path, j.dump()).second) throw Error(ErrorCode::InvalidArgument, where + ": path " + path + " appears twice");
  }
  return out;
}

struct Args {
  std::string dir, model, kind = "flat", format = "table", dtype = "f32", arch, meta_file, text_model, tokenizer;
  std::vector<std::string> paths, tags;
  bool no_recursive = false, recursive_alias = false, deep = false;
  int batch = 32, threads = 0, decode_threads = 0;
  bool fast_decode = false;
  int64_t train_min = 0;
};

void cmd_create(const Args& a) {
  if (a.train_min < 0) throw Error(ErrorCode::InvalidArgument, "--train-min must be >= 0");
  ModelOptions mo;
  mo.dtype = a.dtype;
  mo.threads = a.threads;
  mo.arch = a.arch;
  mo.text_model = a.text_model;
  mo.tokenizer = a.tokenizer;
  auto model = Model::load(a.model, mo);
  IndexCreateOptions o;
  o.kind = a.kind;
  o.train_min = a.train_min;
  Index idx = Index::create(a.dir, model->info(), o);
  const IndexInfo i = idx.info();
  std::cout << "created index " << a.dir << " (kind " << i.kind << ", dim " << i.dim << ", model " << i.model_path << ")\n";
}

void cmd_add(const Args& a) {
  if (a.batch <= 0) throw Error(ErrorCode::InvalidArgument, "--commit-every must be positive");
  if (a.threads < 0 || a.decode_threads < 0)
    throw Error(ErrorCode::InvalidArgument, "--threads and --decode-threads must be 0 (one per core) or more");
  std::map<std::string, std::string> meta;
  if (!a.meta_file.empty()) meta = read_meta_file(a.meta_file);
  Index idx = Index::open(a.dir);
  print_notes(idx, "index add");
  auto model = load_index_model(idx, a.model, a.dtype, a.threads, a.arch, a.text_model, a.tokenizer);
  AddOptions o;
  o.recursive = !a.no_recursive;
  o.batch = a.batch;
  o.tags = a.tags;
  o.threads = a.decode_threads;
  o.meta = meta;
  o.fast_decode = a.fast_decode;
  int delay_ms = 0;  // test hook: pause after each committed batch (crash-safety tests)
  if (const char* d = std::getenv("CLIPKIT_TEST_BATCH_DELAY_MS")) delay_ms = std::atoi(d);
  // Started now, so that the rate shown after the first batch counts that batch's time.
  auto bar = std::make_unique<cli::Progress>("indexing", 0);
  int64_t last = 0, total = 0;
  o.on_batch = [&](const AddProgress& p) {
    total = p.total;
    bar->set_total(p.total);
    bar->advance(p.done - last);
    last = p.done;
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  };
  AddReport r;
  try {
    r = idx.add_files(a.paths, *model, o);
  } catch (const std::exception&) {
    // The batches before the error are committed and stay: say how far the command got.
    if (last > 0) {
      bar->finish();
      cli::warn("index add", last >= total ? "all " + std::to_string(last) + " file(s) were committed before the error"
                                           : std::to_string(last) + " of " + std::to_string(total) +
                                                 " file(s) were committed before the error; run the command again to add the rest");
    }
    throw;
  }
  if (last > 0) bar->finish();
  for (const auto& f : r.failures) cli::warn("index add", "failed: " + cli::failure_text(f.path, f.reason));
  if (r.updated > 0) remove_stale_thumbnails(idx);  // a changed file may have left its old content behind
  if (r.candidates == 0 && r.failed == 0) {
    std::string hint;
    if (a.no_recursive)
      for (const auto& p : a.paths) {
        std::error_code ec;
        for (const auto& e : std::filesystem::directory_iterator(p, ec))
          if (e.is_directory(ec)) {
            hint = " (" + p + " holds sub-folders: drop --no-recursive to read them)";
            break;
          }
        if (!hint.empty()) break;
      }
    throw Error(ErrorCode::NotFound, "no image files found in the given paths" + hint);
  }
  std::cout << "added " << r.added << ", updated " << r.updated << ", duplicates " << r.duplicates << ", skipped " << r.skipped
            << ", failed " << r.failed << " (" << r.candidates << " files considered; index holds " << idx.info().items
            << " items)\n";
  if (r.failed > 0) throw Error(ErrorCode::Io, std::to_string(r.failed) + " file(s) could not be added (listed above)");
  int64_t unmatched = 0;
  for (const auto& [path, m] : meta) {
    CatalogItem it;
    if (idx.find_path(path, &it)) continue;
    cli::warn("index add", "--meta names a path that is not indexed: " + path);
    ++unmatched;
  }
  if (unmatched > 0)
    throw Error(ErrorCode::NotFound, std::to_string(unmatched) + " --meta line(s) name paths that were not added (listed above)");
}

void cmd_remove(const Args& a) {
  Index idx = Index::open(a.dir);
  print_notes(idx, "index remove");
  int64_t total = 0;
  std::vector<std::string> missing;
  for (const auto& p : a.paths) {
    const int64_t n = idx.remove_paths({p});
    if (n == 0) missing.push_back(p);
    total += n;
  }
  if (total > 0) remove_stale_thumbnails(idx);  // the web page's thumbnails of contents now gone
  std::cout << "removed " << total << " path(s); index holds " << idx.info().items << " items\n";
  if (!missing.empty()) {
    for (const auto& p : missing) cli::warn("index remove", "not indexed: " + p);
    throw Error(ErrorCode::NotFound, std::to_string(missing.size()) + " path(s) were not in the index");
  }
}

void cmd_info(const Args& a) {
  Index idx = Index::open(a.dir, Index::Mode::ReadOnly);
  print_notes(idx, "index info");
  const IndexInfo i = idx.info();
  if (a.format == "csv") {
    cli::print_csv({{"dir", "model_path", "model_fingerprint", "dim", "kind", "structure", "trained", "train_min", "items", "files",
                     "generation", "created"},
                    {i.dir, i.model_path, i.model_fingerprint, std::to_string(i.dim), i.kind, i.structure,
                     i.trained ? "true" : "false", std::to_string(i.train_min), std::to_string(i.items), std::to_string(i.files),
                     std::to_string(i.generation), nlohmann::json(i.created).dump()}});
    return;
  }
  if (a.format == "json") {
    nlohmann::json j = {{"dir", i.dir},         {"model_path", i.model_path}, {"model_fingerprint", i.model_fingerprint},
                        {"dim", i.dim},         {"kind", i.kind},             {"structure", i.structure},
                        {"trained", i.trained}, {"train_min", i.train_min},   {"items", i.items},
                        {"files", i.files},     {"generation", i.generation}, {"created", i.created}};
    if (!i.model_arch.empty()) j["model_arch"] = i.model_arch;
    std::cout << j.dump() << "\n";
    return;
  }
  std::cout << "index:       " << i.dir << "\n"
            << "model:       " << i.model_path << (i.model_arch.empty() ? "" : " (--arch " + i.model_arch + ")") << "\n"
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
  if (a.format == "json" || a.format == "csv") {
    if (a.format == "json") {
      const nlohmann::json j = {{"ok", r.ok},           {"items", r.items},       {"paths", r.files},
                                {"vectors", r.vectors}, {"hashed", r.hashed},     {"notes", r.notes},
                                {"problems", r.problems}};
      std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    } else {
      std::string problems, notes;
      for (const auto& p : r.problems) problems += (problems.empty() ? "" : "; ") + p;
      for (const auto& n : r.notes) notes += (notes.empty() ? "" : "; ") + n;
      cli::print_csv({{"ok", "items", "paths", "vectors", "hashed", "problems", "notes"},
                      {r.ok ? "true" : "false", std::to_string(r.items), std::to_string(r.files), std::to_string(r.vectors),
                       std::to_string(r.hashed), problems, notes}});
    }
    if (!r.ok) throw Error(ErrorCode::Format, "index " + a.dir + " is inconsistent: " + std::to_string(r.problems.size()) + " problem(s)");
    return;
  }
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
  print_notes(idx, "index rebuild");
  idx.rebuild(a.kind, a.train_min);
  const IndexInfo i = idx.info();
  std::cout << "rebuilt " << a.dir << " as " << i.kind << " (" << i.structure << (i.trained ? "" : ", exact until trained") << ", "
            << i.items << " vectors)\n";
}

const bool registered = cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand("index", "Create and maintain an image search index");
  cmd->require_subcommand(1);
  cli::add_examples(cmd, {"clipkit index create photos.idx --model ViT-B-32.pt", "clipkit index add photos.idx ~/Pictures"});
  auto args = std::make_shared<Args>();

  auto* create = cmd->add_subcommand("create", "Create an empty index for a model");
  create->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  create->add_option("--model", args->model, "Model file or folder")->required();
  clipkit::cli::add_arch_option(create, args->arch);
  clipkit::cli::add_text_model_options(create, args->text_model, args->tokenizer);
  create->add_option("--kind", args->kind, "flat (exact, default), hnsw, ivfpq or a faiss factory string");
  create->add_option("--train-min", args->train_min, "Vectors needed before training kinds that need it (0 = automatic)");
  create->add_option("--dtype", args->dtype, "Weights/compute: f32 (default), f16 or int8 (the index stores the model's path only)");
  create->add_option("--threads", args->threads, "Compute threads (0 = one per core)");
  cli::add_examples(create, {"clipkit index create photos.idx --model ViT-B-32.pt",
                             "clipkit index create photos.idx --model ViT-B-32.pt --kind hnsw"});
  create->callback([args] { cmd_create(*args); });

  auto* add = cmd->add_subcommand("add", "Embed and add image files and folders");
  add->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  add->add_option("PATH", args->paths, "Image files or folders")->required();
  add->add_flag("--no-recursive", args->no_recursive, "Read only the files directly in folder arguments, not their sub-folders");
  cli::add_alias_flag(add, "--recursive,-r", "(the default)", args->recursive_alias);
  add->add_option("--commit-every", args->batch, "Files embedded and committed together (one transaction)")->capture_default_str();
  cli::add_alias(add, "--batch", "--commit-every", args->batch);
  add->add_option("--tag", args->tags, "Tag to attach to the added paths (repeatable)");
  add->add_option("--meta", args->meta_file,
                  "JSON Lines file: one object per line with a \"path\" (as given here, or absolute) and its metadata fields");
  add->add_option("--model", args->model, "Use this model file instead of the recorded one");
  clipkit::cli::add_arch_option(add, args->arch);
  clipkit::cli::add_text_model_options(add, args->text_model, args->tokenizer, /*recorded=*/true);
  add->add_option("--dtype", args->dtype, "Weights/compute for embedding: f32 (default), f16 or int8 (fastest)");
  add->add_option("--threads", args->threads, "Compute threads (0 = one per core)");
  cli::add_decode_threads(add, args->decode_threads);
  cli::add_fast_decode(add, args->fast_decode);
  cli::add_examples(add, {"clipkit index add photos.idx ~/Pictures --tag holiday --dtype int8",
                          "clipkit index add shop.idx products/ --meta products.jsonl"});
  add->callback([args] { cmd_add(*args); });

  auto* remove = cmd->add_subcommand("remove", "Remove paths (files or folders) from the index");
  remove->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  remove->add_option("PATH", args->paths, "Indexed files or folders")->required();
  cli::add_examples(remove, {"clipkit index remove photos.idx ~/Pictures/old"});
  remove->callback([args] { cmd_remove(*args); });

  auto* info = cmd->add_subcommand("info", "Show what an index holds");
  info->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  cli::add_format(info, args->format, {"table", "json", "csv"});
  cli::add_examples(info, {"clipkit index info photos.idx", "clipkit index info photos.idx --format json"});
  info->callback([args] { cmd_info(*args); });

  auto* verify = cmd->add_subcommand("verify", "Check that catalog and vectors agree");
  verify->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  verify->add_flag("--deep", args->deep, "Also re-hash the indexed files");
  cli::add_format(verify, args->format, {"table", "json", "csv"});
  cli::add_examples(verify, {"clipkit index verify photos.idx", "clipkit index verify photos.idx --deep --format json"});
  verify->callback([args] { cmd_verify(*args); });

  auto* rebuild = cmd->add_subcommand("rebuild", "Convert the index to another kind (no re-embedding)");
  rebuild->add_option("INDEX_DIR", args->dir, "Index folder")->required();
  rebuild->add_option("--kind", args->kind, "flat, hnsw, ivfpq or a faiss factory string")->required();
  rebuild->add_option("--train-min", args->train_min, "Vectors needed before training (0 = automatic)");
  cli::add_examples(rebuild, {"clipkit index rebuild photos.idx --kind ivfpq"});
  rebuild->callback([args] { cmd_rebuild(*args); });

  cli::add_index_build(cmd);
});

}  // namespace
