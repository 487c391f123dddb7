// clipkit/index.h — an image search index: CLIP vectors in faiss, metadata in a SQLite catalog.
//
//   auto model = clipkit::Model::load("ViT-B-32.pt");
//   auto index = clipkit::Index::create("photos.idx", model->info(), {.kind = "hnsw"});
//   clipkit::AddReport r = index.add_files({"Pictures"}, *model, {.recursive = true});
//   clipkit::Query q = clipkit::parse_query("image:beach.jpg + 0.5*text:at sunset - text:people");
//   for (const auto& hit : index.search(q, model.get(), {.k = 10})) std::cout << hit.path << "\n";
//
// On disk an index is a folder: `catalog.sqlite` (WAL) is the source of truth and holds every
// vector as a float32 blob next to its metadata; `vectors.faiss` is a cache of the faiss structure,
// stamped with the catalog generation it reflects, brought up to date (or rebuilt) on open. Each
// ingest batch is one SQLite transaction, so a killed process loses at most the batch in flight.
// One content (SHA-256) is one vector/id; every path holding that content is listed with it.
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "clipkit/embeddings.h"

namespace clipkit {

class Model;
struct ModelInfo;

struct IndexCreateOptions {
  // flat (exact inner product, default) | hnsw (HNSW32) | ivfpq (IVF<n>,PQ<m> sized at training
  // time) | any faiss index_factory string, e.g. "IVF256,PQ32" or "HNSW16,Flat".
  std::string kind = "flat";
  // Kinds that need training keep vectors in an exact flat index until the catalog holds this
  // many vectors, then train; 0 = automatic (enough points for the k-means of the kind).
  int64_t train_min = 0;
};

// One indexed content: a single vector shared by every path with the same bytes.
struct CatalogItem {
  int64_t id = -1;
  std::string sha256;                  // hex digest of the file bytes
  int64_t size = 0;                    // bytes
  int width = 0, height = 0;           // decoded image size
  double added = 0;                    // unix time (s) the content was first indexed
  std::vector<std::string> paths;      // every indexed path with this content, sorted
  std::vector<int64_t> mtimes_ns;      // modification time of each path (same order)
  std::vector<std::string> tags;       // union of the tags of its paths, sorted
};

struct IndexInfo {
  std::string dir;
  std::string model_fingerprint;
  std::string model_path;
  std::string text_model_path;  // the paired text tower (ModelInfo::text_model_path), if any
  std::string tokenizer_path;   // its SentencePiece model, recorded with it
  std::string model_arch;    // the open_clip name that configured the model (ModelInfo::arch_name), or empty
  int dim = 0;
  std::string kind;          // as requested at create/rebuild
  std::string structure;     // what faiss holds now, e.g. "IDMap2,Flat" or "IDMap2,IVF64,PQ8"
  bool trained = true;       // false while an untrained kind is still staged as flat
  int64_t train_min = 0;     // vectors needed before training (untrained kinds)
  int64_t items = 0;         // unique contents (= vectors)
  int64_t files = 0;         // indexed paths
  int64_t generation = 0;    // catalog generation (one per committed change)
  double created = 0;        // unix time
};

struct AddProgress {
  int64_t done = 0;          // candidate files processed so far
  int64_t total = 0;         // candidate files found
  int64_t batches = 0;       // batches committed
};

struct AddOptions {
  bool recursive = false;           // descend into sub-folders of folder arguments
  int batch = 32;                   // files per committed transaction
  std::vector<std::string> tags;    // user tags attached to every added path
  int threads = 0;                  // decode threads (0 = one per core)
  bool fast_decode = false;         // decode large JPEGs at a reduced size first (not exact)
  // Metadata (a JSON object as text) per path, absolute and normalised as stored; committed in the
  // batch that adds the path (also for unchanged paths). Replaces the path's previous metadata.
  std::map<std::string, std::string> meta;
  // Called once per batch of candidate files, after its transaction committed (progress, tests).
  std::function<void(const AddProgress&)> on_batch;
};

struct AddFailure {
  std::string path;
  std::string reason;
};

struct AddReport {
  int64_t candidates = 0;    // files considered
  int64_t added = 0;         // new contents embedded
  int64_t updated = 0;       // known paths whose content changed (re-embedded or re-linked)
  int64_t duplicates = 0;    // new paths whose content was already indexed (stored once)
  int64_t skipped = 0;       // unchanged paths
  int64_t failed = 0;
  std::vector<AddFailure> failures;
};

// Restricts results to catalog entries; an item matches when one of its paths does.
struct SearchFilter {
  std::string path_prefix;           // path starts with this (absolute, as stored)
  std::vector<std::string> tags;     // path carries every one of these tags
};

struct SearchOptions {
  int k = 20;
  float min_score = -std::numeric_limits<float>::infinity();
  SearchFilter filter;
  std::vector<int64_t> exclude_ids;
  // Metadata filter (docs/search.md, "Filters"): 'category = "dress" and price < 50'. Combined with
  // `filter` (all must pass on one path of the item). Throws Error(InvalidArgument) naming the column.
  std::string where;
  int ef_search = 0;  // HNSW efSearch (0 = max(64, 2 * fetched))
  int nprobe = 0;     // IVF lists probed (0 = automatic from the list count)
  // Approximate kinds: re-score the candidates with the exact stored vectors (the catalog's, or
  // an on-disk build's memory-mapped vector file) and order by that; false keeps faiss's scores.
  bool rerank = true;
  // Filtered searches score a passing set of up to this many items exactly, one by one; a larger
  // one is searched in the faiss structure (IVF: restricted to the passing items by faiss's ID
  // selector; HNSW: a widening candidate set). The flat kind always scores exactly.
  int64_t exact_scan_max = 50000;
};

struct SearchHit {
  int rank = 0;          // 1-based
  float score = 0;       // cosine similarity of the query with the stored vector (exact unless rerank is off)
  std::string path;      // the first matching path
  CatalogItem item;
  std::string meta = "{}";  // metadata of `path` (a JSON object as text)
};


// A query is a weighted sum of unit vectors: Σ weight_i * normalize(embed(term_i)), normalised.
struct QueryTerm {
  enum class Kind { Text, Image, Item, Vector };
  Kind kind = Kind::Text;
  std::string value;            // text, image file, indexed path or "#id" / id
  float weight = 1.0f;
  std::vector<float> vector;    // Kind::Vector only
};

struct Query {
  std::vector<QueryTerm> terms;
  // Prompt templates for text terms ("a photo of a {}.", see clipkit::resolve_templates in
  // clipkit/zeroshot.h); when set, a text term's vector is the normalised mean of the normalised
  // embeddings of the filled templates.
  std::vector<std::string> templates;
  // Item terms exclude themselves (and their content duplicates) from the results (default on).
  bool exclude_items = true;
};

// Parses "image:a.jpg + 0.5*text:in red - text:indoors". A term is [sign][weight*]kind:value with
// kind text|image|like (like: an indexed path or id). Values run to the next " + " / " - " that
// starts a new term, or may be double-quoted ("text:\"a - b\""). Throws Error(InvalidArgument).
Query parse_query(const std::string& expression);

// Recommendation from examples (docs/search.md, "Recommendations"). Each example is a QueryTerm
// (its weight is ignored): an indexed item, a text, an image file or a raw vector.
struct RecommendOptions {
  enum class Strategy { Average, BestScore };
  std::vector<QueryTerm> positive, negative;
  Strategy strategy = Strategy::Average;
  // Maximal marginal relevance: 0 = pure relevance; up to 1 = diversity only.
  float diversity = 0;
  // Candidates whose cosine with an example reaches this are near-duplicates: never returned.
  float duplicate_threshold = 0.99f;
  SearchOptions search;  // k, filter, where, exclude_ids, ef_search, nprobe (min_score applies to the strategy's score)
};

// "average" | "best-score"; throws Error(InvalidArgument) for another name.
RecommendOptions::Strategy parse_strategy(const std::string& name);

struct DedupGroup {
  std::vector<int64_t> ids;        // first id is the group's representative
  std::vector<float> scores;       // cosine of each member with the representative (1 for itself)
  std::vector<std::vector<std::string>> paths;  // paths of each member
};

struct VerifyReport {
  bool ok = true;
  std::vector<std::string> problems;  // one line each
  std::vector<std::string> notes;     // informational (e.g. cache rebuilt)
  int64_t items = 0, files = 0, vectors = 0;
  int64_t hashed = 0;                 // files re-hashed (deep)
};

// Threads may share one Index: the reads (search, search_vector, recommend, find_*, vector,
// metadata, folders, info, dedup, refresh) run in parallel, each on an immutable snapshot of the
// index and through its own catalog connection; the changes (add_files, add_vectors,
// remove_paths, the metadata setters) run one at a time beside them and never wait for them; a
// change is seen whole by every read that starts after it returns. rebuild, verify and a
// fields_summary that has changes to fold in wait for the reads in flight (docs/search.md, "Live
// updates").
class Index {
 public:
  // Shared: opened like ReadOnly, but each write takes the writer lock for its own duration (and
  // first catches up with the catalog), so that other processes may write between two calls.
  enum class Mode { ReadOnly, ReadWrite, Shared };

