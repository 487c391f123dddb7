// Recommendation-service benchmark: filtered searches (a 1% selective metadata filter),
// recommendations (5 positives + 5 negatives, both strategies) and writes while readers query,
// on synthetic vectors with metadata.
//
//   bench_recsys [--items 1000000] [--dim 512] [--kinds flat,hnsw] [--queries 200]
//                [--write-rate 50] [--write-seconds 20] [--readers 100] [--compute-threads 8]
//                [--dir DIR] [--same-index]
//                [--reuse] [--phases filtered,recommend,writes]
//
// Items: unit vectors drawn around 2000 random centres; metadata {"category": "c0".."c99"
// (1% each), "price": 0..100, "colors": [two of 8]}. The write phase runs one writer (its own
// Index in Mode::Shared, adding one item with its metadata per write, one commit, at
// --write-rate) against --readers clients that each send filtered queries back to back to one
// read-only Index, served as `clipkit serve` serves them: a pool of --compute-threads threads
// (the server's --threads, 8 by default) takes the queued queries in arrival order (a refresh
// before each query; the searches run in parallel, each thread reading the catalog through its
// own connection), and the writer runs on a thread of its own (the server's write lane). A
// reader's latency runs from its query's arrival in the queue to its answer (the wait for a
// compute thread included). The writer first makes 20 writes alone (what a write costs by
// itself); the phase reports the writes achieved, the writer's time per write alone and with the
// readers, the readers' latency and their errors. With --same-index the writer writes through the readers'
// Index, opened in Mode::Shared (as `clipkit serve --writable` does), so the vectors are held
// once: each open Index holds items × dim × 4 bytes (2 GB at 1M items, dim 512), so the default
// needs about twice that. The flat kind is built by adding the items; another kind starts from a
// copy of the flat index folder in DIR when there is one (built by this run or an earlier one)
// and converts it (Index::rebuild, as `clipkit index rebuild` does), so its "build s" is the
// conversion alone. --reuse keeps an index a previous run built in DIR (its build time then
// reads 0) and times the queries and writes again; --phases times only the phases named (the
// others read 0). Prints a Markdown table, the CPU time per query of each timed phase (all
// threads), and the machine's load average at the start and the
// end. A plain program: one configuration takes minutes at 1M items (an HNSW build on two cores,
// much longer).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "clipkit/index.h"
#include "clipkit/model.h"

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// CPU time used by this process so far (all threads), in ms.
double cpu_ms_now() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

struct Args {
  int64_t items = 1000000;
  int dim = 512, queries = 200, readers = 100, compute_threads = 8;
  double write_rate = 50, write_seconds = 20;
  std::vector<std::string> kinds = {"flat", "hnsw"};
  std::string dir;
  bool same_index = false;
  bool reuse = false;
  std::string phases = "filtered,recommend,writes";  // which to time (the others read 0)
  bool runs(const char* phase) const { return ("," + phases + ",").find("," + std::string(phase) + ",") != std::string::npos; }
};

std::vector<float> draw(std::mt19937& rng, const std::vector<float>& centres, int dim) {
  std::normal_distribution<float> nd;
  std::uniform_int_distribution<int> pick(0, static_cast<int>(centres.size() / dim) - 1);
  const float* c = centres.data() + static_cast<size_t>(pick(rng)) * dim;
  std::vector<float> v(static_cast<size_t>(dim));
  const float spread = 0.6f / std::sqrt(static_cast<float>(dim));
  for (int j = 0; j < dim; ++j) v[static_cast<size_t>(j)] = c[j] + spread * nd(rng);
  return v;
}

std::string meta_of(int64_t i, std::mt19937& rng) {
  std::uniform_real_distribution<double> price(0, 100);
  static const char* colors[] = {"red", "blue", "green", "black", "white", "grey", "pink", "brown"};
  nlohmann::json j = {{"category", "c" + std::to_string(i % 100)},
                      {"price", std::round(price(rng) * 100) / 100},
                      {"colors", {colors[i % 8], colors[(i / 8) % 8]}}};
  return j.dump();
}

