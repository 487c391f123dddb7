#!/usr/bin/env bash
# Runs the whole test suite: the Release build's tests and the Python package's, then the same suite under
# AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/), then each libFuzzer target briefly.
#   scripts/test.sh            everything
#   scripts/test.sh --quick    only the Release build's tests (C++ and Python)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

echo "== Release tests"
ctest --test-dir build --output-on-failure -j "$jobs"

# The Python package (built when pybind11 is installed): its pytest suite, with Debian's
# interpreter (the one that has numpy, Pillow and pytest).
if [[ -f build/python/clipkit/__init__.py ]]; then
  echo "== Python tests"
  PYTHONPATH=build/python /usr/bin/python3 -m pytest -q -p no:cacheprovider python/tests
else
  echo "== Python tests skipped: the package was not built (install pybind11-dev, rerun scripts/setup.sh)"
fi
[[ "${1:-}" == "--quick" ]] && exit 0

echo "== ASan + UBSan build and tests"
# -O1 without debug info keeps this second build short; sanitizer reports still name functions.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE=-O1 \
  -DCLIPKIT_SANITIZE=ON -DCLIPKIT_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -LE no-sanitizer

if [[ -d fuzz ]]; then
  echo "== libFuzzer targets (30,000 fixed-seed runs each)"
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE=-O1 \
    -DCLIPKIT_BUILD_FUZZ=ON -DCLIPKIT_BUILD_TESTS=OFF -DCLIPKIT_BUILD_BENCH=OFF >/dev/null
  cmake --build build-fuzz -j "$jobs" --target $(cd fuzz && ls fuzz_*.cpp | sed "s/\.cpp$//")
  for f in build-fuzz/fuzz/fuzz_*; do
    [[ -x "$f" ]] || continue
    name=$(basename "$f")
    seeds=fuzz/corpus/${name#fuzz_}
    [[ -d $seeds ]] || seeds=fuzz/corpus/$(echo "${name#fuzz_}" | cut -d_ -f1)
    work=$(mktemp -d)  # libFuzzer adds inputs to its corpus folder: keep the seeds untouched
    [[ -d $seeds ]] && cp -r "$seeds"/. "$work"/
    echo "-- $name"
    "$f" -seed=1 -runs=30000 -max_total_time=60 -rss_limit_mb=2048 -timeout=10 "$work" 2>&1 | tail -n 2
    rm -rf "$work"
  done
fi
echo "== all tests passed"
