#!/usr/bin/env bash
# Regenerates the pictures of the web page in docs/images/ (serve-desktop.png, serve-phone.png):
# the example pictures indexed with the demo model and served by the built clipkit, photographed
# in headless Chromium (the browser test's driver, tests/web/test_web_page.py --screenshots).
#   scripts/web-screenshots.sh [BUILD_DIR]     (default: build; needs its clipkit binary)
# Needs chromium, chromium-driver and python3-selenium (scripts/install-deps.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
if [[ ! -x "$build/clipkit" ]]; then
  echo "web-screenshots: $build/clipkit is not built (cmake --build $build --target clipkit)" >&2
  exit 1
fi
exec /usr/bin/python3 "$root/tests/web/test_web_page.py" --clipkit "$build/clipkit" --source "$root" \
  --screenshots "$root/docs/images"
