// End-to-end folder throughput against its bound, in one run:
//
//   build/bench/bench_ingest --model ViT-B-32.pt [--model RN50.pt ...] [--dtype f32,int8] [--images 200] [--big 64]
//
// Every model given runs in every dtype of the list, one after the other in the same process.
// Generates (once, into --dir) a folder of photo-like 1024x768 JPEGs and one of 4000x3000 JPEGs,
// then for each folder measures, with the same loaded model:
//   model_ms   the forward pass per image on ready tensors (warm, whole batches, all cores)
//   decode_ms  decode + CLIP preprocessing per image on one thread
//   bound      1 / (model_ms + decode_ms / cores) images/s: every core busy, nothing lost
//   e2e        images/s of the ingest pipeline (what embed, classify, eval and index add run)
// and then where the pipeline's time went, next to what the bound allows for it:
//   model    the forward passes inside the pipeline, against N x model_ms (slower: decoding took
//            turns with the model's threads, or the caches were cold)
//   wait     the model waiting for batches, against the decoding the bound spreads over the cores
//            (N x decode_ms / cores); `first` the wait for the first batch, which nothing overlaps
//   dec_cpu  the decoders' CPU time, against N x decode_ms and N x the CPU time of decode_ms's
//            thread (more: decoding ran slower in the pipeline, sharing cores or caches; on a
//            busy machine decode_ms, a wall time, exceeds its CPU time)
//   other    the rest (the consumer's own work, thread start-up)
// Run it on a quiet machine; one command measures every model (docs/performance.md).
// With --fast-decode each folder runs a second time with libjpeg's DCT scaling (the CLI's
// --fast-decode), and the embeddings' cosine to the exact run's is printed (worst and mean).
// Not a Google Benchmark program: the quantities are compared within one run.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <time.h>

#include <jpeglib.h>  // after <cstdio>: it uses size_t and FILE

#include "clipkit/image.h"
#include "clipkit/model.h"
#include "core/mapped_file.h"
#include "model/ingest.h"

namespace {

namespace fs = std::filesystem;

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// A photo-like picture: smooth colour fields, a few shapes and sensor noise, so that the JPEG
// has the size and decoding cost of a camera image rather than of a flat test card.
std::vector<uint8_t> synth_photo(int w, int h, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::normal_distribution<float> noise(0.0f, 6.0f);
  float base[3][3];
  for (auto& c : base)
    for (float& v : c) v = u(rng);
  struct Disc {
    float x, y, r, col[3];
  };
  std::vector<Disc> discs(12);
  for (auto& d : discs) d = {u(rng) * w, u(rng) * h, (0.05f + 0.2f * u(rng)) * h, {u(rng), u(rng), u(rng)}};
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float fx = static_cast<float>(x) / w, fy = static_cast<float>(y) / h;
      float c[3];
      for (int k = 0; k < 3; ++k)
        c[k] = 255.0f * (base[k][0] * (1 - fx) + base[k][1] * fx) * (0.6f + 0.4f * base[k][2] * std::sin(6.0f * fy + k));
      for (const auto& d : discs) {
        const float dx = x - d.x, dy = y - d.y;
        if (dx * dx + dy * dy < d.r * d.r)
          for (int k = 0; k < 3; ++k) c[k] = 0.5f * c[k] + 127.0f * d.col[k] * (1.0f + 0.3f * std::sin(0.05f * (x + y)));
      }
      uint8_t* p = px.data() + (static_cast<size_t>(y) * w + x) * 3;
      for (int k = 0; k < 3; ++k) p[k] = static_cast<uint8_t>(std::clamp(c[k] + noise(rng), 0.0f, 255.0f));
    }
  return px;
}

void write_jpeg(const std::string& path, const std::vector<uint8_t>& rgb, int w, int h, int quality) {
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr jerr{};
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_compress(&cinfo);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buf, &size);
  cinfo.image_width = static_cast<JDIMENSION>(w);
  cinfo.image_height = static_cast<JDIMENSION>(h);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(rgb.data() + static_cast<size_t>(cinfo.next_scanline) * w * 3);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  clipkit::write_file_atomic(path, buf, size);
  jpeg_destroy_compress(&cinfo);
  free(buf);
}

