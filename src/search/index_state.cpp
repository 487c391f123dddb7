// clipkit::Index: the snapshots reads work on, and how changes, merges and catch-ups publish
// them (see search/call_lock.h).
#include "search/index_impl.h"

namespace clipkit {

const index_internal::Snapshot& Index::Impl::viewed() {
  if (cur().view) return cur();
  {
    std::lock_guard<std::recursive_mutex> w(write_mu);
    if (!view_) {
      Db& own = db.own();  // the latest committed state (a read's connection may be older than the changes' state)
      auto v = std::make_shared<search::MetaView>();
      const int64_t gen = fidx_gen;
      bool has_meta = false;
      {
        Stmt t(own, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'path_meta'");
        has_meta = t.step();
      }
      v->load(own, has_meta, gen);
      view_ = std::move(v);
      overlay_ = std::make_shared<MetaOverlay>();
      view_gen_ = gen;
      publish_state();
    }
  }
  if (!cur().view) reread_snapshot();
  return cur();
}

void Index::Impl::publish_state() {
  if (!delta_) {
    auto d = std::make_shared<Delta>();
    d->dim = dim;
    delta_ = std::move(d);
  }
  auto s = std::make_shared<Snapshot>();
  s->generation = fidx_gen;
  s->delta = delta_;
  s->tombstones = tomb_;
  s->view = view_;
  s->overlay = overlay_;
  s->view_generation = view_gen_;
  publish(std::move(s));
}

void Index::Impl::clear_delta() {
  auto d = std::make_shared<Delta>();
  d->dim = dim;
  delta_ = std::move(d);
}

void Index::Impl::add_to_delta(int64_t n, const float* vecs, const faiss::Index::idx_t* ids) {
  if (n <= 0) return;
  if (!delta_) clear_delta();
  auto b = std::make_shared<Delta::Block>();
  for (int64_t i = 0; i < n; ++i) {
    if ((fidx && fidx->rev_map.count(ids[i])) || delta_->at.count(ids[i])) continue;
    b->ids.push_back(ids[i]);
    b->vecs.insert(b->vecs.end(), vecs + i * dim, vecs + (i + 1) * dim);
  }
  if (b->ids.empty()) return;
  auto d = std::make_shared<Delta>(*delta_);
  const auto k = static_cast<uint32_t>(d->blocks.size());
  for (size_t r = 0; r < b->ids.size(); ++r) d->at[b->ids[r]] = {k, static_cast<uint32_t>(r)};
  d->blocks.push_back(std::move(b));
  delta_ = std::move(d);
}

void Index::Impl::remove_staged(const std::vector<int64_t>& ids) {
  if (ids.empty()) return;
  if (!delta_) clear_delta();
  std::shared_ptr<Delta> d;
  std::shared_ptr<std::unordered_set<int64_t>> t;
  for (int64_t id : ids) {
    const Delta& cur_delta = d ? *d : *delta_;
    if (const auto it = cur_delta.at.find(id); it != cur_delta.at.end()) {
      if (!d) d = std::make_shared<Delta>(*delta_);
      const uint32_t k = it->second.first;
      auto b = std::make_shared<Delta::Block>();
      const Delta::Block& old = *d->blocks[k];
      for (size_t r = 0; r < old.ids.size(); ++r) {
        if (old.ids[r] == id) continue;
        b->ids.push_back(old.ids[r]);
        b->vecs.insert(b->vecs.end(), old.vecs.begin() + static_cast<std::ptrdiff_t>(r * dim),
                       old.vecs.begin() + static_cast<std::ptrdiff_t>((r + 1) * dim));
      }
      d->at.erase(id);
      for (size_t r = 0; r < b->ids.size(); ++r) d->at[b->ids[r]] = {k, static_cast<uint32_t>(r)};
      d->blocks[k] = std::move(b);
    } else if (fidx && fidx->rev_map.count(id)) {
      if (!t) t = std::make_shared<std::unordered_set<int64_t>>(*tomb_);
      t->insert(id);
    }
  }
  if (d) delta_ = std::move(d);
  if (t) tomb_ = std::move(t);
}

void Index::Impl::catch_up_view(int64_t gen) {
  if (!view_ || gen <= view_gen_) return;
  bool reaches = false;
  {
    Stmt since(db, "SELECT value FROM meta WHERE key = 'change_log_since'");
    if (since.step()) {
      try {
        reaches = std::stoll(since.text(0)) <= view_gen_;
      } catch (const std::logic_error&) {
        reaches = false;
      }
    }
  }
  const bool has_meta = table_exists("path_meta");
  std::vector<std::string> paths;
  if (reaches) {
    Stmt c(db, "SELECT DISTINCT path FROM path_changes WHERE gen > ?1 AND gen <= ?2");
    c.bind(1, view_gen_).bind(2, gen);
    while (c.step()) paths.push_back(c.text(0));
  }
  if (!reaches || overlay_->rows.size() + paths.size() > view_->rows.size() / 4 + 1000) {
    auto v = std::make_shared<search::MetaView>();  // a new view: the reads in flight keep the old one
    v->load(db, has_meta, gen);
    view_ = std::move(v);
    overlay_ = std::make_shared<MetaOverlay>();
    view_gen_ = gen;
    return;
  }
  auto o = std::make_shared<MetaOverlay>(*overlay_);
  for (const auto& p : paths) {
    std::optional<search::MetaRow> r = search::MetaView::read_path(db, has_meta, p);
    o->rows[p] = r ? std::make_shared<const search::MetaRow>(std::move(*r)) : nullptr;
    o->paths.insert(p);
  }
  overlay_ = std::move(o);
  view_gen_ = gen;
}

void Index::Impl::stage(const std::vector<faiss::Index::idx_t>& add_ids, const std::vector<float>& add_vecs, const std::vector<int64_t>& removed, int64_t gen) {
  if (fidx_gen != gen - 1) {
    // Behind the catalog (an update that failed): rebuilt from it, now or by the next exclusive call.
    fidx_gen = -1;
    if (in_exclusive) rebuild_structure();
    else exclusive_due = true;
    return;
  }
  add_to_delta(static_cast<int64_t>(add_ids.size()), add_vecs.data(), add_ids.data());
  remove_staged(removed);
  fidx_gen = gen;
  catch_up_view(gen);
  publish_state();
  merge_if_due();
}

void Index::Impl::merge_if_due() {
  if (!fidx) return;
  const bool removable = search::supports_remove(*fidx);
  if (!removable && static_cast<double>(tomb_->size()) > kTombstoneShare * static_cast<double>(fidx->ntotal)) {
    exclusive_due = true;
    return;
  }
  if (delta_->size() >= kMergeRows || overlay_->rows.size() >= kMergePaths || (removable && tomb_->size() >= kMergeRows))
    request_merge([this] { background_merge(); });
}

void Index::Impl::background_merge() {
  std::unique_lock<std::mutex> first(gate);
  std::unique_lock<std::shared_mutex> x(rw);
  first.unlock();
  std::lock_guard<std::recursive_mutex> w(write_mu);
  in_exclusive = true;
  try {
    run_exclusive_work();
  } catch (...) {
    // left as it is: the reads go on with the delta; the next merge tries again
  }
  in_exclusive = false;
}

void Index::Impl::merge_pending() {
  if (!fidx || !delta_) return;
  bool changed = false;
  if (delta_->size() > 0) {
    try {
      delta_->for_blocks([&](int64_t n, const float* v, const int64_t* ids) {
        std::vector<faiss::Index::idx_t> fid(ids, ids + n);
        fidx->add_with_ids(n, v, fid.data());
      });
    } catch (const faiss::FaissException& e) {
      fidx_gen = -1;
      rebuild_structure();
      notes.push_back("adding to the faiss index failed (" + first_line(e.what()) + "); rebuilt from the catalog");
      return;
    }
    clear_delta();
    changed = true;
  }
  if (!tomb_->empty() && search::supports_remove(*fidx)) {
    std::vector<faiss::Index::idx_t> v(tomb_->begin(), tomb_->end());
    faiss::IDSelectorBatch sel(v.size(), v.data());
    try {
      fidx->remove_ids(sel);
    } catch (const faiss::FaissException&) {
      rebuild_structure();
      return;
    }
    tomb_ = std::make_shared<std::unordered_set<int64_t>>();
    changed = true;
  } else if (static_cast<double>(tomb_->size()) > kTombstoneShare * static_cast<double>(fidx->ntotal)) {
    rebuild_structure();
    return;
  }
  if (view_ && !overlay_->rows.empty()) {
    if (view_gen_ != view_->generation && !view_->update(db, view_gen_)) view_->load(db, table_exists("path_meta"), view_gen_);
    overlay_ = std::make_shared<MetaOverlay>();
    changed = true;
  }
  if (changed) publish_state();
}

void Index::Impl::run_exclusive_work() {
  exclusive_due = false;
  if (!fidx) return;
  if (fidx_gen != generation()) refresh();
  merge_pending();
  maybe_train();
}

void Index::Impl::catch_up_read(int64_t gen, bool wait) {
  std::unique_lock<std::recursive_mutex> w(write_mu, std::try_to_lock);
  while (!w.owns_lock()) {
    // A change of this Index under way publishes everything committed before it (it caught up
    // first): nothing to wait for. A catch-up under way publishes its generation soon (the reads
    // waiting for it do not queue on write_mu, where they would delay the next change).
    if (!wait || changing) return;
    const int64_t published = wait_published(gen, std::chrono::milliseconds(20))->generation;
    if (published >= gen) {
      if (published == gen) reread_snapshot();  // (a newer one is for the calls after this one)
      return;
    }
    w.try_lock();
  }
  if (fidx_gen == gen) {
    reread_snapshot();
    return;
  }
  if (fidx_gen > gen || fidx_gen < 0) return;
  if (refresh()) {
    CallLock::note_caught_up();
    reread_snapshot();
  } else if (exclusive_due) {
    request_merge([this] { background_merge(); });
  }
}

}  // namespace clipkit
