#include "dist/mpi_driver.h"

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "clipkit/error.h"

#ifdef CLIPKIT_WITH_MPI
// The C API only (OpenMPI and MPICH would otherwise pull in their deprecated C++ bindings).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

// AddressSanitizer: g++ defines __SANITIZE_ADDRESS__, clang answers __has_feature.
#if defined(__SANITIZE_ADDRESS__)
#define CLIPKIT_LEAK_CHECK_BEFORE_MPI_FINALIZE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CLIPKIT_LEAK_CHECK_BEFORE_MPI_FINALIZE 1
#endif
#endif
#ifdef CLIPKIT_LEAK_CHECK_BEFORE_MPI_FINALIZE
#include <sanitizer/lsan_interface.h>
#endif

namespace clipkit::dist {

namespace {
bool env_int(const char* name, int* out) {
  const char* v = std::getenv(name);
  if (!v || !*v) return false;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0) return false;
  *out = static_cast<int>(x);
  return true;
}
}  // namespace

bool launched_by_mpi(int* rank, int* size) {
  int r = 0, n = 0;
  if (env_int("OMPI_COMM_WORLD_SIZE", &n) && env_int("OMPI_COMM_WORLD_RANK", &r)) {
  } else if (env_int("PMIX_SIZE", &n) && env_int("PMIX_RANK", &r)) {
  } else if (env_int("PMI_SIZE", &n) && env_int("PMI_RANK", &r)) {
  } else {
    return false;
  }
  if (rank) *rank = r;
  if (size) *size = n;
  return true;
}

#ifdef CLIPKIT_WITH_MPI

bool mpi_driver_built() { return true; }

void idle_barrier() {
  MPI_Request req;
  MPI_Ibarrier(MPI_COMM_WORLD, &req);
  int done = 0;
  for (MPI_Test(&req, &done, MPI_STATUS_IGNORE); !done; MPI_Test(&req, &done, MPI_STATUS_IGNORE))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

int run_mpi_build(const BuildOptions& options, const DriverHooks& hooks) {
  MPI_Init(nullptr, nullptr);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const std::string who = "rank " + std::to_string(rank) + " of " + std::to_string(size);
  auto phase = [&](const char* name, auto&& body) {
    try {
      body();
    } catch (const std::exception& e) {
      hooks.fail(who + ", " + name + ": " + e.what());
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  };
  int64_t failed = 0;
  phase("embedding", [&] {
    BuildOptions o = options;
    if (hooks.on_batch) o.on_batch = [&](int64_t committed) { hooks.on_batch(rank, committed); };
    auto model = hooks.load_model();
    const ShardReport r = embed_shard(o, *model, rank, size);
    for (const auto& f : r.failures) hooks.say("failed: " + f.path + ": " + f.reason);
    hooks.say(who + ": shard of " + std::to_string(r.files) + " files " +
              (r.already_complete ? std::string("already embedded")
                                  : "embedded (" + std::to_string(r.embedded) + " contents" +
                                        (r.resumed_at ? ", resumed after " + std::to_string(r.resumed_at) + " files" : std::string()) + ")"));
  });
  idle_barrier();
  if (rank == 0)
    phase("training", [&] {
      const TrainReport r = train(options);
      hooks.say(r.already_done ? "training: already done (" + r.factory + ")"
                               : "training: " + std::to_string(r.items) + " contents in " + std::to_string(r.files) + " files, " + r.factory +
                                     (r.sample ? ", trained on " + std::to_string(r.sample) + " vectors" : std::string()) +
                                     (r.id_buckets > 1 ? "; duplicates searched in " + std::to_string(r.id_buckets) + " buckets" : std::string()));
    });
  idle_barrier();
  phase("adding", [&] {
    const AddShardReport r = add_shard(options, rank);
    hooks.say(who + ": " + (r.already_done ? std::string("shard already added") : std::to_string(r.added) + " contents ready for the merge"));
  });
  idle_barrier();
  if (rank == 0)
    phase("merging", [&] {
      const MergeReport r = merge(options);
      failed = r.failed;
      hooks.say((r.already_done ? std::string("merge: already done, ") : std::string("merged: ")) + std::to_string(r.items) + " contents, " +
                std::to_string(r.files) + " files in " + options.dir + " (" + r.structure + ")");
      if (r.failed) hooks.say(std::to_string(r.failed) + " file(s) could not be added (listed above)");
    });
  idle_barrier();
#ifdef CLIPKIT_LEAK_CHECK_BEFORE_MPI_FINALIZE
  // Sanitizer builds check for leaks here, once, instead of at exit: MPI_Finalize unloads OpenMPI's
  // components with memory they never free, whose stacks then name no library a suppression could
  // match (tests/dist/openmpi.lsan.supp lists what OpenMPI leaks before that point).
  __lsan_do_leak_check();
#endif
  MPI_Finalize();
  return failed ? 1 : 0;
}

#else

bool mpi_driver_built() { return false; }

void idle_barrier() {}

int run_mpi_build(const BuildOptions&, const DriverHooks&) {
  throw Error(ErrorCode::InvalidArgument,
              "this clipkit was built without MPI; run the phases as separate commands (--shard I/N, --train, --add-shard I, --merge)");
}

#endif

}  // namespace clipkit::dist
