#!/usr/bin/env python3
"""Throughput through the Python package next to `clipkit bench` on the same model, in one run.

    PYTHONPATH=build/python /usr/bin/python3 bench/python_throughput.py --model M [--batches 16,64]
        [--images 128] [--texts 256] [--rounds 5] [--threads 0] [--dtype f32] [--cli build/clipkit]

For each batch size, each round runs the command line's `clipkit bench` (random preprocessed
images, ImageNet prompts in batches of 64) and the same work through Python, in alternating
order: Model.encode_pixels on random float32 batches and Model.encode_text on the same prompts
(the 80 ImageNet templates x the 1000 class names, in order) in batches of 64. A round's rates
use the median per-item time of its batches after one warm-up batch, as `clipkit bench` does;
each side reports its best round, which keeps the comparison stable on a shared machine. Prints
one JSON line per batch size with both figures and the ratio Python / C++. Not a test: timings
depend on the machine.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

import clipkit

TEXT_BATCH = 64


def imagenet_prompts(n):
    classes = clipkit.label_sets()["imagenet1000"]
    templates = clipkit.template_sets()["imagenet80"]
    out = []
    c = 0
    while len(out) < n:
        for t in templates:
            if len(out) >= n:
                break
            out.append(t.replace("{}", classes[c], 1))
        c = (c + 1) % len(classes)
    return out


def python_rates(model, batch, images, texts):
    rng = np.random.default_rng(1234)
    r = model.resolution
    pixels = rng.standard_normal((batch, 3, r, r), dtype=np.float32)
    model.encode_pixels(pixels[: min(batch, images)])  # warm-up
    per_item = []
    done = 0
    while done < images:
        b = min(batch, images - done)
        chunk = pixels[:b]
        t = time.perf_counter()
        model.encode_pixels(chunk)
        per_item.append((time.perf_counter() - t) / b)
        done += b
    image_per_s = 1.0 / statistics.median(per_item)

    prompts = imagenet_prompts(texts)
    model.encode_text(prompts[: min(TEXT_BATCH, texts)])  # warm-up
    per_item = []
    for start in range(0, len(prompts), TEXT_BATCH):
        chunk = prompts[start : start + TEXT_BATCH]
        t = time.perf_counter()
        model.encode_text(chunk)
        per_item.append((time.perf_counter() - t) / len(chunk))
    text_per_s = 1.0 / statistics.median(per_item)
    return image_per_s, text_per_s


def main():
    ap = argparse.ArgumentParser(description="Python vs clipkit bench throughput")
    ap.add_argument("--model", required=True)
    ap.add_argument("--batches", default="16,64")
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--cli", default="build/clipkit")
    args = ap.parse_args()

    model = clipkit.load(args.model, dtype=args.dtype, threads=args.threads)
    for batch in (int(b) for b in args.batches.split(",")):
        cli_img, cli_txt, py_img, py_txt = [], [], [], []
        kernels = None
        for r in range(args.rounds):
            for side in (("cli", "python") if r % 2 == 0 else ("python", "cli")):
                if side == "cli":
                    out = subprocess.run(
                        [args.cli, "bench", "--model", args.model, "--dtype", args.dtype, "--threads",
                         str(args.threads), "--batch", str(batch), "--images", str(args.images), "--texts",
                         str(args.texts)], capture_output=True, text=True, check=True)
                    c = json.loads(out.stdout.strip().splitlines()[-1])
                    cli_img.append(c["image_per_s"])
                    cli_txt.append(c["text_per_s"])
                    kernels = c.get("kernels")
                else:
                    img, txt = python_rates(model, batch, args.images, args.texts)
                    py_img.append(img)
                    py_txt.append(txt)
        print(json.dumps({
            "model": args.model, "dtype": args.dtype, "threads": args.threads, "batch": batch,
            "images": args.images, "texts": args.texts, "text_batch": TEXT_BATCH, "rounds": args.rounds,
            "cli_image_per_s": round(max(cli_img), 2), "python_image_per_s": round(max(py_img), 2),
            "image_ratio": round(max(py_img) / max(cli_img), 4),
            "cli_text_per_s": round(max(cli_txt), 2), "python_text_per_s": round(max(py_txt), 2),
            "text_ratio": round(max(py_txt) / max(cli_txt), 4),
            "kernels": kernels,
        }))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