// The folder's JPEGs, generated when missing.
std::vector<std::string> photo_folder(const std::string& dir, int count, int w, int h) {
  fs::create_directories(dir);
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "photo_%04d.jpg", i);
    const std::string path = (fs::path(dir) / name).string();
    if (!fs::exists(path)) write_jpeg(path, synth_photo(w, h, 1000u + static_cast<unsigned>(i)), w, h, 90);
    out.push_back(path);
  }
  return out;
}

struct Args {
  std::vector<std::string> models, dtypes;
  std::string dir = "bench-photos";
  int images = 200, big = 64, batch = 32, threads = 0, decode_threads = 0;
  bool fast_decode = false;
};

void usage() {
  std::fprintf(stderr,
               "usage: bench_ingest --model PATH [--model PATH ...] [--dtype f32|f16|int8[,...] (f32)] [--images N (200)] [--big N (64)]\n"
               "                    [--batch-size N (32)] [--threads N] [--decode-threads N] [--dir DIR (bench-photos)]\n"
               "                    [--fast-decode]\n");
}

struct FolderRun {
  double decode_s = 0, decode_cpu_s = 0, e2e = 0;
  std::vector<float> rows;  // normalised embeddings, input order
};

FolderRun run_folder(const clipkit::Model& model, const std::vector<std::string>& files, const Args& a, const std::string& label,
                     bool fast) {
  const clipkit::PreprocessConfig cfg = model.preprocess_config();
  const clipkit::DecodeOptions decode = clipkit::ingest_decode_options(cfg, fast);
  const size_t per = 3 * static_cast<size_t>(cfg.resolution) * cfg.resolution;
  const int cores = clipkit::available_cores();
  FolderRun out;
  // Decode + preprocess per image, one thread (the first files, up to 32).
  const size_t nd = std::min<size_t>(files.size(), 32);
  std::vector<float> pixels(static_cast<size_t>(a.batch) * per);
  double t0 = now_s();
  const double c0 = thread_cpu_s();
  for (size_t i = 0; i < nd; ++i)
    clipkit::preprocess(clipkit::decode_image_file(files[i], decode), cfg, pixels.data() + (i % static_cast<size_t>(a.batch)) * per);
  out.decode_s = (now_s() - t0) / static_cast<double>(nd);
  out.decode_cpu_s = (thread_cpu_s() - c0) / static_cast<double>(nd);
  // Model per image on ready tensors: one warm-up batch, then whole batches for about as many
  // images as the folder holds (at least two batches).
  for (size_t i = nd; i < static_cast<size_t>(a.batch); ++i)
    std::memcpy(pixels.data() + i * per, pixels.data() + (i % nd) * per, per * sizeof(float));
  model.encode_images(pixels.data(), a.batch, true);
  const int reps = std::max<int>(2, static_cast<int>((files.size() + static_cast<size_t>(a.batch) - 1) / static_cast<size_t>(a.batch)));
  t0 = now_s();
  for (int r = 0; r < reps; ++r) model.encode_images(pixels.data(), a.batch, true);
  const double model_s = (now_s() - t0) / (static_cast<double>(reps) * a.batch);
  const double bound = 1.0 / (model_s + out.decode_s / cores);
  // End to end through the ingest pipeline.
  clipkit::IngestOptions opt;
  opt.batch_size = a.batch;
  opt.decode_threads = a.decode_threads;
  const clipkit::IngestStats st = clipkit::run_image_ingest(
      files.size(), cfg, [&](size_t i) { return clipkit::decode_image_file(files[i], decode); },
      [&](clipkit::IngestBatch& b) {
        if (!b.failures.empty()) std::rethrow_exception(b.failures.front().second);
        const clipkit::Embeddings e = model.encode_images(b.pixels.data(), b.rows(), true);
        out.rows.insert(out.rows.end(), e.data.begin(), e.data.end());
      },
      opt);
  out.e2e = static_cast<double>(files.size()) / st.total_s;
  std::printf("%-18s %6zu %5d %9.2f %10.2f %9.1f %9.1f %6.1f%%   %7.2f %8.2f %7.2f\n", label.c_str(), files.size(), cores,
              model_s * 1e3, out.decode_s * 1e3, bound, out.e2e, 100.0 * out.e2e / bound, st.wait_s, st.consume_s,
              st.decode_cpu_s);
  const double n = static_cast<double>(files.size());
  const double ideal_model = n * model_s, ideal_wait = n * out.decode_s / cores, ideal_dec = n * out.decode_s;
  std::printf("%-18s   time %.2f s (bound %.2f s): model %.2f s (bound %.2f), wait %.2f s (bound %.2f; first batch %.2f), "
              "other %.2f s; decoders' CPU %.2f s (bound %.2f; %.2f at decode_ms's CPU time, %.2f ms/image) on %d threads, %s\n",
              "", st.total_s, ideal_model + ideal_wait, st.consume_s, ideal_model, st.wait_s, ideal_wait, st.first_wait_s,
              st.total_s - st.consume_s - st.wait_s, st.decode_cpu_s, ideal_dec, n * out.decode_cpu_s, out.decode_cpu_s * 1e3,
              st.decode_threads,
              st.paused_decoding ? "paused while the model runs" : "beside the model at nice +10");
  std::fflush(stdout);
  return out;
}

