// clipkit::Index::add_files: decoding, embedding and committing a set of image files in batches.
#include "search/index_impl.h"
#include "search/source_files.h"

#include "model/ingest.h"

namespace clipkit {

AddReport Index::add_files(const std::vector<std::string>& inputs, const Model& model, const AddOptions& options) {
  Impl& m = *impl_;
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Write);
  Impl::WriteScope write(m);
  check_model(model);
  if (options.batch <= 0) throw Error(ErrorCode::InvalidArgument, "batch size must be positive, got " + std::to_string(options.batch));
  for (const auto& t : options.tags)
    if (t.empty()) throw Error(ErrorCode::InvalidArgument, "empty tag");
  // Metadata is checked before anything is written, and stored in its canonical form.
  std::map<std::string, std::string> meta;
  for (const auto& [path, text] : options.meta)
    meta[normalize_path(path)] = search::parse_meta_object(text, "metadata of " + path).dump();
  AddReport rep;
  // 1. Expand the inputs into a sorted list of candidate files.
  std::vector<search::SourceProblem> problems;
  const std::vector<std::string> files = search::list_image_files(inputs, options.recursive, m.dir, &problems);
  for (const auto& p : problems) rep.failures.push_back({p.input, p.reason});
  rep.candidates = static_cast<int64_t>(files.size());

  const PreprocessConfig pc = model.preprocess_config();
  const int64_t px = 3LL * pc.resolution * pc.resolution;
  const DecodeOptions decode = ingest_decode_options(pc, options.fast_decode);
  AddProgress prog;
  prog.total = rep.candidates;

  struct Work {
    std::string path;
    int64_t size = 0, mtime_ns = 0;
    bool known = false;          // path already indexed
    int64_t known_item = -1;
    bool skip = false;
    std::string data, sha, error;
    bool needs_embed = false;
    int width = 0, height = 0;
    std::vector<float> pixels;
  };

  // Each batch is read, hashed and checked against the catalog here, then decoded by the ingest
  // pipeline's threads while the model embeds and the catalog commits the batch before it.
  struct Batch {
    size_t b0 = 0, b1 = 0;
    std::vector<Work> w;
    std::shared_ptr<DecodePool::Group> decoded;
  };
  auto prepare = [&](size_t b0, DecodePool& pool) {
    auto batch = std::make_unique<Batch>();
    batch->b0 = b0;
    batch->b1 = std::min(files.size(), b0 + static_cast<size_t>(options.batch));
    std::vector<Work>& w = batch->w;
    w.resize(batch->b1 - b0);
    {
      Stmt known(m.db, "SELECT item_id, size, mtime_ns FROM files WHERE path = ?1");
      for (size_t i = 0; i < w.size(); ++i) {
        Work& x = w[i];
        x.path = files[b0 + i];
        struct stat st {};
        if (::stat(x.path.c_str(), &st) != 0) {
          x.error = std::string("cannot stat: ") + std::strerror(errno);
          continue;
        }
        if (!S_ISREG(st.st_mode)) {
          x.error = "not a regular file";
          continue;
        }
        x.size = st.st_size;
        x.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
        known.reset();
        known.bind(1, x.path);
        if (known.step()) {
          x.known = true;
          x.known_item = known.i64(0);
          if (known.i64(1) == x.size && known.i64(2) == x.mtime_ns) x.skip = true;
        }
      }
    }
    // Read + hash (parallel).
    parallel_for(static_cast<int64_t>(w.size()), options.threads, [&](int64_t i) {
      Work& x = w[static_cast<size_t>(i)];
      if (!x.error.empty() || x.skip) return;
      try {
        x.data = read_file(x.path);
        x.size = static_cast<int64_t>(x.data.size());
        x.sha = content_sha256(x.data.data(), x.data.size());
      } catch (const std::exception& e) {
        x.error = first_line(e.what());
      }
    });
    // Which contents are new?
    std::set<std::string> embedding;  // sha's to embed in this batch
    {
      Stmt find(m.db, "SELECT id FROM items WHERE sha256 = ?1");
      for (auto& x : w) {
        if (!x.error.empty() || x.skip) continue;
        find.reset();
        find.bind(1, x.sha);
        if (find.step()) continue;
        if (embedding.insert(x.sha).second) x.needs_embed = true;
      }
    }
    // Decode + preprocess the new contents (on the pipeline's threads).
    Work* items = w.data();
    batch->decoded = pool.submit(static_cast<int64_t>(w.size()), [items, &pc, &decode, px](int64_t i) {
      Work& x = items[i];
      if (!x.needs_embed) return;
      try {
        Image img = decode_image_memory(reinterpret_cast<const uint8_t*>(x.data.data()), x.data.size(), x.path, decode);
        x.width = img.width;
        x.height = img.height;
        x.pixels.resize(static_cast<size_t>(px));
        preprocess(img, pc, x.pixels.data());
      } catch (const std::exception& e) {
        x.error = first_line(e.what());
        if (x.error.rfind(x.path + ": ", 0) == 0) x.error.erase(0, x.path.size() + 2);  // the report names the path
        x.needs_embed = false;
      }
      std::string().swap(x.data);
    });
    return batch;
  };