  // Creates INDEX_DIR (must not hold an index yet). Throws Error(InvalidArgument) for a bad kind.
  static Index create(const std::string& dir, const ModelInfo& model, const IndexCreateOptions& options = {});
  // Opens an index. ReadWrite takes an exclusive lock (Error(Io) if another writer holds it) and
  // writes the refreshed faiss cache back; ReadOnly never changes the catalog and writes a repaired
  // cache back only when no writer holds the lock. Throws Error(Format) for a
  // corrupt catalog, Error(NotFound) for a folder without an index.
  static Index open(const std::string& dir, Mode mode = Mode::ReadWrite);

  Index(Index&&) noexcept;
  Index& operator=(Index&&) noexcept;
  ~Index();

  IndexInfo info() const;
  int dim() const;
  const std::string& dir() const;
  // Notes gathered on open (e.g. "faiss cache was stale: 12 vectors added from the catalog").
  const std::vector<std::string>& open_notes() const;

  // Throws Error(Mismatch) naming the model the index was built with when `model` differs.
  void check_model(const Model& model) const;

  // Adds files and folders (images only inside folders: jpg, jpeg, png, webp, bmp, gif). A changed
  // file is re-embedded, an unchanged one skipped, a duplicate stored once. Unreadable files are
  // reported in AddReport::failures, never thrown.
  AddReport add_files(const std::vector<std::string>& paths, const Model& model, const AddOptions& options = {});

