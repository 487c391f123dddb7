// Internal to the sharded build (see build.h): the shard files, the files the phases hand each other
// (final ids, trained structure, added lists) and the faiss helpers every phase uses.
#pragma once
#include <faiss/Index.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dist/build.h"
#include "search/index_impl.h"

namespace clipkit::dist {

inline constexpr const char* kShardsDir = "shards";
inline constexpr const char* kTrainedName = "trained.faiss";
inline constexpr const char* kTrainedMeta = "trained.meta";
inline constexpr const char* kStagingDir = ".build-staging";
// The exact vectors of the whole build, in id order (search::ExactVectors format): created at its
// full size by the training phase, filled by every shard's add phase at its own ids, and linked
// (not copied) into the index by the merge.
inline constexpr const char* kBuildVectorsName = "vectors.f32";

// Identifies a file list: FNV-1a over the paths and their count (16 hex digits).
std::string hash_list(const std::vector<std::string>& files);

// Sends stdout to /dev/null while alive (faiss prints progress there unasked).
class QuietStdout {
 public:
  QuietStdout();
  ~QuietStdout();
  QuietStdout(const QuietStdout&) = delete;
  QuietStdout& operator=(const QuietStdout&) = delete;

 private:
  int saved_ = -1;
};

std::string faiss_message(const std::exception& e);
void write_faiss_atomic(const faiss::Index& index, const std::string& path);
std::unique_ptr<faiss::Index> read_faiss(const std::string& path, int flags = 0);

void set_meta(Db& db, const std::string& key, const std::string& value);
std::optional<std::string> get_meta(Db& db, const std::string& key);

// What a shard file says about itself.
struct ShardMeta {
  ShardIdentity id;
  int shard = 0, shards = 0;
  int64_t first = 0, count = 0;
  bool complete = false;
  bool rows_dropped = false;  // added with BuildOptions::discard_shards: only the description is left
};
// Replaces a shard file by one holding only its description (its rows are in the phase-3 files).
void drop_shard_rows(const std::string& dir, int i, int n);
// The list hash of the build that made INDEX_DIR's catalog (empty when there is no catalog or it
// was not made by a sharded build). Once merged, shards/ may be removed: every phase then
// recognises the finished build by it.
std::string finished_build(const std::string& dir);
// What a phase that needs a dropped shard's rows says.
std::string rows_dropped_message(const std::string& dir, int i, int n);
ShardMeta read_shard_meta(Db& db);

// Opens (creating when absent) a shard file for `id`; throws Error(Mismatch) when it was started for
// another file list, model or shard count.
ShardMeta open_shard(Db& db, const std::string& path, const ShardIdentity& id, int shard, int n_shards);

// The files a shard's later phases write beside it: final ids (.ids, phase 2), and from phase 3 its
// part of the catalog (.part.sqlite: items and files under their final ids; for on-disk kinds the
// items carry no vectors, which the exact vector file holds) and its added lists (.ivf, IVF kinds).
std::string ids_path(const std::string& dir, int i, int n);
std::string lists_path(const std::string& dir, int i, int n);
std::string part_catalog_path(const std::string& dir, int i, int n);
std::string build_vectors_path(const std::string& dir);

// Every shard of a finished phase 1, checked against each other.
struct ShardSet {
  int n = 0;
  ShardIdentity id;
  std::vector<ShardMeta> metas;
};
ShardSet open_all_shards(const std::string& dir);

// key=value lines (trained.meta).
std::map<std::string, std::string> read_kv(const std::string& path);
std::vector<int64_t> read_ids(const std::string& path, int64_t count);

// What the training phase recorded.
struct Trained {
  std::string list_hash, kind, factory;
  bool ondisk = false;
  int64_t items = 0;
};
Trained read_trained(const std::string& dir, const ShardSet& s);

// The id pass of phase 2 (id_pass.cpp): writes every shard's final ids (.ids: the file's id at
// the content's first appearance, minus the first appearance's id for a duplicate, 0 for a failed
// file). Its hash table holds the contents of one bucket at a time: the files are split into
// id_pass_buckets(files, memory) buckets by the hash's first bits, written under
// shards/id-pass/ (40 bytes per file) when there is more than one, and removed once done.
inline constexpr const char* kIdPassDir = "id-pass";
inline constexpr int64_t kIdPassBytesPerContent = 96;  // a hash table entry, its slot and the allocator's share
inline constexpr int64_t kIdPassMaxBuckets = 65536;
int id_pass_buckets(int64_t files, int64_t memory);
struct IdPassResult {
  int64_t items = 0;           // distinct contents (= the last id)
  int buckets = 0;
  int64_t largest_bucket = 0;  // contents in the largest bucket (what the table held at most)
};
IdPassResult assign_ids(const std::string& dir, const ShardSet& s, int64_t memory);

}  // namespace clipkit::dist