  std::unique_ptr<Batch> next;
  DecodePool pool(decode_thread_count(options.threads));  // after `next`: its workers stop before the batches go
  if (!files.empty()) next = prepare(0, pool);
  while (next) {
    const std::unique_ptr<Batch> cur = std::move(next);
    cur->decoded->wait();
    if (cur->b1 < files.size()) next = prepare(cur->b1, pool);
    const size_t b1 = cur->b1;
    std::vector<Work>& w = cur->w;
    {
      // A content the previous batch committed after this one was checked is a duplicate now.
      Stmt find(m.db, "SELECT id FROM items WHERE sha256 = ?1");
      for (auto& x : w) {
        if (!x.needs_embed) continue;
        find.reset();
        find.bind(1, x.sha);
        if (find.step()) {
          x.needs_embed = false;
          std::vector<float>().swap(x.pixels);
        }
      }
    }
    // Embed.
    std::vector<size_t> order;
    for (size_t i = 0; i < w.size(); ++i)
      if (w[i].needs_embed) order.push_back(i);
    Impl::Change c;
    c.tags = options.tags;
    for (const auto& x : w) {
      const auto mi = meta.find(x.path);
      if (mi != meta.end()) c.meta.insert(*mi);
    }
    if (!order.empty()) {
      std::vector<float> pixels(order.size() * static_cast<size_t>(px));
      for (size_t k = 0; k < order.size(); ++k)
        std::memcpy(pixels.data() + k * px, w[order[k]].pixels.data(), static_cast<size_t>(px) * sizeof(float));
      Embeddings e;
      std::string err;
      try {
        e = model.encode_images(pixels.data(), static_cast<int64_t>(order.size()), true);
        if (e.rows != static_cast<int64_t>(order.size()) || e.dim != m.dim)
          err = "model returned " + std::to_string(e.rows) + "x" + std::to_string(e.dim) + " embeddings";
      } catch (const std::exception& ex) {
        err = first_line(ex.what());
      }
      for (size_t k = 0; k < order.size(); ++k) {
        Work& x = w[order[k]];
        if (!err.empty()) {
          x.error = "embedding failed: " + err;
          continue;
        }
        c.items.push_back({x.sha, x.size, x.width, x.height, std::vector<float>(e.row(static_cast<int64_t>(k)), e.row(static_cast<int64_t>(k)) + m.dim)});
      }
    }
    // Why each content that failed failed: a path sharing that content gets the same reason.
    std::map<std::string, std::string> failed_content;
    for (const auto& x : w)
      if (!x.sha.empty() && !x.error.empty()) failed_content.emplace(x.sha, x.error);
    // Files to (re)link, and the report.
    std::set<std::string> embedded_ok;
    for (const auto& it : c.items) embedded_ok.insert(it.sha256);
    {
      Stmt find(m.db, "SELECT id FROM items WHERE sha256 = ?1");
      Stmt tagq(m.db, "SELECT 1 FROM tags WHERE path = ?1 AND tag = ?2");
      for (auto& x : w) {
        if (!x.error.empty()) {
          // a content shared with a failed embedding in the same batch fails too
          rep.failures.push_back({x.path, x.error});
          continue;
        }
        if (x.skip) {
          // unchanged; still attach new tags
          bool tag_missing = false;
          for (const auto& t : options.tags) {
            tagq.reset();
            tagq.bind(1, x.path).bind(2, t);
            if (!tagq.step()) tag_missing = true;
          }
          if (tag_missing || c.meta.count(x.path)) {
            Stmt sha(m.db, "SELECT i.sha256, f.size, f.mtime_ns FROM files f JOIN items i ON i.id = f.item_id WHERE f.path = ?1");
            sha.bind(1, x.path);
            if (sha.step()) c.files.push_back({x.path, sha.text(0), sha.i64(1), sha.i64(2)});
          }
          ++rep.skipped;
          continue;
        }
        find.reset();
        find.bind(1, x.sha);
        const bool in_catalog = find.step();
        const int64_t existing = in_catalog ? find.i64(0) : -1;
        if (!in_catalog && !embedded_ok.count(x.sha)) {
          const auto why = failed_content.find(x.sha);
          rep.failures.push_back({x.path, why != failed_content.end() ? why->second : "content could not be embedded"});
          continue;
        }
        c.files.push_back({x.path, x.sha, x.size, x.mtime_ns});
        if (x.known) {
          if (existing == x.known_item) ++rep.skipped;  // touched but same bytes
          else ++rep.updated;
        } else if (in_catalog || (x.needs_embed == false && embedded_ok.count(x.sha))) {
          ++rep.duplicates;
        } else {
          ++rep.added;
        }
      }
    }
    if (!c.items.empty() || !c.files.empty()) m.commit(c);
    prog.done = static_cast<int64_t>(b1);
    prog.batches++;
    if (options.on_batch) options.on_batch(prog);
  }
  rep.failed = static_cast<int64_t>(rep.failures.size());
  m.maybe_train();
  m.flush();
  return rep;
}


}  // namespace clipkit
