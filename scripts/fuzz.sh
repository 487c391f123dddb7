#!/usr/bin/env bash
# Fuzzing campaign: builds the libFuzzer targets (build-fuzz/, clang, ASan + UBSan, a UBSan report
# stops the run) and runs every target for SECONDS each, starting from its stored seeds in
# fuzz/corpus/<name>/. Prints executions, executions per second, corpus growth and crashes per
# target; a crashing input is kept in fuzz-artifacts/<target>/ (libFuzzer stops at the first one).
#   scripts/fuzz.sh 60              every target, 60 s each
#   scripts/fuzz.sh 600 fuzz_npy    one target (names as in fuzz/, several allowed)
#   CLIPKIT_FUZZ_KEEP=1 scripts/fuzz.sh 60   also copy the grown corpora to fuzz-work/<target>/
#   CLIPKIT_FUZZ_BUILD=build-asan scripts/fuzz.sh 10   targets of a tree already configured with clang
#                                   and -DCLIPKIT_BUILD_FUZZ=ON (scripts/test.sh's sanitizer build)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: scripts/fuzz.sh SECONDS [fuzz_target...]}
shift
jobs=$(nproc)

build=${CLIPKIT_FUZZ_BUILD:-build-fuzz}
if [[ -z ${CLIPKIT_FUZZ_BUILD:-} ]]; then
  # ccache, when installed, makes rebuilds after a change or in a fresh clone short.
  launcher=()
  if command -v ccache >/dev/null; then launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE=-O1 \
    -DCLIPKIT_BUILD_FUZZ=ON -DCLIPKIT_BUILD_TESTS=OFF -DCLIPKIT_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
elif ! grep -q '^CLIPKIT_BUILD_FUZZ:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  echo "fuzz.sh: $build is not configured with -DCLIPKIT_BUILD_FUZZ=ON" >&2
  exit 2
fi
if (($#)); then targets=("$@"); else mapfile -t targets < <(cd fuzz && ls fuzz_*.cpp | sed "s/\.cpp$//"); fi
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

printf '%-22s %12s %9s %14s %8s\n' target executions exec/s "corpus (seeds)" crashes
failed=0
for name in "${targets[@]}"; do
  exe=$build/fuzz/$name
  seeds=fuzz/corpus/${name#fuzz_}
  [[ -d $seeds ]] || seeds=fuzz/corpus/$(echo "${name#fuzz_}" | cut -d_ -f1)
  work=$(mktemp -d)  # libFuzzer adds inputs to its corpus folder: the stored seeds stay untouched
  nseeds=0
  if [[ -d $seeds ]]; then cp -r "$seeds"/. "$work"/; nseeds=$(ls "$work" | wc -l); fi
  artifacts=fuzz-artifacts/$name
  mkdir -p "$artifacts"
  log=$(mktemp)
  rc=0
  "$exe" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$work" >"$log" 2>&1 || rc=$?
  execs=$(grep -o '^stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  [[ -n $execs ]] || execs=$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#' || true)
  rate=$(grep -o '^stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  crashes=0
  if ((rc != 0)); then
    crashes=1
    failed=1
    echo "-- $name stopped (exit $rc):" >&2
    grep -m 3 -E 'ERROR|runtime error|SUMMARY|Test unit written' "$log" >&2 || tail -n 5 "$log" >&2
  fi
  printf '%-22s %12s %9s %14s %8s\n' "$name" "${execs:-?}" "${rate:-?}" "$(ls "$work" | wc -l) ($nseeds)" "$crashes"
  if [[ -n ${CLIPKIT_FUZZ_KEEP:-} ]]; then mkdir -p "fuzz-work/$name" && cp -r "$work"/. "fuzz-work/$name"/; fi
  rm -rf "$work" "$log"
done
exit $failed
