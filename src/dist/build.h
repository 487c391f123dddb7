// Sharded index building: the phases of `clipkit index build`, each runnable on its own (a job
// array, a shell loop) or by the MPI driver (mpi_driver.h), one rank per shard.
//
//   shard I/N   lists the sources (sorted, as `index add` does), takes the I-th of N contiguous
//               slices, decodes and embeds it into INDEX_DIR/shards/shard-I-of-N.sqlite, one
//               transaction per batch; a rerun resumes after the last committed batch. With a
//               scratch folder the shard is written there and copied in once finished.
//   train       reads every shard: assigns the final ids (first appearance of each content in
//               the sorted list, as a single `index add` of the same sources does; the duplicate
//               search holds one bucket of the contents at a time, see id_memory), writes them
//               per shard, and trains the faiss structure on a uniform sample of the vectors.
//   add I       writes shard I's part of the merge (its catalog rows under their final ids, its new
//               exact vectors in id order) and, for IVF kinds, adds its new vectors to a copy of
//               the trained structure; every shard does this at the same time.
//   merge       appends the shards' parts, in order, into the catalog (one row per content and
//               path, in id order) and the flat vector file for exact re-ranking, and for IVF kinds
//               merges the shards' lists into one on-disk index (faiss OnDiskInvertedLists). Everything is
//               written in a staging folder and moved in, catalog last: a rerun after an
//               interruption starts the merge again, a rerun after success does nothing.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "clipkit/index.h"

namespace clipkit {
class Model;
}

namespace clipkit::dist {

struct BuildOptions {
  std::string dir;                    // index folder
  std::string kind = "flat";          // flat | hnsw | ivfpq | faiss factory string
  std::vector<std::string> sources;   // files and folders
  bool recursive = false;
  int batch = 256;                    // files per committed shard transaction
  int threads = 0;                    // decode threads (0 = one per core)
  // Node-local folder where the embedding phase writes its shard; the shard is copied into the
  // index's shards/ folder once finished, so the shared folder only receives finished shards.
  std::string scratch;
  // Once a shard is added (phase 3) its file keeps only its description, not its rows and vectors
  // (which its part and the exact vector file now hold): the build's peak disk use drops by about
  // the shards' size when there are more shards than shards added at once. Reruns of the same
  // build still skip or redo every phase; training another kind needs the shards embedded again.
  bool discard_shards = false;
  // Memory for the training phase's duplicate search (bytes, about 96 per content held). Beyond
  // about id_memory / 96 files the contents are split into buckets by their hash, written to disk
  // (40 bytes per file) and searched one bucket at a time.
  int64_t id_memory = int64_t{1} << 30;
  // Test hook: called after each committed shard batch with the number committed so far.
  std::function<void(int64_t)> on_batch;
};

// Which slice of `n` files shard `i` of `n_shards` takes: [first, first + count).
struct Slice {
  int64_t first = 0, count = 0;
};
Slice shard_slice(int64_t n, int i, int n_shards);

// The candidate files of `sources` exactly as `index add` finds them (absolute, normalised,
// sorted, unique, images only inside folders, nothing inside `index_dir`). Sources that do not
// exist are returned in `missing`.
std::vector<std::string> list_sources(const std::vector<std::string>& sources, bool recursive, const std::string& index_dir,
                                      std::vector<std::string>* missing);

// Parses "I/N" (0 <= I < N); throws Error(InvalidArgument).
void parse_shard_spec(const std::string& spec, int* i, int* n);

std::string shards_dir(const std::string& index_dir);
std::string shard_path(const std::string& index_dir, int i, int n_shards);

struct ShardReport {
  int shard = 0, shards = 0;
  int64_t files = 0;          // files in the slice
  int64_t resumed_at = 0;     // files already committed by an earlier run
  int64_t embedded = 0;       // contents embedded by this run
  int64_t duplicates = 0;     // files whose content appeared earlier in the slice
  bool already_complete = false;
  std::vector<AddFailure> failures;
};

// Phase 1: embeds one shard. Throws Error(Mismatch) when a shard file exists for another file
// list, model or shard count.
ShardReport embed_shard(const BuildOptions& o, const Model& model, int shard, int n_shards);

// Low level (benchmarks, tests): a shard of pre-computed vectors for a file list of `total`
// entries, rows [first, first + count).
struct ShardIdentity {
  std::string list_hash;      // identifies the file list every shard was cut from
  int64_t total = 0;          // files in that list
  std::string model_fingerprint, model_path;
  // A paired text tower and its tokenizer (ModelInfo::text_model_path, ::tokenizer_path) and the
  // open_clip name that configured the model (::arch_name); the merged index records them.
  std::string text_model_path, tokenizer_path, model_arch;
  int dim = 0;
};
// Written in order: append() the slice's rows (`paths`, `sha256` and `vectors`, count x dim), any
// number per call (one transaction each), then finish() marks the shard complete. Memory is what
// one call passes.
class ShardWriter {
 public:
  ShardWriter(const std::string& index_dir, int shard, int n_shards, const ShardIdentity& id);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  Slice slice() const;
  bool complete() const;  // finished by an earlier writer: append() is not needed
  void append(const std::vector<std::string>& paths, const std::vector<std::string>& sha256, const float* vectors);
  void finish();

 private:
  struct State;
  std::unique_ptr<State> st_;
};

struct TrainReport {
  int shards = 0;
  int64_t files = 0, items = 0;  // files in the list, unique contents (= final ids)
  int64_t sample = 0;            // vectors trained on (0: the kind needs no training)
  int id_buckets = 0;            // buckets of the duplicate search (1: all in memory at once)
  std::string factory;
  bool already_done = false;
};
// Phase 2 (one process): needs every shard complete.
TrainReport train(const BuildOptions& o);

struct AddShardReport {
  int shard = 0;
  int64_t added = 0;          // contents whose first appearance is in this shard
  bool lists = false;         // IVF kinds: they were also added to the trained structure
  bool already_done = false;
};
// Phase 3: needs the training done. Writes the shard's part of the merge (catalog rows, exact
// vectors) and, for IVF kinds, its inverted lists.
AddShardReport add_shard(const BuildOptions& o, int shard);

struct MergeReport {
  int64_t items = 0, files = 0, failed = 0;
  std::string structure;      // e.g. "IVF1024,PQ64 (on disk)"
  int64_t index_bytes = 0;    // bytes of the merged faiss files
  bool already_done = false;
};
// Phase 4 (one process): needs every shard added (IVF kinds).
MergeReport merge(const BuildOptions& o);

// How many shards INDEX_DIR/shards holds (0 when none); throws when they disagree.
int count_shards(const std::string& index_dir);

}  // namespace clipkit::dist
