#!/usr/bin/env bash
# Installs a built clipkit into a scratch prefix (`cmake --install`), then configures and builds the
# project in consumer/ against it with find_package(clipkit), and runs it: it loads the tiny ViT
# test model and checks its text embeddings against the golden ones.
#   test_install.sh SOURCE_DIR BUILD_DIR [CXX_FLAGS [EXE_LINKER_FLAGS]]
# The flags are the build's own (e.g. --coverage), which a program linking its libraries needs too.
set -euo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/prefix" >"$work/install.log" || { cat "$work/install.log" >&2; exit 1; }
[[ -x "$work/prefix/bin/clipkit" ]] || { echo "the install has no bin/clipkit" >&2; exit 1; }
[[ -f "$work/prefix/include/clipkit/model.h" ]] || { echo "the install has no include/clipkit/model.h" >&2; exit 1; }

launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$src/tests/install/consumer" -B "$work/consumer" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_FLAGS="${3:-}" -DCMAKE_EXE_LINKER_FLAGS="${4:-}" \
  "${launcher[@]}"
cmake --build "$work/consumer"
# faiss's BLAS calls must reach clipkit's sgemm_ (lib/clipkit/sgemm_override.o), linked into the program.
# (nm's listing goes to a file first: with pipefail, grep -q stopping early would fail the pipe)
nm "$work/consumer/consumer" >"$work/symbols.txt"
grep -q ' T sgemm_$' "$work/symbols.txt" || { echo "the consumer does not define sgemm_" >&2; exit 1; }
"$work/consumer/consumer" "$src/tests/data/models/tiny-vit.safetensors" "$src/tests/data/golden/tiny-vit.json"
