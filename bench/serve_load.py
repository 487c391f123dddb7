#!/usr/bin/env python3
"""Load benchmark of `clipkit serve` (loopback only, bounded in time and connections).

Opens IDLE connections that send nothing (or, with --slow, send a request's headers one byte
every few seconds), keeps them open, and meanwhile runs CLIENTS clients that each send requests
one after another on a kept-alive connection for DURATION seconds: a mix of text searches,
similar-item searches, item records and item images (and uploads with --upload FILE). Reports
requests per second, latency percentiles, errors (time-outs, refused or reset connections,
non-2xx answers), how many idle connections the server still held at the end, and the server's
resident memory (sampled from /proc, so the server must run on this machine).

It starts the server itself (`--clipkit BIN --index DIR`, or an index it builds in a temporary
folder from `--model M --images FOLDER`), or measures a running one (`--port P --pid PID`).

The clients run in `serve_load_client` (bench/load/serve_load_client.cpp, built with the
benchmarks into build/bench/), one native event loop that costs a few microseconds per request,
so that on a small machine the server, not the client, is what is measured; `--python-clients`
runs them as asyncio tasks here instead (about a millisecond of client CPU per request). The idle
connections are always held here.

  python3 bench/serve_load.py --clipkit build/clipkit --model MODEL --images FOLDER \\
      --idle 1000 --clients 200 --duration 60
  python3 bench/serve_load.py ... --duration 600 --rss-every 30     # a soak: memory over time

Standard library only. Exit status 0 when the run had no errors, 1 otherwise.
"""
import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

WORDS = ["striped", "polka dot", "checkered", "floral", "plaid", "zigzag", "leopard print", "plain",
         "red", "blue", "scarf", "dress", "sock", "hat", "a photo of a cat", "waves"]


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid):
    """User plus system CPU time the process has used, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_index(clipkit, model, images, folder):
    idx = os.path.join(folder, "bench.idx")
    subprocess.run([clipkit, "index", "create", idx, "--model", model], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([clipkit, "index", "add", idx, images], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return idx


def start_server(args, index):
    port = free_port()
    cmd = [args.clipkit, "serve", index, "--port", str(port)] + args.serve_arg
    log = open(os.devnull, "w") if not args.server_log else open(args.server_log, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"serve_load: the server exited with status {proc.returncode}: {' '.join(cmd)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                if s.recv(12).startswith(b"HTTP/1.1 200"):
                    return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("serve_load: the server did not answer within 120 s")


async def read_response(reader):
    """Status and body of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    close = False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v.strip())
        elif k == "connection" and v.strip().lower() == "close":
            close = True
    body = await reader.readexactly(length) if length else b""
    return status, body, close


