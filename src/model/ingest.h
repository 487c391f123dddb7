// The ingest pipeline: decoding and preprocessing threads fill a bounded queue of ready batches
// while the calling thread runs the model on the previous one. Every tool that embeds image
// files goes through it (embed, classify, eval, index add/build, the Python package).
//
//   clipkit::IngestOptions opt;                       // batch size, decode threads (0 = auto)
//   clipkit::run_image_ingest(paths.size(), model.preprocess_config(),
//       [&](size_t i) { return clipkit::decode_image_file(paths[i]); },
//       [&](clipkit::IngestBatch& b) { model.encode_images(b.pixels.data(), b.rows(), true); }, opt);
//
// Batches reach the consumer in input order, whatever order the workers finish in, so results
// are the same bits as a sequential loop. At most `batches_ahead` ready batches wait beside the
// one being consumed, so memory does not grow with the number of inputs.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "clipkit/image.h"

namespace clipkit {

// CPUs this process may run on (its affinity mask), at least 1.
int available_cores();

// The decode threads to use when the caller asks for `requested` (0 = automatic: one per
// available core; see decoding_pauses_for_model for how they share the cores with the model).
int decode_thread_count(int requested);

// Whether the pipeline pauses decoding while the model runs: when the model's compute threads
// (the kernels' thread setting) cover every available core. A forward pass then has all cores,
// and decoders running beside it would only take turns with its threads (which wait for each
// other at every layer) and evict its weights from the caches; decoding gets all cores while the
// model waits for a batch. When the model leaves cores free, decoding runs beside it instead, at
// a lower priority (DecodePool's `below_normal`).
bool decoding_pauses_for_model();

// Makes the C library keep the large buffers of decoding in its heap and reuse them: a camera
// photo decodes into tens of MB (36 MB at 4000x3000), which glibc otherwise maps fresh for every
// image and gives back after it, so each image's pages are faulted in again (on a virtual machine
// that doubled the decoding time of 4000x3000 JPEGs). Sets glibc's mmap threshold to 64 MiB and
// its trim threshold to 256 MiB for the whole process, so freed memory up to that much stays
// with it. For programs that decode many images (the CLI's verbs other than `serve`); does
// nothing elsewhere than glibc.
void keep_decode_buffers_in_heap();

// Worker threads that run groups of tasks in submission order. With `below_normal` the workers
// run at a lower scheduling priority (nice +10) than the thread that created the pool, so a model
// running beside them keeps its cores and decoding takes the cycles it leaves idle.
class DecodePool {
 public:
  explicit DecodePool(int threads, bool below_normal = true);
  ~DecodePool();
  DecodePool(const DecodePool&) = delete;
  DecodePool& operator=(const DecodePool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()); }

  // While paused the workers start no new task (a task already running finishes).
  void pause();
  void resume();
  // Pauses `pool` (when not null) for its lifetime.
  class Paused {
   public:
    explicit Paused(DecodePool* pool) : pool_(pool) {
      if (pool_) pool_->pause();
    }
    ~Paused() {
      if (pool_) pool_->resume();
    }
    Paused(const Paused&) = delete;
    Paused& operator=(const Paused&) = delete;

   private:
    DecodePool* pool_;
  };

  // n tasks f(0), ..., f(n-1); wait() returns once all of them ran. f must not throw.
  class Group {
   public:
    void wait();

   private:
    friend class DecodePool;
    std::mutex mu_;
    std::condition_variable cv_;
    int64_t remaining_ = 0;
  };
  std::shared_ptr<Group> submit(int64_t n, std::function<void(int64_t)> f);

 private:
  struct Task {
    std::shared_ptr<Group> group;
    std::shared_ptr<std::function<void(int64_t)>> f;
    int64_t i = 0;
  };
  void work(bool below_normal);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stop_ = false;
  bool paused_ = false;
  std::vector<std::thread> workers_;
};

struct IngestOptions {
  int batch_size = 32;     // inputs per batch handed to the consumer
  int decode_threads = 0;  // 0 = automatic (decode_thread_count)
  int batches_ahead = 2;   // ready batches that may wait beside the one being consumed
};

struct IngestBatch {
  size_t begin = 0, end = 0;   // the inputs [begin, end) this batch covers
  std::vector<size_t> items;   // the inputs that decoded, in order; row r of `pixels` is items[r]
  std::vector<float> pixels;   // [items.size(), 3, R, R], CLIP-normalised
  std::vector<std::pair<size_t, std::exception_ptr>> failures;  // inputs that did not, in order
  int64_t rows() const { return static_cast<int64_t>(items.size()); }
};

// How the pipeline's callers decode: exactly (full size) unless fast_decode, where a JPEG is decoded
// at 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling) as long as both sides stay at least twice the
// model's resolution, and then resized exactly as usual.
DecodeOptions ingest_decode_options(const PreprocessConfig& config, bool fast_decode);

// Where the time went (seconds). decode_cpu_s is the workers' CPU time in load + preprocess;
// consume_s the consumer's time in its callback; wait_s the consumer's time waiting for a batch,
// first_wait_s the part of it spent on the first batch (nothing to overlap it with yet).
// paused_decoding: decoding paused while the consumer ran (decoding_pauses_for_model).
struct IngestStats {
  int decode_threads = 0;
  int64_t inputs = 0;
  bool paused_decoding = false;
  double decode_cpu_s = 0, consume_s = 0, wait_s = 0, first_wait_s = 0, total_s = 0;
};

// Loads input i with load(i) (any exception is recorded as that input's failure), preprocesses
// it with `config`, and calls consume(batch) on the calling thread for each batch in input order.
// consume is expected to run the model: decoding pauses while it runs when decoding_pauses_for_model.
// An exception from consume stops the pipeline (pending work is abandoned) and propagates.
IngestStats run_image_ingest(size_t count, const PreprocessConfig& config, const std::function<Image(size_t)>& load,
                             const std::function<void(IngestBatch&)>& consume, const IngestOptions& options = {});

}  // namespace clipkit
