// The memory budget for images being decoded at once by the server: each upload takes its
// estimated decoding memory before its pixels are allocated and gives it back when done.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>

namespace clipkit::server {

class DecodeBudget {
 public:
  explicit DecodeBudget(size_t capacity) : capacity_(capacity) {}
  DecodeBudget(const DecodeBudget&) = delete;
  DecodeBudget& operator=(const DecodeBudget&) = delete;

  // Takes `bytes` of the budget, waiting up to `wait` for other requests to give some back.
  // False when they did not come free in time, or never can (more than the whole budget).
  bool acquire(size_t bytes, std::chrono::milliseconds wait) {
    if (bytes > capacity_) return false;
    std::unique_lock<std::mutex> lock(mu_);
    if (!freed_.wait_for(lock, wait, [&] { return capacity_ - used_ >= bytes; })) return false;
    used_ += bytes;
    return true;
  }

  void release(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      used_ -= bytes < used_ ? bytes : used_;
    }
    freed_.notify_all();
  }

  size_t capacity() const { return capacity_; }
  size_t in_use() const {
    std::lock_guard<std::mutex> lock(mu_);
    return used_;
  }

 private:
  const size_t capacity_;
  size_t used_ = 0;
  mutable std::mutex mu_;
  std::condition_variable freed_;
};

}  // namespace clipkit::server
