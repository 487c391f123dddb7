#!/usr/bin/env bash
# Runs the offline walkthrough of README.md as written: the fenced block that follows the line
# `<!-- walkthrough -->`, one command line at a time, from a scratch folder laid out like the
# repository root (models/, examples/, scripts/, data/ linked; build/clipkit = the built binary).
# Any command that exits non-zero fails the test. `clipkit serve` runs in the background on a
# free port (`--port 0`); the test fetches the page and a search from it, then stops it (SIGTERM,
# which must end it with status 0).
#   test_readme_walkthrough.sh SOURCE_DIR CLIPKIT_BINARY
set -euo pipefail
src=$(cd "$1" && pwd)
bin=$2
[[ -x "$bin" ]] || { echo "not an executable: $bin" >&2; exit 1; }

work=$(mktemp -d)
server_pid=
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The walkthrough block: the lines between the first ``` after the marker and the next ```.
block=$(awk '/^<!-- walkthrough -->$/ {m = 1; next}
             m == 1 && /^```/ {m = 2; next}
             m == 2 && /^```/ {exit}
             m == 2 {print}' "$src/README.md")
commands=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' <<<"$block" || true)
count=$(grep -c . <<<"$commands" || true)
if (( count < 8 )); then
  echo "README.md: expected the walkthrough block after '<!-- walkthrough -->', found $count command(s)" >&2
  exit 1
fi

for d in models examples scripts data; do ln -s "$src/$d" "$work/$d"; done
mkdir "$work/build"
ln -s "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")" "$work/build/clipkit"
cd "$work"
# The dataset script needs numpy and Pillow: Debian's python3 has them (python3-numpy, python3-pil).
export PATH=/usr/bin:$PATH

served=0
while IFS= read -r line; do
  echo "+ $line"
  if [[ $line == "build/clipkit serve "* ]]; then
    bash -c "exec $line --port 0" 2>serve.log &
    server_pid=$!
    url=
    for _ in $(seq 1 200); do
      url=$(grep -o 'listening on http://[0-9.:]*/' serve.log | sed 's/^listening on //' || true)
      [[ -n "$url" ]] && break
      kill -0 "$server_pid" 2>/dev/null || { cat serve.log >&2; echo "serve exited early" >&2; exit 1; }
      sleep 0.1
    done
    [[ -n "$url" ]] || { cat serve.log >&2; echo "serve did not print its address" >&2; exit 1; }
    python3 - "$url" <<'PY' || exit 1
import json, sys, urllib.request
url = sys.argv[1]
page = urllib.request.urlopen(url, timeout=30).read().decode("utf-8", "replace")
if "<html" not in page.lower():
    sys.exit(f"GET {url} is not an HTML page")
hits = json.load(urllib.request.urlopen(url + "api/search?text=a+striped+dress&k=3", timeout=30))
if not hits.get("results"):
    sys.exit(f"search over HTTP returned no results: {hits}")
print(f"GET {url} and /api/search: {len(hits['results'])} results")
PY
    kill -TERM "$server_pid"
    wait "$server_pid" || { echo "serve did not exit with status 0 on SIGTERM" >&2; exit 1; }
    server_pid=
    served=1
  else
    bash -c "$line" || { echo "README walkthrough command failed (status $?): $line" >&2; exit 1; }
  fi
done <<<"$commands"

(( served )) || { echo "the walkthrough has no 'build/clipkit serve' line" >&2; exit 1; }
[[ -s build/demo/report.html ]] || { echo "the walkthrough wrote no build/demo/report.html" >&2; exit 1; }
echo "README walkthrough: $count commands passed"
