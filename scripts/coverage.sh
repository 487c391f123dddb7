#!/usr/bin/env bash
# Line coverage of src/ by the Release test suite: builds with gcc --coverage into build-cov/
# (-O1, no benchmarks), runs the suite there with ctest and prints gcovr's per-file table and total
# for src/. Installs gcovr (Debian package) when it is missing. Slow: a full build plus the suite.
#   scripts/coverage.sh                 build, test, report
#   scripts/coverage.sh --report-only   report on what build-cov/ has already recorded
#   CLIPKIT_COVERAGE_TESTS='test_io|test_core' scripts/coverage.sh   only some suites (ctest -R)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

if ! command -v gcovr >/dev/null; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends gcovr
fi

if [[ "${1:-}" != "--report-only" ]]; then
  cmake -S . -B build-cov -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
    -DCMAKE_CXX_FLAGS=--coverage -DCMAKE_C_FLAGS=--coverage -DCMAKE_EXE_LINKER_FLAGS=--coverage \
    -DCLIPKIT_BUILD_BENCH=OFF >/dev/null
  cmake --build build-cov -j "$jobs"
  find build-cov -name '*.gcda' -delete  # counts from this run only
  ctest --test-dir build-cov -j "$jobs" ${CLIPKIT_COVERAGE_TESTS:+-R "$CLIPKIT_COVERAGE_TESTS"} || \
    echo "coverage: some tests failed; the figures below still count what ran" >&2
fi
gcovr --root . --filter 'src/' --object-directory build-cov -j "$jobs" --print-summary --sort-percentage \
  --exclude-unreachable-branches --gcov-ignore-parse-errors 2>/dev/null
