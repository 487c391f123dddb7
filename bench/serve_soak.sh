#!/usr/bin/env bash
# Soak test of `clipkit serve`: bench/serve_load.py for MINUTES (default 10) with 200 idle
# connections and 50 clients (5% of their requests upload the folder's first picture; 5% of their
# text searches are new texts, so that the server's caches, 16 MiB, fill up within the first
# minute and then evict), the server's memory printed every 30 s. Passes (exit 0) when no
# request failed and the memory of the last sample is within 10% (and 16 MiB) of the sample
# taken after the first minute.
#   bench/serve_soak.sh MODEL IMAGE_FOLDER [MINUTES] [CLIPKIT]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bench/serve_soak.sh MODEL IMAGE_FOLDER [MINUTES] [CLIPKIT]}
images=${2:?usage: bench/serve_soak.sh MODEL IMAGE_FOLDER [MINUTES] [CLIPKIT]}
minutes=${3:-10}
clipkit=${4:-build/clipkit}
upload=$(find "$images" -maxdepth 1 -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' \) | sort | head -n 1)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
rc=0
python3 bench/serve_load.py --clipkit "$clipkit" --model "$model" --images "$images" --idle 200 --clients 50 \
  --duration $((minutes * 60)) --rss-every 30 --fresh-queries 0.05 --serve-arg=--cache-mb --serve-arg=16 ${upload:+--upload "$upload"} --json | tee "$out" || rc=$?
python3 - "$out" "$rc" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
r = json.loads(lines[-1])
trace = r.get("rss_trace_mib", [])
after_warm = [m for t, m in trace if t >= 60] or [m for _, m in trace]
first, last = after_warm[0], after_warm[-1]
flat = last <= first * 1.10 or last - first <= 16
print(f"soak: {r['requests']} requests, {r['errors']} errors, p99 {r['p99_ms']} ms, "
      f"RSS {first} MiB after the first minute, {last} MiB at the end, max {r['server_rss_max_mib']} MiB: "
      + ("flat" if flat else "GROWING"))
sys.exit(0 if flat and r["errors"] == 0 and sys.argv[2] == "0" else 1)
PY