void run_kind(const Args& a, const std::string& kind) {
  namespace fs = std::filesystem;
  const std::string dir = a.dir + "/" + kind + ".idx";
  const bool reuse = a.reuse && fs::exists(fs::path(dir) / "catalog.sqlite");
  if (!reuse) fs::remove_all(dir);
  clipkit::ModelInfo mi;
  mi.arch.embed_dim = a.dim;
  mi.fingerprint = "bench-recsys-" + std::to_string(a.dim);
  mi.path = "";
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> centres(static_cast<size_t>(2000) * a.dim);
  for (auto& x : centres) x = nd(rng);
  clipkit::IndexCreateOptions co;
  co.kind = kind;
  auto t0 = Clock::now();
  const std::string first = a.dir + "/flat.idx";
  if (!reuse && kind != "flat" && fs::exists(fs::path(first) / "catalog.sqlite")) {
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(first))
      if (e.path().filename() != "lock") fs::copy_file(e.path(), fs::path(dir) / e.path().filename());
    t0 = Clock::now();
    clipkit::Index::open(dir).rebuild(kind);
  } else if (!reuse) {
    clipkit::Index idx = clipkit::Index::create(dir, mi, co);
    const int64_t batch = 10000;
    for (int64_t b = 0; b < a.items; b += batch) {
      std::vector<clipkit::Index::VectorRecord> recs;
      std::vector<std::pair<std::string, std::string>> metas;
      for (int64_t i = b; i < std::min(a.items, b + batch); ++i) {
        clipkit::Index::VectorRecord r;
        r.path = "/bench/" + std::to_string(i) + ".jpg";
        r.sha256 = clipkit::content_sha256(&i, sizeof i);
        r.vector = draw(rng, centres, a.dim);
        metas.emplace_back(r.path, meta_of(i, rng));
        recs.push_back(std::move(r));
      }
      idx.add_vectors(recs);
      idx.set_metadata(metas);
    }
  }
  const double build_s = ms_since(t0) / 1000;
  clipkit::Index idx = clipkit::Index::open(dir, a.same_index ? clipkit::Index::Mode::Shared : clipkit::Index::Mode::ReadOnly);
  const std::string structure = idx.info().structure;

  std::fprintf(stderr, "%s: built %lld items in %.0f s\n", kind.c_str(), static_cast<long long>(a.items), build_s);
  std::vector<double> cpu_ms;  // process CPU time per query, all threads, per timed phase
  auto time_queries = [&](const char* phase, auto&& f) {
    std::vector<double> ms;
    if (!a.runs(phase)) return ms;  // a phase that is not run reads 0
    std::fprintf(stderr, "%s: timing %d queries (%s)\n", kind.c_str(), a.queries, phase);
    (void)f(0);  // loads the metadata view once
    const double cpu0 = cpu_ms_now();
    for (int q = 0; q < a.queries; ++q) {
      const auto t = Clock::now();
      f(q);
      ms.push_back(ms_since(t));
    }
    cpu_ms.push_back((cpu_ms_now() - cpu0) / a.queries);
    return ms;
  };
  std::uniform_int_distribution<int64_t> any_id(1, a.items);
  const auto filtered = time_queries("filtered", [&](int q) {
    clipkit::SearchOptions o;
    o.k = 20;
    o.where = "category = \"c" + std::to_string(q % 100) + "\"";
    return idx.search_vector(draw(rng, centres, a.dim), o).size();
  });
  auto recommend = [&](clipkit::RecommendOptions::Strategy s) {
    return time_queries("recommend", [&](int) {
      clipkit::RecommendOptions o;
      o.strategy = s;
      for (int i = 0; i < 10; ++i) {
        clipkit::QueryTerm t;
        t.kind = clipkit::QueryTerm::Kind::Item;
        t.value = std::to_string(any_id(rng));
        (i < 5 ? o.positive : o.negative).push_back(t);
      }
      o.search.k = 20;
      return idx.recommend(o, nullptr).size();
    });
  };
  const auto avg = recommend(clipkit::RecommendOptions::Strategy::Average);
  const auto best = recommend(clipkit::RecommendOptions::Strategy::BestScore);

  // Writes while readers query (none when the phase is not run).
  const bool write_phase = a.runs("writes");
  const double write_seconds = write_phase ? a.write_seconds : 0;
  const int clients = write_phase ? a.readers : 0;
  if (write_phase) std::fprintf(stderr, "%s: writes while %d readers query (%d compute threads)\n", kind.c_str(), a.readers, a.compute_threads);
  std::atomic<bool> stop{false}, ready{false};
  std::atomic<int64_t> errors{0}, writes{0};
  std::vector<double> write_ms;
  std::vector<std::vector<double>> reader_ms(static_cast<size_t>(clients));
  if (write_phase) {  // a serving index has its metadata view loaded (the first filtered query loads it)
    clipkit::SearchOptions o;
    o.k = 20;
    o.where = "category = \"c0\"";
    idx.search_vector(draw(rng, centres, a.dim), o);
  }
  std::vector<double> alone_ms;
  std::thread writer([&] {
    if (!write_phase) {
      stop = true;
      return;
    }
    std::optional<clipkit::Index> own;
    if (!a.same_index) own.emplace(clipkit::Index::open(dir, clipkit::Index::Mode::Shared));
    clipkit::Index& w = a.same_index ? idx : *own;
    std::mt19937 wr(7);
    // New contents on every run (an earlier run's items would only be found again).
    const int64_t run = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    auto write = [&](int64_t n, std::vector<double>& ms) {
      try {
        clipkit::Index::VectorRecord r;
        const int64_t i[2] = {a.items + n, run};
        r.path = "/bench/new/" + std::to_string(run) + "-" + std::to_string(i[0]) + ".jpg";
        r.sha256 = clipkit::content_sha256(i, sizeof i);
        r.vector = draw(wr, centres, a.dim);
        r.meta = meta_of(i[0], wr);  // committed with the item
        const auto t = Clock::now();
        w.add_vectors({r});
        ms.push_back(ms_since(t));
        return true;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "write failed: %s\n", e.what());
        ++errors;
        return false;
      }
    };
    // 20 writes before the readers start: what one write costs alone.
    for (int64_t n = 0; n < 20; ++n) write(1000000000 + n, alone_ms);
    ready = true;
    const auto start = Clock::now();
    for (int64_t n = 0; ms_since(start) < write_seconds * 1000; ++n) {
      const auto due = start + std::chrono::microseconds(static_cast<int64_t>(n * 1e6 / a.write_rate));
      std::this_thread::sleep_until(due);
      if (write(n, write_ms)) ++writes;
    }
    stop = true;
  });
  while (write_phase && !ready) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // The clients' queries wait in one queue (client number, arrival) for the compute threads.
  std::mutex qmu;
  std::condition_variable qcv;
  std::deque<std::pair<int, Clock::time_point>> queue;
  for (int c = 0; c < clients; ++c) queue.emplace_back(c, Clock::now());
  std::vector<std::mt19937> client_rng;
  for (int c = 0; c < clients; ++c) client_rng.emplace_back(static_cast<uint32_t>(100 + c));
  std::vector<std::thread> readers;
  for (int t = 0; t < (clients > 0 ? a.compute_threads : 0); ++t)
    readers.emplace_back([&] {
      for (;;) {
        std::pair<int, Clock::time_point> job;
        {
          std::unique_lock<std::mutex> lock(qmu);
          qcv.wait_for(lock, std::chrono::milliseconds(100), [&] { return !queue.empty() || stop; });
          if (stop) return;
          if (queue.empty()) continue;
          job = queue.front();
          queue.pop_front();
        }
        const int c = job.first;
        const std::vector<float> q = draw(client_rng[static_cast<size_t>(c)], centres, a.dim);
        try {
          idx.refresh();
          clipkit::SearchOptions o;
          o.k = 20;
          o.where = "category = \"c" + std::to_string(c % 100) + "\"";
          idx.search_vector(q, o);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "read failed: %s\n", e.what());
          ++errors;
        }
        reader_ms[static_cast<size_t>(c)].push_back(ms_since(job.second));
        {
          const std::lock_guard<std::mutex> lock(qmu);
          queue.emplace_back(c, Clock::now());  // the client sends its next query at once
        }
        qcv.notify_one();
      }
    });
  writer.join();
  qcv.notify_all();
  for (auto& r : readers) r.join();
  std::vector<double> all;
  for (const auto& v : reader_ms) all.insert(all.end(), v.begin(), v.end());
  std::printf("| %lld | %s (%s) | %.0f | %.1f / %.1f | %.1f / %.1f | %.1f / %.1f | %.1f | %d | %.0f / %.0f | %lld |\n",
              static_cast<long long>(a.items), kind.c_str(), (structure + (a.same_index ? ", writer on the same index" : "")).c_str(), build_s, pct(filtered, 0.5), pct(filtered, 0.99),
              pct(avg, 0.5), pct(avg, 0.99), pct(best, 0.5), pct(best, 0.99), writes.load() / a.write_seconds, a.readers,
              pct(all, 0.5), pct(all, 0.99), static_cast<long long>(errors.load()));
  // Wall times depend on what else runs; CPU time per query much less (a quiet machine with two
  // cores answers a query that keeps both busy in about half of it).
  if (write_phase)
    std::fprintf(stdout, "%s: time per write (one item with its metadata) p50 / p99 ms: alone %.1f / %.1f, with the readers %.1f / %.1f\n",
                 kind.c_str(), pct(alone_ms, 0.5), pct(alone_ms, 0.99), pct(write_ms, 0.5), pct(write_ms, 0.99));
  if (!cpu_ms.empty()) {
    std::fprintf(stdout, "%s: CPU ms per query (all threads), timed phases in order:", kind.c_str());
    for (double c : cpu_ms) std::fprintf(stdout, " %.1f", c);
    std::fprintf(stdout, "\n");
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  a.dir = (std::filesystem::temp_directory_path() / "bench_recsys").string();
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_recsys: %s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--items") a.items = std::stoll(next());
    else if (k == "--dim") a.dim = std::stoi(next());
    else if (k == "--queries") a.queries = std::stoi(next());
    else if (k == "--readers") a.readers = std::stoi(next());
    else if (k == "--compute-threads") a.compute_threads = std::max(1, std::stoi(next()));
    else if (k == "--write-rate") a.write_rate = std::stod(next());
    else if (k == "--write-seconds") a.write_seconds = std::stod(next());
    else if (k == "--dir") a.dir = next();
    else if (k == "--same-index") a.same_index = true;
    else if (k == "--reuse") a.reuse = true;
    else if (k == "--phases") a.phases = next();
    else if (k == "--kinds") {
      a.kinds.clear();
      std::stringstream ss(next());
      for (std::string s; std::getline(ss, s, ',');) a.kinds.push_back(s);
    } else {
      std::fprintf(stderr, "bench_recsys: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  std::filesystem::create_directories(a.dir);
  auto load_average = [] {
    std::ifstream f("/proc/loadavg");
    std::string one, five, fifteen;
    f >> one >> five >> fifteen;
    return one + " " + five + " " + fifteen;
  };
  const std::string load_before = load_average();
  std::printf("| items | kind | build s | filtered 1%% p50 / p99 ms | recommend average p50 / p99 ms | best-score p50 / p99 ms | "
              "writes/s | readers | reader p50 / p99 ms | errors |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& k : a.kinds) run_kind(a, k);
  // Other work on the machine disturbs every figure: the load average says how much there was.
  std::printf("\nload average (1, 5, 15 min): %s at the start, %s at the end\n", load_before.c_str(), load_average().c_str());
  return 0;
}
