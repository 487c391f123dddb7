// clipkit index build: a new index from many files, in phases that can run on many machines.
//
//   clipkit index build INDEX_DIR SOURCE... --model M [--kind K] [--recursive]      all phases, one process
//   mpirun -np N clipkit index build INDEX_DIR SOURCE... --model M [--kind K]       one shard per rank
//   clipkit index build INDEX_DIR SOURCE... --model M --shard I/N                   phase 1 (any scheduler)
//   clipkit index build INDEX_DIR --kind K --train | --add-shard I | --merge        phases 2, 3, 4
#include "clipkit/index_build.h"

#include <csignal>
#include <cstdlib>
#include <iostream>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "clipkit/messages.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "dist/build.h"
#include "dist/mpi_driver.h"

namespace clipkit::cli {

namespace {

constexpr const char* kVerb = "index build";

struct BuildArgs {
  std::string dir, model, kind = "flat", shard, dtype = "f32", arch, text_model, tokenizer, scratch;
  std::vector<std::string> sources;
  bool recursive = false, train = false, merge = false, discard_shards = false;
  int add_shard = -1, batch = 32, threads = 0, decode_threads = 0;
  uint64_t id_memory = uint64_t{1} << 30;
};

std::shared_ptr<Model> load_model(const BuildArgs& a) {
  if (a.model.empty()) throw Error(ErrorCode::InvalidArgument, "--model is required to embed the sources");
  ModelOptions mo;
  mo.dtype = a.dtype;
  mo.threads = a.threads;
  mo.arch = a.arch;
  mo.text_model = a.text_model;
  mo.tokenizer = a.tokenizer;
  return Model::load(a.model, mo);
}

// Test hook: CLIPKIT_TEST_KILL_SHARD="I:B" kills the process embedding shard I after B committed batches.
void maybe_kill(int shard, int64_t batches_done) {
  const char* v = std::getenv("CLIPKIT_TEST_KILL_SHARD");
  if (!v) return;
  int s = -1;
  long long b = -1;
  if (std::sscanf(v, "%d:%lld", &s, &b) == 2 && s == shard && batches_done >= b) std::raise(SIGKILL);
}

void print_failures(const std::vector<AddFailure>& failures) {
  for (const auto& f : failures) warn(kVerb, "failed: " + failure_text(f.path, f.reason));
}

void run_shard(const dist::BuildOptions& o, const BuildArgs& a, int i, int n) {
  auto model = load_model(a);
  dist::BuildOptions oo = o;
  int64_t batches = 0;
  oo.on_batch = [&](int64_t) { maybe_kill(i, ++batches); };
  const dist::ShardReport r = dist::embed_shard(oo, *model, i, n);
  print_failures(r.failures);
  if (r.already_complete) {
    std::cout << "shard " << i << "/" << n << ": already embedded (" << r.files << " files)\n";
    return;
  }
  std::cout << "shard " << i << "/" << n << ": " << r.files << " files, " << r.embedded << " contents embedded, " << r.duplicates
            << " duplicates, " << r.failures.size() << " failed";
  if (r.resumed_at > 0) std::cout << " (resumed after " << r.resumed_at << " committed files)";
  std::cout << "\n";
}

void run_train(const dist::BuildOptions& o) {
  const dist::TrainReport r = dist::train(o);
  if (r.already_done) {
    std::cout << "training: already done (" << r.factory << ", " << r.items << " contents)\n";
    return;
  }
  std::cout << "training: " << r.shards << " shards, " << r.files << " files, " << r.items << " contents; " << r.factory;
  if (r.sample) std::cout << " trained on " << r.sample << " vectors";
  if (r.id_buckets > 1) std::cout << "; duplicates searched in " << r.id_buckets << " buckets";
  std::cout << "\n";
}

void run_add(const dist::BuildOptions& o, int i) {
  const dist::AddShardReport r = dist::add_shard(o, i);
  if (r.already_done) std::cout << "shard " << i << ": already added\n";
  else std::cout << "shard " << i << ": " << r.added << " contents ready for the merge" << (r.lists ? ", added to the trained index" : "") << "\n";
}

void run_merge(const dist::BuildOptions& o) {
  const dist::MergeReport r = dist::merge(o);
  std::cout << (r.already_done ? "merge: already done: " : "merged: ") << r.items << " contents, " << r.files << " files in " << o.dir;
  if (!r.already_done) std::cout << " (" << r.structure << ", " << r.index_bytes << " bytes)";
  std::cout << "\n";
  if (r.failed) throw Error(ErrorCode::Io, std::to_string(r.failed) + " file(s) could not be added (listed when their shard was embedded)");
}

void run(const BuildArgs& a) {
  if (a.batch <= 0) throw Error(ErrorCode::InvalidArgument, "--commit-every must be positive");
  if (a.threads < 0 || a.decode_threads < 0)
    throw Error(ErrorCode::InvalidArgument, "--threads and --decode-threads must be 0 (one per core) or more");
  const int phases = (!a.shard.empty()) + a.train + (a.add_shard >= 0) + a.merge;
  if (phases > 1) throw Error(ErrorCode::InvalidArgument, "give one of --shard, --train, --add-shard and --merge");
  dist::BuildOptions o;
  o.dir = a.dir;
  o.kind = a.kind;
  o.sources = a.sources;
  o.recursive = a.recursive;
  o.batch = a.batch;
  o.threads = a.decode_threads;
  o.scratch = a.scratch;
  o.discard_shards = a.discard_shards;
  if (a.id_memory == 0 || a.id_memory > (uint64_t{1} << 50)) throw Error(ErrorCode::InvalidArgument, "--id-memory must be a positive size such as 512MB");
  o.id_memory = static_cast<int64_t>(a.id_memory);
  if ((phases == 0 || !a.shard.empty()) && a.sources.empty())
    throw Error(ErrorCode::InvalidArgument, "SOURCE is required to embed files (give image files or folders)");
  int rank = 0, size = 1;
  const bool mpi = dist::launched_by_mpi(&rank, &size);
  if (mpi && phases > 0)
    throw Error(ErrorCode::InvalidArgument, "under mpirun the build runs every phase itself; leave out --shard, --train, --add-shard and --merge");
  if (mpi) {
    dist::DriverHooks h;
    h.load_model = [&] { return load_model(a); };
    h.say = [](const std::string& line) { std::cout << line << std::endl; };
    h.fail = [](const std::string& line) { std::cerr << "clipkit " << kVerb << ": " << line << std::endl; };
    h.on_batch = [batches = int64_t{0}](int r, int64_t) mutable { maybe_kill(r, ++batches); };
    if (dist::run_mpi_build(o, h) != 0) throw Error(ErrorCode::Io, "some files could not be added (listed above)");
    return;
  }
  if (!a.shard.empty()) {
    int i = 0, n = 1;
    dist::parse_shard_spec(a.shard, &i, &n);
    run_shard(o, a, i, n);
  } else if (a.train) {
    run_train(o);
  } else if (a.add_shard >= 0) {
    run_add(o, a.add_shard);
  } else if (a.merge) {
    run_merge(o);
  } else {
    if (dist::count_shards(o.dir) > 1)
      throw Error(ErrorCode::InvalidArgument, dist::shards_dir(o.dir) + " holds the shards of a build with several shards; run its phases (or mpirun) instead");
    run_shard(o, a, 0, 1);
    run_train(o);
    run_add(o, 0);
    run_merge(o);
  }
}

}  // namespace

void add_index_build(CLI::App* index) {
  auto args = std::make_shared<BuildArgs>();
  auto* b = index->add_subcommand("build", "Build a new index in phases that can run on many machines (mpirun, or one command per phase)");
  b->add_option("INDEX_DIR", args->dir, "Index folder (shards are kept in its shards/ folder)")->required();
  b->add_option("SOURCE", args->sources, "Image files or folders (needed to embed)");
  b->add_option("--model", args->model, "Model file or folder (needed to embed)");
  clipkit::cli::add_arch_option(b, args->arch);
  clipkit::cli::add_text_model_options(b, args->text_model, args->tokenizer);
  b->add_option("--kind", args->kind, "flat (default), hnsw, ivfpq or a faiss factory string; IVF kinds are served from disk")
      ->capture_default_str();
  b->add_flag("--recursive,-r", args->recursive, "Descend into sub-folders of folder sources");
  b->add_option("--shard", args->shard, "Phase 1 only: embed share I of N (I/N, 0-based); rerun to resume");
  b->add_flag("--train", args->train, "Phase 2 only: assign ids and train on a sample from every shard");
  b->add_option("--add-shard", args->add_shard, "Phase 3 only: add shard I's vectors to the trained index");
  b->add_flag("--merge", args->merge, "Phase 4 only: merge the shards into the index (rerun after an interruption)");
  b->add_option("--scratch", args->scratch,
                 "Embed each shard in this folder (node-local disk) and copy it into INDEX_DIR/shards once finished");
  b->add_flag("--discard-shards", args->discard_shards,
              "Once a shard is added, keep only its description, not its vectors (less disk; training another kind then needs the shards embedded again)");
  b->add_option("--id-memory", args->id_memory,
                 "Training phase: memory for finding duplicate contents, e.g. 512MB (default 1GB, about 96 bytes per file); with "
                 "more files it searches them in buckets written to disk")
      ->transform(CLI::AsSizeValue(false).description(""))
      ->type_name("SIZE");
  b->add_option("--commit-every", args->batch, "Files embedded and committed together in a shard")->capture_default_str();
  b->add_option("--dtype", args->dtype, "Weights/compute for embedding: f32 (default), f16 or int8 (fastest)");
  b->add_option("--threads", args->threads, "Compute threads (0 = one per core)");
  b->add_option("--decode-threads", args->decode_threads, "Image decoding threads (0 = one per core)");
  add_examples(b, {"clipkit index build photos.idx ~/Pictures --model ViT-B-32.pt --recursive",
                   "mpirun -np 4 clipkit index build big.idx /data/images --model ViT-B-32.pt --kind ivfpq --recursive --scratch /local/tmp"});
  b->callback([args] { run(*args); });
}

}  // namespace clipkit::cli
