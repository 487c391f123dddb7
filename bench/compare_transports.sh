#!/usr/bin/env bash
# The HTTP libraries considered for `clipkit serve`, under the same load: each serves the same
# synthetic handler (bench/transports/transport_server.cpp) while bench/serve_load.py holds IDLE
# idle connections and runs CLIENTS clients for SECONDS. One JSON line per library.
#   bench/compare_transports.sh [IDLE] [CLIENTS] [SECONDS] [WORK_US]
# Needs the target bench_transport_server (libmicrohttpd is measured when libmicrohttpd-dev was
# installed at configure time).
set -euo pipefail
cd "$(dirname "$0")/.."
idle=${1:-1000}
clients=${2:-200}
seconds=${3:-20}
work=${4:-500}
exe=build/bench/bench_transport_server
for transport in beast mhd httplib; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$exe" --transport "$transport" --port "$port" --work-us "$work" --threads 8 &
  pid=$!
  for _ in $(seq 50); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null && break
    if ! kill -0 "$pid" 2>/dev/null; then pid=; break; fi
    sleep 0.1
  done
  if [[ -z $pid ]]; then echo "{\"transport\": \"$transport\", \"result\": \"not built in\"}"; continue; fi
  printf '{"transport": "%s", "result": ' "$transport"
  python3 bench/serve_load.py --port "$port" --pid "$pid" --idle "$idle" --clients "$clients" --duration "$seconds" --json |
    tr -d '\n' || true
  echo "}"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done
