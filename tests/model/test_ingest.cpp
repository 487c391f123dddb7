// The ingest pipeline: batches in input order with the same pixels as a sequential loop, failures
// recorded per input, memory bounded by the batches in flight, and a consumer's error stopping it.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "model/ingest.h"
#include "support/test_support.h"

namespace {

using namespace clipkit;
using clipkit::test::data_path;

const std::vector<std::string>& fixture_images() {
  static const std::vector<std::string> v = {
      "images/00_astronaut.png",      "images/01_chelsea_q90_progressive.jpg", "images/02_coffee.png",
      "images/03_rocket_q75.jpg",     "images/04_camera_gray.png",             "images/05_rgba_alpha.png",
      "images/06_wide_hubble.png",    "images/07_tall_immuno.png",             "images/08_pixel_1x1.png",
      "images/09_tiny_7x5.png",       "images/10_small_40x50.png",             "images/11_palette.png"};
  return v;
}

}  // namespace

TEST(Ingest, BatchesInOrderWithTheSequentialPixels) {
  PreprocessConfig cfg;
  cfg.resolution = 32;
  const size_t per = 3 * 32 * 32;
  // The fixtures twice over, with one unreadable input in the middle.
  std::vector<std::string> paths;
  for (int r = 0; r < 2; ++r)
    for (const auto& f : fixture_images()) paths.push_back(data_path(f));
  paths.insert(paths.begin() + 7, data_path("FIXTURES.md"));
  for (int threads : {1, 3}) {
    IngestOptions opt;
    opt.batch_size = 5;
    opt.decode_threads = threads;
    std::vector<size_t> seen_items;
    std::vector<size_t> failed;
    size_t expect_begin = 0;
    std::vector<float> got;
    const IngestStats st = run_image_ingest(
        paths.size(), cfg, [&](size_t i) { return decode_image_file(paths[i]); },
        [&](IngestBatch& b) {
          EXPECT_EQ(b.begin, expect_begin);
          expect_begin = b.end;
          EXPECT_LE(b.end - b.begin, 5u);
          ASSERT_EQ(b.pixels.size(), b.items.size() * per);
          for (const auto& [i, err] : b.failures) {
            failed.push_back(i);
            EXPECT_THROW(std::rethrow_exception(err), Error);
          }
          seen_items.insert(seen_items.end(), b.items.begin(), b.items.end());
          got.insert(got.end(), b.pixels.begin(), b.pixels.end());
        },
        opt);
    EXPECT_EQ(expect_begin, paths.size());
    EXPECT_EQ(failed, std::vector<size_t>{7});
    ASSERT_EQ(seen_items.size(), paths.size() - 1);
    EXPECT_EQ(st.decode_threads, threads);
    EXPECT_EQ(st.inputs, static_cast<int64_t>(paths.size()));
    // Row by row the same bits as decoding and preprocessing one image at a time.
    for (size_t r = 0; r < seen_items.size(); ++r) {
      const std::vector<float> want = preprocess(decode_image_file(paths[seen_items[r]]), cfg);
      ASSERT_EQ(std::memcmp(want.data(), got.data() + r * per, per * sizeof(float)), 0) << paths[seen_items[r]];
    }
  }
}

TEST(Ingest, LoadsStayWithinTheBatchesInFlight) {
  PreprocessConfig cfg;
  cfg.resolution = 8;
  Image tiny;
  tiny.width = tiny.height = 8;
  tiny.pixels.assign(8 * 8 * 3, 128);
  std::atomic<size_t> loaded{0};
  size_t consumed = 0, worst = 0;
  IngestOptions opt;
  opt.batch_size = 4;
  opt.decode_threads = 2;
  opt.batches_ahead = 2;
  run_image_ingest(
      1000, cfg,
      [&](size_t) {
        ++loaded;
        return tiny;
      },
      [&](IngestBatch& b) {
        consumed = b.end;
        worst = std::max(worst, loaded.load() - consumed);
      },
      opt);
  EXPECT_EQ(consumed, 1000u);
  EXPECT_LE(worst, static_cast<size_t>(opt.batches_ahead * opt.batch_size));  // never the whole input
}

TEST(Ingest, AConsumerErrorStopsThePipeline) {
  PreprocessConfig cfg;
  cfg.resolution = 8;
  Image tiny;
  tiny.width = tiny.height = 8;
  tiny.pixels.assign(8 * 8 * 3, 7);
  std::atomic<size_t> loaded{0};
  IngestOptions opt;
  opt.batch_size = 2;
  opt.decode_threads = 2;
  int calls = 0;
  EXPECT_THROW(run_image_ingest(
                   10000, cfg,
                   [&](size_t) {
                     ++loaded;
                     return tiny;
                   },
                   [&](IngestBatch&) {
                     if (++calls == 3) throw Error(ErrorCode::Io, "disk full");
                   },
                   opt),
               Error);
  EXPECT_EQ(calls, 3);
  EXPECT_LT(loaded.load(), 100u);  // the rest of the input was abandoned
}

TEST(Ingest, NothingToDo) {
  int calls = 0;
  const IngestStats st = run_image_ingest(
      0, PreprocessConfig{}, [](size_t) -> Image { throw std::logic_error("not called"); },
      [&](IngestBatch&) { ++calls; });
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(st.inputs, 0);
  EXPECT_GE(decode_thread_count(0), 1);
  EXPECT_EQ(decode_thread_count(3), 3);
}
