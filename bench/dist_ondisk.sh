#!/usr/bin/env bash
# The on-disk build benchmark in one command: a sharded build of N synthetic vectors with R MPI
# ranks, the exact answers in a separate process, then search latency, recall@10 and peak RSS.
#   bench/dist_ondisk.sh [N=10000000] [RANKS=4] [KIND=IVF16384,PQ64] [WORKDIR=bench-dist-ondisk]
# Needs build/bench/bench_dist_ondisk (cmake --build build --target bench_dist_ondisk) and, for
# RANKS > 1, mpirun. Disk: about 17 KB per vector (shards 4.2, their merge parts 6.2, catalog 4.3,
# exact vectors 2.0, index 0.07 at PQ64; shards/ can be removed after the merge).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/build/bench/bench_dist_ondisk"
n="${1:-10000000}"
ranks="${2:-4}"
kind="${3:-IVF16384,PQ64}"
work="${4:-bench-dist-ondisk}"
queries="${QUERIES:-10000}"
nprobe="${NPROBE:-1,8,32,128}"
rm -rf "$work"
echo "== $(date -u '+%F %T UTC'), $(nproc --all) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo), $(uname -r)"
if [[ "$ranks" -gt 1 ]]; then
  mpirun --oversubscribe --allow-run-as-root -np "$ranks" "$bin" build "$work" --vectors "$n" --kind "$kind"
else
  "$bin" build "$work" --vectors "$n" --kind "$kind" --shards 1
fi
du -sh "$work" "$work/shards"
"$bin" truth "$work" --queries "$queries"
# A fresh process, so that its peak RSS is the search's own.
"$bin" search "$work" --queries "$queries" --nprobe "$nprobe"
