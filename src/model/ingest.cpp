// The ingest pipeline (see ingest.h).
#include "model/ingest.h"

#include <malloc.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "kernels/gemm.h"

namespace clipkit {

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

int decode_thread_count(int requested) { return requested > 0 ? requested : available_cores(); }

bool decoding_pauses_for_model() { return num_threads() >= available_cores(); }

void keep_decode_buffers_in_heap() {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
}

DecodeOptions ingest_decode_options(const PreprocessConfig& config, bool fast_decode) {
  DecodeOptions d;
  if (fast_decode) d.reduce_to_min_side = 2 * config.resolution;
  return d;
}

DecodePool::DecodePool(int threads, bool below_normal) {
  const int n = std::max(1, threads);
  workers_.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) workers_.emplace_back([this, below_normal] { work(below_normal); });
}

void DecodePool::pause() {
  std::lock_guard<std::mutex> lock(mu_);
  paused_ = true;
}

void DecodePool::resume() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    paused_ = false;
  }
  cv_.notify_all();
}

DecodePool::~DecodePool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    queue_.clear();  // work nobody waits for any more
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void DecodePool::Group::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return remaining_ == 0; });
}

std::shared_ptr<DecodePool::Group> DecodePool::submit(int64_t n, std::function<void(int64_t)> f) {
  auto g = std::make_shared<Group>();
  g->remaining_ = std::max<int64_t>(0, n);
  auto fn = std::make_shared<std::function<void(int64_t)>>(std::move(f));
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int64_t i = 0; i < n; ++i) queue_.push_back({g, fn, i});
  }
  cv_.notify_all();
  return g;
}

void DecodePool::work(bool below_normal) {
  // Below the model's threads: a forward pass running beside decoding is not slowed by it, and
  // decoding still gets every idle cycle. Threads inherit their creator's nice value; failures are
  // harmless. (A pool that pauses for the model keeps its creator's priority: on a machine shared
  // with other programs, decoding while the model waits then gets its fair share of the cores.)
  if (below_normal) {
    const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
    errno = 0;
    const int nice_now = ::getpriority(PRIO_PROCESS, tid);
    if (errno == 0) (void)::setpriority(PRIO_PROCESS, tid, std::min(19, nice_now + 10));
  }
  for (;;) {
    Task t;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || (!paused_ && !queue_.empty()); });
      if (stop_) return;
      t = std::move(queue_.front());
      queue_.pop_front();
    }
    (*t.f)(t.i);
    {
      std::lock_guard<std::mutex> lock(t.group->mu_);
      if (--t.group->remaining_ == 0) t.group->cv_.notify_all();
    }
  }
}

namespace {

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Slot {
  IngestBatch batch;
  std::vector<std::exception_ptr> errors;  // per input of the batch
  std::shared_ptr<DecodePool::Group> group;
};

}  // namespace

IngestStats run_image_ingest(size_t count, const PreprocessConfig& config, const std::function<Image(size_t)>& load,
                             const std::function<void(IngestBatch&)>& consume, const IngestOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  IngestStats stats;
  stats.inputs = static_cast<int64_t>(count);
  if (count == 0) return stats;
  const size_t batch = static_cast<size_t>(std::max(1, options.batch_size));
  const size_t ahead = static_cast<size_t>(std::max(1, options.batches_ahead));
  const size_t per_image = 3 * static_cast<size_t>(config.resolution) * static_cast<size_t>(config.resolution);
  std::atomic<int64_t> decode_ns{0};
  std::deque<std::shared_ptr<Slot>> in_flight;
  // Declared last: destroyed first, so no worker outlives the slots and counters it writes.
  const bool pause = decoding_pauses_for_model();
  DecodePool pool(static_cast<int>(std::min<size_t>(static_cast<size_t>(decode_thread_count(options.decode_threads)), count)),
                  !pause);
  stats.decode_threads = pool.threads();
  stats.paused_decoding = pause;

  size_t next = 0;
  auto top_up = [&] {
    while (next < count && in_flight.size() < ahead) {
      auto s = std::make_shared<Slot>();
      s->batch.begin = next;
      s->batch.end = std::min(count, next + batch);
      next = s->batch.end;
      const size_t n = s->batch.end - s->batch.begin;
      s->batch.pixels.resize(n * per_image);
      s->errors.resize(n);
      Slot* raw = s.get();
      s->group = pool.submit(static_cast<int64_t>(n), [raw, &load, &config, per_image, &decode_ns](int64_t i) {
        const double c0 = thread_cpu_seconds();
        const size_t k = static_cast<size_t>(i);
        try {
          const Image img = load(raw->batch.begin + k);
          preprocess(img, config, raw->batch.pixels.data() + k * per_image);
        } catch (...) {
          raw->errors[k] = std::current_exception();
        }
        decode_ns += static_cast<int64_t>((thread_cpu_seconds() - c0) * 1e9);
      });
      in_flight.push_back(std::move(s));
    }
  };

  top_up();
  while (!in_flight.empty()) {
    const std::shared_ptr<Slot> s = in_flight.front();
    const auto w0 = std::chrono::steady_clock::now();
    s->group->wait();
    const double waited = seconds_since(w0);
    stats.wait_s += waited;
    if (s->batch.begin == 0) stats.first_wait_s = waited;
    in_flight.pop_front();
    top_up();  // the workers go on with the next batch while this one is consumed
    IngestBatch& b = s->batch;
    size_t rows = 0;
    for (size_t k = 0; k < s->errors.size(); ++k) {
      if (s->errors[k]) {
        b.failures.emplace_back(b.begin + k, s->errors[k]);
        continue;
      }
      if (rows != k) std::memmove(b.pixels.data() + rows * per_image, b.pixels.data() + k * per_image, per_image * sizeof(float));
      b.items.push_back(b.begin + k);
      ++rows;
    }
    b.pixels.resize(rows * per_image);
    const auto c0 = std::chrono::steady_clock::now();
    {
      const DecodePool::Paused paused(pause ? &pool : nullptr);
      consume(b);
    }
    stats.consume_s += seconds_since(c0);
  }
  stats.decode_cpu_s = static_cast<double>(decode_ns.load()) * 1e-9;
  stats.total_s = seconds_since(t0);
  return stats;
}

}  // namespace clipkit
