#!/usr/bin/env bash
# Regenerates docs/cli.md from the CLI's own help (`clipkit help --markdown`).
#   scripts/gen-cli-doc.sh [path/to/clipkit]   (default: build/clipkit)
# tests/cli/test_help.cpp fails when docs/cli.md differs from what the built CLI prints.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exe="${1:-$root/build/clipkit}"
"$exe" help --markdown > "$root/docs/cli.md"
echo "wrote $root/docs/cli.md"
