#!/usr/bin/env bash
# Runs the whole test suite: the Release build's tests and the Python package's, then the same suite
# under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/, clang), then each libFuzzer target
# of that same build for a bounded time (scripts/fuzz.sh).
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
# One clang build serves both the sanitizer pass and the fuzz targets: the libraries carry ASan, UBSan
# and libFuzzer's coverage instrumentation, the tests link without the fuzzer driver, the fuzz targets
# with it. -O1 without debug info keeps it short; sanitizer reports still name functions.
# ccache, when installed, makes rebuilds after a change or in a fresh clone short.
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
# A build-asan/ left by an older g++ configuration cannot switch compilers in place.
if [[ -f build-asan/CMakeCache.txt ]] && ! grep -q '^CMAKE_CXX_COMPILER:.*clang' build-asan/CMakeCache.txt; then
  rm -rf build-asan
fi
fuzz=OFF
[[ -d fuzz ]] && fuzz=ON
CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE=-O1 \
  -DCLIPKIT_SANITIZE=ON -DCLIPKIT_BUILD_FUZZ=$fuzz -DCLIPKIT_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -LE no-sanitizer

if [[ $fuzz == ON ]]; then
  # Each target runs a bounded time from its stored seeds (CLIPKIT_FUZZ_SECONDS, default 10: about
  # 2 minutes for the twelve targets, inside the 45-minute budget of a 2-core CI runner), from the
  # sanitizer build above. Longer campaigns: scripts/fuzz.sh SECONDS.
  echo "== libFuzzer targets (${CLIPKIT_FUZZ_SECONDS:-10} s each from fuzz/corpus)"
  CLIPKIT_FUZZ_BUILD=build-asan scripts/fuzz.sh "${CLIPKIT_FUZZ_SECONDS:-10}"
fi
echo "== all tests passed"
