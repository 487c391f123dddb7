#!/usr/bin/env python3
"""Model load time and peak memory, repeated: `clipkit bench` with no images and no texts.

One load is one process start: every run maps the checkpoint, samples it for the fingerprint and
packs the weights, as a user's first command does (the file itself stays in the page cache, as
it does between a user's commands). Load times on a shared machine move by tens of percent from
run to run, so each row gives the minimum, median and maximum of --runs loads.

    bench/load_times.py --clipkit build/clipkit --model vitb32.safetensors --dtype f32,int8,f16
    bench/load_times.py --clipkit build/clipkit --model vitb32-int8.safetensors --dtype int8
    bench/load_times.py --clipkit build/clipkit --model vitb32.safetensors,vitb32-packed.safetensors --dtype f32

With several models (comma-separated), each row's loads alternate between them, so that a
converted file and its original are timed under the same machine load; each model's row then
also gives its median load time over the first model's.

Prints a Markdown table. Standard library only.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def one_load(clipkit, model, dtype, threads):
    cmd = [clipkit, "bench", "--model", model, "--dtype", dtype, "--threads", str(threads), "--images", "0",
           "--texts", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"load_times: {' '.join(cmd)} failed: {r.stderr.strip()}")
    j = json.loads(r.stdout.strip().splitlines()[-1])
    return j["load_s"], j["peak_rss_mb"], j["weights_mb"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clipkit", required=True, help="the clipkit program")
    ap.add_argument("--model", required=True, help="checkpoint to load (several: comma-separated, loads alternate)")
    ap.add_argument("--dtype", default="f32", help="comma-separated compute dtypes (f32, f16, int8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    if a.runs < 1:
        sys.exit("load_times: --runs must be at least 1")
    models = a.model.split(",")
    print(f"{a.threads} threads, {a.runs} loads per row, load average {os.getloadavg()[0]:.1f} at start")
    print()
    print("| model | dtype | load s (min / median / max) | median / first model's | peak RSS MB | weights MB |")
    print("|---|---|---:|---:|---:|---:|")
    for dtype in a.dtype.split(","):
        runs = {m: [] for m in models}
        for m in models:
            one_load(a.clipkit, m, dtype, a.threads)  # warms the page cache for this row
        for _ in range(a.runs):
            for m in models:
                runs[m].append(one_load(a.clipkit, m, dtype, a.threads))
        first = statistics.median(r[0] for r in runs[models[0]])
        for m in models:
            times = [r[0] for r in runs[m]]
            rss = statistics.median(r[1] for r in runs[m])
            print(f"| {os.path.basename(m)} | {dtype} | {min(times):.3f} / {statistics.median(times):.3f} / "
                  f"{max(times):.3f} | {statistics.median(times) / first:.2f} | {rss:.0f} | {runs[m][0][2]:.0f} |",
                  flush=True)
    print()
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
