#!/usr/bin/env bash
# Runs the whole test suite: the Release build's tests, then the same suite under
# AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/), then each libFuzzer target briefly.
#   scripts/test.sh            everything
#   scripts/test.sh --quick    only the Release build's tests
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

echo "== Release tests"
ctest --test-dir build --output-on-failure -j "$jobs"
[[ "${1:-}" == "--quick" ]] && exit 0

echo "== ASan + UBSan build and tests"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLIPKIT_SANITIZE=ON -DCLIPKIT_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -LE no-sanitizer

if [[ -d fuzz ]]; then
  echo "== libFuzzer targets (30 s each)"
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCLIPKIT_BUILD_FUZZ=ON -DCLIPKIT_BUILD_TESTS=OFF -DCLIPKIT_BUILD_BENCH=OFF >/dev/null
  cmake --build build-fuzz -j "$jobs"
  for f in build-fuzz/fuzz/fuzz_*; do
    [[ -x "$f" ]] || continue
    name=$(basename "$f")
    corpus=fuzz/corpus/${name#fuzz_}
    echo "-- $name"
    "$f" -max_total_time=30 -rss_limit_mb=2048 -timeout=10 $( [[ -d $corpus ]] && echo "$corpus" ) 2>&1 | tail -n 2
  done
fi
echo "== all tests passed"
