// Batches of image files read, hashed, checked and decoded for callers that record them (see
// ingest_files.h).
#include "model/ingest_files.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <set>
#include <thread>

#include "clipkit/model.h"
#include "core/mapped_file.h"
#include "core/parallel_for.h"
#include "io/download.h"

namespace clipkit {

namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }


}  // namespace

std::unique_ptr<IngestFileBatch> prepare_file_batch(const std::vector<std::string>& paths, size_t begin, size_t end,
                                                    const IngestFileChecks& checks, const IngestFileOptions& options,
                                                    DecodePool& pool) {
  auto batch = std::make_unique<IngestFileBatch>();
  batch->begin = begin;
  batch->end = end;
  batch->pause = decoding_pauses_for_model() ? &pool : nullptr;
  std::vector<IngestFile>& w = batch->files;
  w.resize(end - begin);
  parallel_for(static_cast<int64_t>(w.size()), options.threads, [&](int64_t i) {
    IngestFile& x = w[static_cast<size_t>(i)];
    x.path = paths[begin + static_cast<size_t>(i)];
    struct stat st {};
    if (::stat(x.path.c_str(), &st) != 0) {
      x.error = std::string("cannot stat: ") + std::strerror(errno);
      return;
    }
    if (!S_ISREG(st.st_mode)) {
      x.error = "not a regular file";
      return;
    }
    x.size = st.st_size;
    x.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  });
  if (checks.check_path)
    for (auto& x : w)
      if (x.error.empty()) checks.check_path(x);
  parallel_for(static_cast<int64_t>(w.size()), options.threads, [&](int64_t i) {
    IngestFile& x = w[static_cast<size_t>(i)];
    if (!x.error.empty() || x.skip) return;
    try {
      x.data = read_file(x.path);
      x.size = static_cast<int64_t>(x.data.size());
      x.sha = sha256_digest_hex(x.data.data(), x.data.size());
    } catch (const std::exception& e) {
      x.error = first_line(e.what());
    }
  });
  // A content stored already, or met earlier in this batch, is not decoded again.
  {
    std::set<std::string> in_batch;
    for (auto& x : w) {
      if (!x.error.empty() || x.skip) continue;
      if (checks.content_stored && checks.content_stored(x.sha)) continue;
      if (in_batch.insert(x.sha).second) x.embed = true;
    }
  }
  IngestFile* items = w.data();
  const PreprocessConfig pc = options.preprocess;
  const DecodeOptions decode = options.decode;
  const int64_t px = 3LL * pc.resolution * pc.resolution;
  batch->decoded = pool.submit(static_cast<int64_t>(w.size()), [items, pc, decode, px](int64_t i) {
    IngestFile& x = items[i];
    if (x.embed) {
      try {
        Image img = decode_image_memory(reinterpret_cast<const uint8_t*>(x.data.data()), x.data.size(), x.path, decode);
        x.width = img.width;
        x.height = img.height;
        x.pixels.resize(static_cast<size_t>(px));
        preprocess(img, pc, x.pixels.data());
      } catch (const std::exception& e) {
        x.error = first_line(e.what());
        if (x.error.rfind(x.path + ": ", 0) == 0) x.error.erase(0, x.path.size() + 2);  // the caller names the path
        x.embed = false;
      }
    }
    std::string().swap(x.data);
  });
  return batch;
}

void run_file_batches(const std::vector<std::string>& paths, size_t begin, size_t end, const IngestFileChecks& checks,
                      const IngestFileOptions& options, const std::function<void(IngestFileBatch&)>& consume) {
  const size_t step = std::max<size_t>(1, options.batch);
  std::unique_ptr<IngestFileBatch> next;
  // After `next`: its workers stop before the batches go.
  DecodePool pool(decode_thread_count(options.threads), /*below_normal=*/!decoding_pauses_for_model());
  if (begin < end) next = prepare_file_batch(paths, begin, std::min(end, begin + step), checks, options, pool);
  while (next) {
    const std::unique_ptr<IngestFileBatch> cur = std::move(next);
    cur->decoded->wait();
    if (cur->end < end) next = prepare_file_batch(paths, cur->end, std::min(end, cur->end + step), checks, options, pool);
    // A content the previous batch stored after this one was checked is stored now.
    if (checks.content_stored)
      for (auto& x : cur->files)
        if (x.embed && checks.content_stored(x.sha)) {
          x.embed = false;
          std::vector<float>().swap(x.pixels);
        }
    consume(*cur);
  }
}

IngestEmbedded embed_file_batch(const Model& model, IngestFileBatch& batch, int64_t dim) {
  IngestEmbedded out;
  std::vector<IngestFile>& w = batch.files;
  for (size_t i = 0; i < w.size(); ++i)
    if (w[i].embed) out.order.push_back(i);
  if (out.order.empty()) return out;
  const size_t px = w[out.order.front()].pixels.size();
  std::vector<float> pixels(out.order.size() * px);
  for (size_t k = 0; k < out.order.size(); ++k) {
    std::memcpy(pixels.data() + k * px, w[out.order[k]].pixels.data(), px * sizeof(float));
    std::vector<float>().swap(w[out.order[k]].pixels);
  }
  std::string err;
  try {
    const DecodePool::Paused paused(batch.pause);
    out.rows = model.encode_images(pixels.data(), static_cast<int64_t>(out.order.size()), true);
    if (out.rows.rows != static_cast<int64_t>(out.order.size()) || out.rows.dim != dim)
      err = "model returned " + std::to_string(out.rows.rows) + "x" + std::to_string(out.rows.dim) + " embeddings";
  } catch (const std::exception& ex) {
    err = first_line(ex.what());
  }
  if (!err.empty()) {
    out.rows = Embeddings();
    for (size_t i : out.order) {
      w[i].error = "embedding failed: " + err;
      w[i].embed = false;
    }
  }
  return out;
}

}  // namespace clipkit
