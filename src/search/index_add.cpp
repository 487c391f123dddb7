// clipkit::Index::add_files: decoding, embedding and committing a set of image files in batches.
#include "search/index_impl.h"
#include "search/source_files.h"

#include "model/ingest_files.h"

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

  AddProgress prog;
  prog.total = rep.candidates;

  // Each batch is read, hashed and checked against the catalog by the ingest layer, then decoded by
  // its threads while the model embeds and the catalog commits the batch before it.
  IngestFileChecks checks;
  Stmt known(m.db, "SELECT item_id, size, mtime_ns FROM files WHERE path = ?1");
  checks.check_path = [&known](IngestFile& x) {
    known.reset();
    known.bind(1, x.path);
    if (known.step()) {
      x.record = known.i64(0);
      if (known.i64(1) == x.size && known.i64(2) == x.mtime_ns) x.skip = true;
    }
    known.reset();  // no statement stays open across the batches' commits
  };
  Stmt find_content(m.db, "SELECT id FROM items WHERE sha256 = ?1");
  checks.content_stored = [&find_content](const std::string& sha) {
    find_content.reset();
    find_content.bind(1, sha);
    const bool found = find_content.step();
    find_content.reset();
    return found;
  };
  IngestFileOptions io;
  io.batch = static_cast<size_t>(options.batch);
  io.threads = options.threads;
  io.preprocess = model.preprocess_config();
  io.decode = ingest_decode_options(io.preprocess, options.fast_decode);

  run_file_batches(files, 0, files.size(), checks, io, [&](IngestFileBatch& batch) {
    const size_t b1 = batch.end;
    std::vector<IngestFile>& w = batch.files;
    // Embed.
    Impl::Change c;
    c.tags = options.tags;
    for (const auto& x : w) {
      const auto mi = meta.find(x.path);
      if (mi != meta.end()) c.meta.insert(*mi);
    }
    const IngestEmbedded e = embed_file_batch(model, batch, m.dim);
    for (size_t k = 0; k < e.order.size() && e.rows.rows > 0; ++k) {
      const IngestFile& x = w[e.order[k]];
      c.items.push_back({x.sha, x.size, x.width, x.height,
                         std::vector<float>(e.rows.row(static_cast<int64_t>(k)), e.rows.row(static_cast<int64_t>(k)) + m.dim)});
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
        if (x.record) {
          if (existing == *x.record) ++rep.skipped;  // touched but same bytes
          else ++rep.updated;
        } else if (in_catalog || (!x.embed && embedded_ok.count(x.sha))) {
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
  });
  rep.failed = static_cast<int64_t>(rep.failures.size());
  m.maybe_train();  // the cache file is written when the Index closes
  return rep;
}


}  // namespace clipkit
