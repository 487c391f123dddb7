// `mpirun -np N clipkit index build ...`: the build's phases (build.h), one shard per rank, with
// barriers between them. A phase that fails on any rank ends the whole job (MPI_Abort) after the
// rank printed what failed; a rank that dies is reported by the launcher, which ends the others.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "dist/build.h"

namespace clipkit::dist {

// Whether this process was started by an MPI launcher (OpenMPI's mpirun, or srun with PMI/PMIx);
// fills rank and size from the launcher's environment.
bool launched_by_mpi(int* rank, int* size);
// Whether this build has the MPI driver (CLIPKIT_WITH_MPI).
bool mpi_driver_built();

struct DriverHooks {
  // Loads the model on each rank for the embedding phase.
  std::function<std::shared_ptr<Model>()> load_model;
  // A line for the user (rank 0's summaries, each rank's shard summary and failed files).
  std::function<void(const std::string&)> say;
  // A fatal error on `rank`: printed before the job is aborted.
  std::function<void(const std::string&)> fail;
  // Called on each rank after each committed shard batch (test hooks).
  std::function<void(int rank, int64_t committed)> on_batch;
};

// MPI_Barrier that sleeps while it waits: the ranks waiting for rank 0's training or merge would
// otherwise poll at full speed on the cores it trains on. Does nothing in a build without MPI.
void idle_barrier();

// Runs every phase under MPI. Returns the process exit code on rank 0 (non-zero when files failed);
// other ranks return 0. Never returns on a fatal error: the job is aborted.
int run_mpi_build(const BuildOptions& options, const DriverHooks& hooks);

}  // namespace clipkit::dist
