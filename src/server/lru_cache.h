// A bounded least-recently-used cache of the server (thread-safe): string keys, values of type V,
// each entry costing its key twice (the list and the hash table each hold it), its value's bytes
// (given by the caller) and a fixed overhead. Adding
// an entry evicts the least recently used ones until the total is within the capacity; an entry
// larger than the whole capacity is not kept. A capacity of 0 keeps nothing.
#pragma once
#include <cstddef>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

namespace clipkit::server {

template <class V>
class LruCache {
 public:
  // Bytes an entry costs besides its keys and value: list and hash nodes, a shared value's
  // control block, the allocator's headers.
  static constexpr size_t kEntryOverhead = 192;

  explicit LruCache(size_t capacity_bytes) : capacity_(capacity_bytes) {}
  LruCache(const LruCache&) = delete;
  LruCache& operator=(const LruCache&) = delete;

  // Copies the value of `key` into *out and marks it used; false when absent.
  bool get(const std::string& key, V* out) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) {
      ++misses_;
      return false;
    }
    order_.splice(order_.begin(), order_, it->second);
    *out = it->second->value;
    ++hits_;
    return true;
  }

  // Adds or replaces `key`; `value_bytes` is what the value holds on the heap.
  void put(const std::string& key, V value, size_t value_bytes) {
    const size_t cost = 2 * key.size() + value_bytes + kEntryOverhead;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) erase_locked(it);
    if (cost > capacity_) return;
    while (used_ + cost > capacity_ && !order_.empty()) erase_locked(map_.find(order_.back().key));
    order_.push_front(Entry{key, std::move(value), cost});
    map_.emplace(key, order_.begin());
    used_ += cost;
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    map_.clear();
    order_.clear();
    used_ = 0;
  }

  struct Stats {
    size_t entries = 0, bytes = 0, capacity = 0;
    unsigned long long hits = 0, misses = 0;
  };
  Stats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return Stats{map_.size(), used_, capacity_, hits_, misses_};
  }

 private:
  struct Entry {
    std::string key;
    V value;
    size_t cost;
  };
  using List = std::list<Entry>;

  void erase_locked(typename std::unordered_map<std::string, typename List::iterator>::iterator it) {
    used_ -= it->second->cost;
    order_.erase(it->second);
    map_.erase(it);
  }

  mutable std::mutex mu_;
  size_t capacity_;
  size_t used_ = 0;
  unsigned long long hits_ = 0, misses_ = 0;
  List order_;
  std::unordered_map<std::string, typename List::iterator> map_;
};

}  // namespace clipkit::server
