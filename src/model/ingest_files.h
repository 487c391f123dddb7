// Batches of image files for callers that keep their own record of each file (Index::add_files,
// the shards of a sharded build): each batch is read and hashed here, checked against the caller's
// record, and its new contents handed to the ingest pipeline's decoding threads, while the caller
// embeds and records the batch before it.
//
//   clipkit::IngestFileChecks checks;
//   checks.content_stored = [&](const std::string& sha) { return catalog_has(sha); };
//   clipkit::run_file_batches(paths, 0, paths.size(), checks, opt, [&](clipkit::IngestFileBatch& b) {
//     const clipkit::IngestEmbedded e = clipkit::embed_file_batch(model, b, dim);
//     ... record b.files, e.rows row k for b.files[e.order[k]] ...
//   });
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "clipkit/embeddings.h"
#include "clipkit/image.h"
#include "model/ingest.h"

namespace clipkit {

class Model;

struct IngestFile {
  std::string path;
  int64_t size = 0, mtime_ns = 0;  // from stat (size then the bytes read); 0 when stat failed
  std::string sha;                 // hex SHA-256 of the content; empty when it was not read
  std::string error;               // why the file failed, one line without its path; empty otherwise
  bool skip = false;               // IngestFileChecks::check_path: the caller has this file as it is (not read)
  std::optional<int64_t> record;   // IngestFileChecks::check_path: the caller's record of this path
  bool embed = false;              // a new content of the batch (its first file): decoded, to embed
  int width = 0, height = 0;       // the decoded image's size
  std::vector<float> pixels;       // [3, R, R] CLIP-normalised, while `embed`
  std::string data;                // the bytes read, until decoded
};

struct IngestFileBatch {
  size_t begin = 0, end = 0;                   // the files [begin, end) of the list
  std::vector<IngestFile> files;               // one per file, in order
  std::shared_ptr<DecodePool::Group> decoded;  // done: pixels, sizes and decoding errors are set
  DecodePool* pause = nullptr;                 // paused while the model embeds the batch, when set
};

// What the caller knows, asked on the preparing thread in file order.
struct IngestFileChecks {
  // After stat, before reading, for each file that exists: may set `skip` (the file is not read)
  // and `record`. Optional.
  std::function<void(IngestFile&)> check_path;
  // After hashing: whether a content is stored already (then it is not decoded). A content is
  // asked again once its batch is decoded, as the batch before it may have stored it meanwhile.
  std::function<bool(const std::string& sha)> content_stored;
};

struct IngestFileOptions {
  size_t batch = 32;   // files per batch
  int threads = 0;     // readers/hashers and decoding threads (0 = one per core)
  PreprocessConfig preprocess;
  DecodeOptions decode;
};

// Reads and hashes the files [begin, end) of `paths` (stat, then the checks, then the bytes, on
// `options.threads` threads), marks the first file of each content that is not stored as `embed`,
// and hands those to `pool` to decode and preprocess. The batch's `decoded` says when they are done;
// `pause` is `pool` when decoding_pauses_for_model.
std::unique_ptr<IngestFileBatch> prepare_file_batch(const std::vector<std::string>& paths, size_t begin, size_t end,
                                                    const IngestFileChecks& checks, const IngestFileOptions& options,
                                                    DecodePool& pool);

// The files [begin, end) of `paths` in batches of `options.batch`: each batch, once decoded, has
// the contents stored meanwhile dropped (content_stored again) and goes to `consume` on the calling
// thread, while the next batch is read, hashed, checked and decoded.
void run_file_batches(const std::vector<std::string>& paths, size_t begin, size_t end, const IngestFileChecks& checks,
                      const IngestFileOptions& options, const std::function<void(IngestFileBatch&)>& consume);

// The embeddings of the files of a decoded batch marked `embed` (normalised rows, `order[k]` the
// file of row k), with the batch's `pause` pool paused meanwhile. When the model fails, or returns other than one `dim`-wide row per image, every
// such file gets the error "embedding failed: REASON" and `embed` false, and `rows` is empty.
struct IngestEmbedded {
  std::vector<size_t> order;
  Embeddings rows;
};
IngestEmbedded embed_file_batch(const Model& model, IngestFileBatch& batch, int64_t dim);

}  // namespace clipkit