class Stats:
    def __init__(self):
        self.latencies = []
        self.errors = {}
        self.by_route = {}

    def error(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1


def pick_request(rnd, ids, upload):
    r = rnd.random()
    if upload is not None and r < 0.05:
        head = (f"POST /api/search/image?k=10 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(upload)}\r\n\r\n").encode()
        return "upload", head + upload
    if r < 0.55 or not ids:
        q = rnd.choice(WORDS).replace(" ", "+")
        return "search", f"GET /api/search?text={q}&k=20 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    if r < 0.75:
        return "similar", f"GET /api/similar/{rnd.choice(ids)}?k=20 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    if r < 0.90:
        return "image", f"GET /api/items/{rnd.choice(ids)}/image HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    return "item", f"GET /api/items/{rnd.choice(ids)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


async def client(port, stop_at, stats, ids, upload, timeout, seed):
    rnd = random.Random(seed)
    reader = writer = None
    while time.monotonic() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
            route, data = pick_request(rnd, ids, upload)
            t0 = time.monotonic()
            writer.write(data)
            await writer.drain()
            status, _, close = await asyncio.wait_for(read_response(reader), timeout)
            dt = time.monotonic() - t0
            stats.latencies.append(dt)
            stats.by_route.setdefault(route, []).append(dt)
            if status >= 300:
                stats.error(f"status {status}")
            if close:
                writer.close()
                writer = None
        except asyncio.TimeoutError:
            stats.error("time-out")
            if writer:
                writer.close()
            writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            stats.error(type(e).__name__)
            if writer:
                writer.close()
            writer = None
            await asyncio.sleep(0.05)
    if writer:
        writer.close()


async def idle_connection(port, stop_at, slow, held):
    """Holds a connection that sends nothing (or a header a byte at a time), opening a new one
    whenever the server closes it; counts itself while open."""
    partial = b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 10000
    while time.monotonic() < stop_at:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            held["refused"] += 1
            await asyncio.sleep(1.0)
            continue
        held["open"] += 1
        i = 0
        try:
            while time.monotonic() < stop_at:
                if slow and i < len(partial):
                    writer.write(partial[i:i + 1])
                    i += 1
                try:
                    got = await asyncio.wait_for(reader.read(4096), 3.0 if slow else 1.0)
                    if not got:  # closed by the server
                        break
                except asyncio.TimeoutError:
                    pass
        except OSError:
            pass
        finally:
            held["open"] -= 1
            if time.monotonic() < stop_at - 0.5:
                held["closed_by_server"] += 1
            writer.close()


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def client_bin(args):
    """The native client to use, or None for the Python clients."""
    if args.python_clients:
        return None
    path = args.client_bin or os.path.join(os.path.dirname(os.path.abspath(args.clipkit)), "bench", "serve_load_client")
    if os.access(path, os.X_OK):
        return path
    if args.client_bin:
        sys.exit(f"serve_load: no client executable {path}")
    print(f"serve_load: {path} not built: using the Python clients (build the target serve_load_client)", file=sys.stderr)
    return None


async def native_clients(binary, args, port, ids):
    cmd = [binary, "--port", str(port), "--clients", str(args.clients), "--duration", str(args.duration),
           "--timeout", str(args.timeout), "--ids", ",".join(str(i) for i in ids)]
    if args.upload:
        cmd += ["--upload", args.upload]
    if args.fresh_queries:
        cmd += ["--fresh", str(args.fresh_queries)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    lines = [l for l in out.decode().splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"serve_load: {binary} printed no result (status {proc.returncode})")
    return json.loads(lines[-1])


async def run(args, port, pid, ids, upload):
    stats = Stats()
    held = {"open": 0, "refused": 0, "closed_by_server": 0}
    t_start = time.monotonic()
    stop_at = t_start + args.warm_idle + args.duration
    idle_tasks = []
    for _ in range(args.idle):
        idle_tasks.append(asyncio.create_task(idle_connection(port, stop_at + 1, args.slow, held)))
        if len(idle_tasks) % 100 == 0:
            await asyncio.sleep(0.01)
    await asyncio.sleep(args.warm_idle)
    idle_before = held["open"]
    rss_trace = []
    binary = client_bin(args)
    cpu_start = cpu_seconds(pid) if pid else float("nan")
    if binary:
        clients = [asyncio.create_task(native_clients(binary, args, port, ids))]
    else:
        clients = [asyncio.create_task(client(port, stop_at, stats, ids, upload, args.timeout, i)) for i in range(args.clients)]
    rss_max = 0.0
    next_trace = time.monotonic()
    while time.monotonic() < stop_at:
        await asyncio.sleep(0.5)
        if pid:
            r = rss_mib(pid)
            rss_max = max(rss_max, r)
            if args.rss_every and time.monotonic() >= next_trace:
                rss_trace.append((round(time.monotonic() - t_start), round(r, 1)))
                done_so_far = "" if binary else f"  requests={len(stats.latencies)}"
                print(f"  t={rss_trace[-1][0]:>5d}s  rss={r:8.1f} MiB{done_so_far}", flush=True)
                next_trace += args.rss_every
    idle_after = held["open"]
    done = await asyncio.gather(*clients)
    cpu_used = cpu_seconds(pid) - cpu_start if pid else float("nan")
    await asyncio.gather(*idle_tasks)
    n = len(stats.latencies)
    if binary:
        native = done[0]
        n = native["requests"]
    result = {
        "idle_requested": args.idle, "idle_open_before": idle_before, "idle_open_at_end": idle_after,
        "idle_refused": held["refused"], "idle_closed_by_server": held["closed_by_server"],  # each then reopened
        "clients": args.clients, "duration_s": args.duration, "requests": n,
        "requests_per_s": round(n / args.duration, 1),
        "p50_ms": round(pct(stats.latencies, 50) * 1000, 2), "p90_ms": round(pct(stats.latencies, 90) * 1000, 2),
        "p99_ms": round(pct(stats.latencies, 99) * 1000, 2), "max_ms": round(max(stats.latencies, default=float("nan")) * 1000, 2),
        "errors": sum(stats.errors.values()), "error_kinds": stats.errors,
        "p99_ms_by_route": {k: round(pct(v, 99) * 1000, 2) for k, v in sorted(stats.by_route.items())},
        "server_rss_max_mib": round(rss_max, 1) if pid else None,
        # CPU time of the server per answered request: what the load costs it, whatever else the machine runs
        "server_cpu_s": round(cpu_used, 2) if pid else None,
        "server_cpu_us_per_request": round(cpu_used / n * 1e6, 1) if pid and n else None,
        "client": "native" if binary else "python",
    }
    if binary:
        for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "errors", "error_kinds", "p99_ms_by_route", "requests_by_route"):
            v = native[key]
            result[key] = {k: round(x, 2) for k, x in v.items()} if key == "p99_ms_by_route" else (round(v, 2) if isinstance(v, float) else v)
    else:
        result["requests_by_route"] = {k: len(v) for k, v in sorted(stats.by_route.items())}
    if rss_trace:
        result["rss_trace_mib"] = rss_trace
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clipkit", default="build/clipkit", help="the clipkit executable (when it starts the server)")
    ap.add_argument("--index", help="serve this index")
    ap.add_argument("--model", help="with --images: build a temporary index with this model")
    ap.add_argument("--images", help="with --model: the folder of images to index")
    ap.add_argument("--port", type=int, help="measure the server already listening on 127.0.0.1:PORT")
    ap.add_argument("--pid", type=int, help="that server's process id (for its memory)")
    ap.add_argument("--serve-arg", action="append", default=[], help="an extra argument for clipkit serve (repeatable)")
    ap.add_argument("--server-log", help="write the server's log here")
    ap.add_argument("--idle", type=int, default=1000, help="idle connections held open (default 1000)")
    ap.add_argument("--slow", action="store_true", help="idle connections send a header a byte every 3 s (slowloris)")
    ap.add_argument("--warm-idle", type=float, default=2.0, help="seconds between opening the idle connections and the clients")
    ap.add_argument("--clients", type=int, default=200, help="concurrent clients (default 200)")
    ap.add_argument("--duration", type=float, default=60, help="seconds the clients run (default 60)")
    ap.add_argument("--timeout", type=float, default=10, help="a request without an answer after this many seconds is an error")
    ap.add_argument("--upload", help="an image file: 5%% of the requests upload it to /api/search/image")
    ap.add_argument("--client-bin", help="the native client (default: bench/serve_load_client beside --clipkit)")
    ap.add_argument("--python-clients", action="store_true", help="run the clients as asyncio tasks here instead of the native client")
    ap.add_argument("--fresh-queries", type=float, default=0,
                    help="this fraction of the text searches are new texts, never cached (native client only)")
    ap.add_argument("--rss-every", type=float, default=0, help="print the server's memory every this many seconds")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = ap.parse_args()
    if args.fresh_queries and args.python_clients:
        sys.exit("serve_load: --fresh-queries needs the native client")
    if args.idle + args.clients > 15000:
        sys.exit("serve_load: at most 15000 connections")

    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.idle + args.clients + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    proc = None
    tmp = None
    try:
        if args.port:
            port, pid = args.port, args.pid
        else:
            index = args.index
            if not index:
                if not (args.model and args.images):
                    sys.exit("serve_load: give --index, or --model and --images, or --port")
                tmp = tempfile.mkdtemp(prefix="clipkit-serve-load-")
                index = build_index(args.clipkit, args.model, args.images, tmp)
            proc, port = start_server(args, index)
            pid = proc.pid
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /api/search?text=a&k=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        body = data.split(b"\r\n\r\n", 1)[1]
        ids = [r["id"] for r in json.loads(body)["results"]]
        upload = open(args.upload, "rb").read() if args.upload else None
        result = asyncio.run(run(args, port, pid, ids, upload))
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