  // Low level: adds one pre-computed vector (normalised here) for a content hash and path, in one
  // transaction per call of add_vectors (one per run of records with the same tags). A record's
  // `meta` (a JSON object as text, as set_metadata takes it; empty: none) replaces its path's
  // metadata in that same transaction, so that a reader sees the item and its metadata together.
  // Returns the ids. For tools, benchmarks and tests.
  struct VectorRecord {
    std::string path;
    std::string sha256;
    std::vector<float> vector;
    int64_t size = 0;
    int width = 0, height = 0;
    int64_t mtime_ns = 0;
    std::vector<std::string> tags;
    std::string meta;
  };
  std::vector<int64_t> add_vectors(const std::vector<VectorRecord>& records);

  // Catches up with changes other processes (or other Index objects) committed since this one was
  // opened or last refreshed, incrementally where the faiss structure allows. True when it moved.
  bool refresh();
  // The catalog's generation now, as committed by any process (one per committed change: files,
  // tags, metadata, removals, rebuilds); read from the catalog, without catching up (refresh).
  int64_t generation() const;

  // Metadata of an indexed path: a JSON object as text ("{}" when none). Error(NotFound) when the
  // path is not indexed.
  std::string metadata(const std::string& path) const;
  // Sets the metadata of indexed paths (path -> JSON object text) in one transaction: replaced, or
  // merged as a JSON merge patch (RFC 7386: null removes a field). Error(NotFound) names a path
  // that is not indexed, Error(InvalidArgument) a malformed or too large object; nothing is
  // changed then. Returns the number of paths changed.
  int64_t set_metadata(const std::vector<std::pair<std::string, std::string>>& entries, bool merge = false);
  // The same for every path of an item.
  int64_t set_item_metadata(int64_t id, const std::string& json_object, bool merge = false);
  // Removes the given fields (all metadata when `fields` is empty) from paths.
  int64_t unset_metadata(const std::vector<std::string>& paths, const std::vector<std::string>& fields = {});
  // Summary of the metadata fields (JSON text): {"fields": [{"name", "type", "count", "min", "max",
  // "values": [{"value", "count"}] (the 50 most frequent strings), "distinct"}], "paths": N}.
  std::string fields_summary() const;

  // Removes paths (files, or every indexed path under a folder). Returns how many were removed.
  // A content whose last path goes away loses its vector.
  int64_t remove_paths(const std::vector<std::string>& paths);

  // Converts the faiss structure to another kind from the stored vectors (no re-embedding).
  void rebuild(const std::string& kind, int64_t train_min = 0);
  // Checks catalog/vector consistency; deep also re-hashes the files still on disk.
  VerifyReport verify(bool deep = false);

  // Lookup by path (absolute or relative to the working directory), id or content hash (the hex
  // SHA-256 of the file bytes); false when not indexed. `out` may be null.
  bool find_path(const std::string& path, CatalogItem* out) const;
  bool find_id(int64_t id, CatalogItem* out) const;
  bool find_sha256(const std::string& sha256, CatalogItem* out) const;
  // The distinct folders that hold indexed files (as stored: absolute, not resolved), sorted.
  std::vector<std::string> folders() const;
  std::vector<float> vector(int64_t id) const;  // the stored (normalised) vector

  // Embeds a query into one unit vector (the model is needed for text and image terms).
  std::vector<float> embed_query(const Query& query, const Model* model) const;
  std::vector<SearchHit> search(const Query& query, const Model* model, const SearchOptions& options = {});
  std::vector<SearchHit> search_vector(const std::vector<float>& query, const SearchOptions& options = {});
  // Items ranked by the strategy's score from positive and negative examples (exact scores; the
  // examples and their near-duplicates are never returned).
  std::vector<SearchHit> recommend(const RecommendOptions& options, const Model* model);

  // Groups of items whose pairwise cosine is >= threshold (single linkage), plus contents stored
  // under several paths. Exact (uses the stored vectors).
  std::vector<DedupGroup> dedup(float threshold);

 private:
  struct Impl;
  explicit Index(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A where filter in its JSON form ({"and": [...]}, {"field": "price", "op": "<", "value": 50}, ...;
// docs/search.md) written as the string form. Throws Error(InvalidArgument).
std::string where_from_json(const std::string& json_text);

// Hex SHA-256 of a byte buffer (as stored in the catalog).
std::string content_sha256(const void* data, size_t size);

}  // namespace clipkit
