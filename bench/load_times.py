#!/usr/bin/env python3
"""Model load time and peak memory, repeated: `clipkit bench` with no images and no texts.

One load is one process start: every run maps the checkpoint, samples it for the fingerprint and
packs the weights, as a user's first command does (the file itself stays in the page cache, as
it does between a user's commands). Load times on a shared machine move by tens of percent from
run to run, so each row gives the minimum, median and maximum of --runs loads.

    bench/load_times.py --clipkit build/clipkit --model vitb32.safetensors --dtype f32,int8,f16
    bench/load_times.py --clipkit build/clipkit --model vitb32-int8.safetensors --dtype int8

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
    ap.add_argument("--model", required=True, help="checkpoint to load")
    ap.add_argument("--dtype", default="f32", help="comma-separated compute dtypes (f32, f16, int8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    if a.runs < 1:
        sys.exit("load_times: --runs must be at least 1")
    print(f"model {os.path.basename(a.model)}, {a.threads} threads, {a.runs} loads per row, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print()
    print("| dtype | load s (min / median / max) | peak RSS MB | weights MB |")
    print("|---|---:|---:|---:|")
    for dtype in a.dtype.split(","):
        one_load(a.clipkit, a.model, dtype, a.threads)  # warms the page cache for this row
        runs = [one_load(a.clipkit, a.model, dtype, a.threads) for _ in range(a.runs)]
        times = [r[0] for r in runs]
        rss = statistics.median(r[1] for r in runs)
        print(f"| {dtype} | {min(times):.3f} / {statistics.median(times):.3f} / {max(times):.3f} | {rss:.0f} | "
              f"{runs[0][2]:.0f} |", flush=True)
    print()
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
