#!/usr/bin/env bash
# The on-disk build benchmark in one command: a sharded build of N synthetic vectors with R MPI
# ranks, the exact answers in a separate process, then search latency, recall@10 and peak RSS.
#   bench/dist_ondisk.sh [N=10000000] [RANKS=4] [KIND=IVF16384,PQ64] [WORKDIR=bench-dist-ondisk]
# Needs build/bench/bench_dist_ondisk (cmake --build build --target bench_dist_ondisk) and, for
# RANKS > 1, mpirun. Disk per vector at dim 512: shards 2.4 KB, exact vectors 2.05, catalog 0.3,
# merge parts 0.1, lists twice the code size. The build cuts SHARDS (default 4 x RANKS) shards and
# each one keeps only its description once added (DISCARD=0 keeps them whole), so the peak is about
# 2.4 + 2.05 x RANKS / SHARDS + 0.5 KB per vector, about 3 KB; afterwards shards/ is removed
# (KEEP_SHARDS=1 keeps it), leaving about 2.4 KB.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BIN:-$root/build/bench/bench_dist_ondisk}"
n="${1:-10000000}"
ranks="${2:-4}"
kind="${3:-IVF16384,PQ64}"
work="${4:-bench-dist-ondisk}"
queries="${QUERIES:-10000}"
shards="${SHARDS:-$((ranks * 4))}"
discard="${DISCARD:-1}"
nprobe="${NPROBE:-1,8,32,128}"
# RESUME=1 goes on with an interrupted run in WORKDIR (finished shards and phases are skipped;
# the times printed are those of what was left).
resume="${RESUME:-0}"
[[ "$resume" == 1 ]] || rm -rf "$work"
# Idle OpenMP threads sleep rather than spin: the ranks share the cores.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
echo "== $(date -u '+%F %T UTC'), $(nproc --all) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo), $(uname -r)"
# Disk in use by the work folder every 30 s (its peak is printed after the build).
( while sleep 30; do du -s --block-size=1M "$work" 2>/dev/null | cut -f1; done ) > "$work.du" &
sampler=$!
if [[ "$ranks" -gt 1 ]]; then
  mpirun --oversubscribe --allow-run-as-root -np "$ranks" "$bin" build "$work" --vectors "$n" --kind "$kind" --shards "$shards" --discard-shards "$discard" --resume "$resume"
else
  "$bin" build "$work" --vectors "$n" --kind "$kind" --shards "$shards" --discard-shards "$discard" --resume "$resume"
fi
kill "$sampler"
echo "peak disk use during the build: $(sort -n "$work.du" | tail -1) MB (sampled every 30 s)"
du -sh "$work" "$work/shards" 2>/dev/null || true
[[ "${KEEP_SHARDS:-0}" == 1 ]] || rm -rf "$work/shards"
"$bin" truth "$work" --queries "$queries"
# A fresh process, so that its peak RSS is the search's own.
"$bin" search "$work" --queries "$queries" --nprobe "$nprobe"