void run(const clipkit::Model& model, const std::vector<std::string>& files, const Args& a, const std::string& label) {
  if (files.empty()) return;
  const FolderRun exact = run_folder(model, files, a, label, false);
  if (!a.fast_decode) return;
  const FolderRun fast = run_folder(model, files, a, label + " fast", true);
  const size_t dim = exact.rows.size() / files.size();
  double worst = 1.0, sum = 0.0;
  for (size_t i = 0; i < files.size(); ++i) {
    double d = 0;  // both normalised
    for (size_t j = 0; j < dim; ++j) d += static_cast<double>(exact.rows[i * dim + j]) * fast.rows[i * dim + j];
    worst = std::min(worst, d);
    sum += d;
  }
  std::printf("%-18s decode %.2fx faster, end to end %.2fx; embedding cosine to exact: worst %.6f, mean %.6f\n",
              (label + " fast").c_str(), exact.decode_s / fast.decode_s, fast.e2e / exact.e2e, worst,
              sum / static_cast<double>(files.size()));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--model") a.models.push_back(value());
    else if (k == "--dtype") {
      const std::string list = value();
      for (size_t b = 0; b <= list.size();) {
        const size_t e = std::min(list.find(',', b), list.size());
        if (e > b) a.dtypes.push_back(list.substr(b, e - b));
        b = e + 1;
      }
    }
    else if (k == "--dir") a.dir = value();
    else if (k == "--images") a.images = std::stoi(value());
    else if (k == "--big") a.big = std::stoi(value());
    else if (k == "--batch-size") a.batch = std::stoi(value());
    else if (k == "--threads") a.threads = std::stoi(value());
    else if (k == "--decode-threads") a.decode_threads = std::stoi(value());
    else if (k == "--fast-decode") a.fast_decode = true;
    else {
      usage();
      return 2;
    }
  }
  if (a.dtypes.empty()) a.dtypes.push_back("f32");
  if (a.models.empty() || a.batch < 1 || a.images < 0 || a.big < 0) {
    usage();
    return 2;
  }
  clipkit::keep_decode_buffers_in_heap();  // as the CLI's verbs do
  try {
    const auto small = photo_folder((fs::path(a.dir) / "1024x768").string(), a.images, 1024, 768);
    const auto big = photo_folder((fs::path(a.dir) / "4000x3000").string(), a.big, 4000, 3000);
    for (const auto& path : a.models)
      for (const auto& dtype : a.dtypes) {
        clipkit::ModelOptions mo;
        mo.dtype = dtype;
        mo.threads = a.threads;
        const auto model = clipkit::Model::load(path, mo);
        std::printf("\nmodel %s, dtype %s, batch %d, decode threads %d\n", path.c_str(), dtype.c_str(), a.batch,
                    clipkit::decode_thread_count(a.decode_threads));
        std::printf("%-18s %6s %5s %9s %10s %9s %9s %7s   %7s %8s %7s\n", "folder", "images", "cores", "model_ms",
                    "decode_ms", "bound/s", "e2e/s", "of_bound", "wait_s", "model_s", "dec_cpu");
        run(*model, small, a, "1024x768");
        run(*model, big, a, "4000x3000");
      }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ingest: %s\n", e.what());
    return 1;
  }
  return 0;
}
