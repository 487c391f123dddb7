// clipkit::Index::verify: checks the catalog, the files it names and the faiss cache against each other.
#include "search/index_impl.h"

namespace clipkit {

VerifyReport Index::verify(bool deep) {
  Impl& m = *impl_;
  const Impl::CallLock lock(m, Impl::CallLock::Kind::Exclusive);
  m.merge_pending();  // the structure as the reads see it, in one piece
  VerifyReport r;
  if (!m.tombstones.empty()) {
    // removals this reader applied as skips: compare the catalog with an exact structure
    r.notes.push_back(std::to_string(m.tombstones.size()) + " removed vector(s) were still in the structure; rebuilt from the catalog");
    m.rebuild_structure();
  }
  r.notes.insert(r.notes.end(), m.notes.begin(), m.notes.end());
  auto problem = [&](const std::string& s) {
    r.ok = false;
    r.problems.push_back(s);
  };
  {
    Stmt s(m.db, "PRAGMA integrity_check");
    while (s.step()) {
      const std::string line = s.text(0);
      if (line != "ok") problem("catalog: " + line);
    }
  }
  r.items = m.item_count();
  r.files = m.db.scalar_i64("SELECT count(*) FROM files");
  r.vectors = m.fidx ? m.fidx->ntotal : 0;
  // Catalog self-consistency.
  {
    // An on-disk build's catalog keeps no vectors (its exact vector file does, checked below).
    Stmt s(m.db, m.exact_vectors ? "SELECT id, sha256, length(vector) FROM items WHERE length(vector) NOT IN (0, ?1) OR length(sha256) != 64"
                                 : "SELECT id, sha256, length(vector) FROM items WHERE length(vector) != ?1 OR length(sha256) != 64");
    s.bind(1, static_cast<int64_t>(m.dim) * 4);
    while (s.step()) problem("item " + std::to_string(s.i64(0)) + ": malformed vector (" + std::to_string(s.i64(2)) + " bytes) or hash");
  }
  {
    Stmt s(m.db, "SELECT i.id FROM items i LEFT JOIN files f ON f.item_id = i.id WHERE f.path IS NULL");
    while (s.step()) problem("item " + std::to_string(s.i64(0)) + " has no path");
  }
  {
    Stmt s(m.db, "SELECT f.path, f.item_id FROM files f LEFT JOIN items i ON i.id = f.item_id WHERE i.id IS NULL");
    while (s.step()) problem("path " + s.text(0) + " points to missing item " + std::to_string(s.i64(1)));
  }
  {
    Stmt s(m.db, "SELECT count(*) FROM tags t LEFT JOIN files f ON f.path = t.path WHERE f.path IS NULL");
    if (s.step() && s.i64(0) > 0) problem(std::to_string(s.i64(0)) + " tags belong to paths that are not indexed");
  }
  // Vector norms.
  int64_t bad_norm = 0;
  m.for_vectors("", 0, [&](int64_t n, const float* v, const faiss::Index::idx_t* ids) {
    for (int64_t i = 0; i < n; ++i) {
      const float nn = dot(v + i * m.dim, v + i * m.dim, m.dim);
      if (!(std::fabs(nn - 1.0f) < 1e-3f)) {
        if (bad_norm++ < 5) problem("item " + std::to_string(ids[i]) + ": stored vector is not unit length (|v|^2 = " + std::to_string(nn) + ")");
      }
    }
  });
  // Catalog vs faiss.
  if (r.vectors != r.items)
    problem("faiss holds " + std::to_string(r.vectors) + " vectors, the catalog " + std::to_string(r.items) + " items");
  {
    std::vector<int64_t> cat;
    Stmt s(m.db, "SELECT id FROM items ORDER BY id");
    while (s.step()) cat.push_back(s.i64(0));
    std::vector<int64_t> fx = search::stored_ids(*m.fidx);
    std::sort(fx.begin(), fx.end());
    std::vector<int64_t> only_cat, only_fx;
    std::set_difference(cat.begin(), cat.end(), fx.begin(), fx.end(), std::back_inserter(only_cat));
    std::set_difference(fx.begin(), fx.end(), cat.begin(), cat.end(), std::back_inserter(only_fx));
    if (!only_cat.empty()) problem(std::to_string(only_cat.size()) + " catalog ids missing from faiss (first " + std::to_string(only_cat[0]) + ")");
    if (!only_fx.empty()) problem(std::to_string(only_fx.size()) + " faiss ids not in the catalog (first " + std::to_string(only_fx[0]) + ")");
    if (std::adjacent_find(fx.begin(), fx.end()) != fx.end()) problem("faiss holds duplicate ids");
  }
  if (m.fidx->d != m.dim) problem("faiss dim " + std::to_string(m.fidx->d) + " != catalog dim " + std::to_string(m.dim));
  // Flat: the stored vectors must equal the blobs.
  if (m.factory == "Flat") {
    int64_t mismatched = 0;
    std::vector<float> rec(static_cast<size_t>(m.dim));
    m.for_vectors("", 0, [&](int64_t n, const float* v, const faiss::Index::idx_t* ids) {
      for (int64_t i = 0; i < n; ++i) {
        try {
          m.fidx->reconstruct(ids[i], rec.data());
        } catch (const faiss::FaissException&) {
          ++mismatched;
          continue;
        }
        if (std::memcmp(rec.data(), v + i * m.dim, rec.size() * sizeof(float)) != 0) ++mismatched;
      }
    });
    if (mismatched) problem(std::to_string(mismatched) + " faiss vectors differ from the catalog");
  }
  // The cache file on disk.
  {
    std::error_code ec;
    if (fs::exists(m.cache_path(), ec)) {
      try {
        const search::CacheHeader h = search::read_cache_header(m.cache_path());
        const std::optional<uint64_t> recorded = m.recorded_cache_checksum();
        if (recorded && *recorded != h.checksum)
          r.notes.push_back("vector cache on disk is not the one the catalog recorded (it is not read; rebuilt on the next write)");
        else if (h.generation != m.generation())
          r.notes.push_back("vector cache on disk is at generation " + std::to_string(h.generation) + ", catalog at " +
                            std::to_string(m.generation()) + " (refreshed on the next write)");
      } catch (const Error& e) {
        r.notes.push_back(e.what());
      }
    } else if (r.items > 0 && m.fidx && m.fidx->id_map.empty()) {
      r.notes.push_back("served from the on-disk build (" + m.factory + ", inverted lists memory-mapped)");
    } else if (r.items > 0) {
      r.notes.push_back("vector cache file is missing (rebuilt on the next write)");
    }
  }
  if (deep) {
    Stmt s(m.db, "SELECT f.path, f.size, i.sha256 FROM files f JOIN items i ON i.id = f.item_id ORDER BY f.path");
    while (s.step()) {
      const std::string path = s.text(0);
      std::string data;
      try {
        data = read_file(path);
      } catch (const std::exception& e) {
        problem("file " + path + " cannot be read: " + first_line(e.what()));
        continue;
      }
      ++r.hashed;
      if (static_cast<int64_t>(data.size()) != s.i64(1) || content_sha256(data.data(), data.size()) != s.text(2))
        problem("file " + path + " changed since it was indexed (run 'clipkit index add' again)");
    }
  }
  return r;
}


}  // namespace clipkit
