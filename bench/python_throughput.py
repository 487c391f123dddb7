#!/usr/bin/env python3
"""Throughput through the Python package next to `clipkit bench` on the same model, in one run.

    PYTHONPATH=build/python /usr/bin/python3 bench/python_throughput.py --model M [--batches 16,64]
        [--images 128] [--texts 256] [--rounds 5] [--threads 0] [--dtype f32] [--cli build/clipkit]
        [--torch]

For each batch size, each round runs the command line's `clipkit bench` (random preprocessed
images, ImageNet prompts in batches of 64) and the same work through Python, in alternating
order: Model.encode_pixels on random float32 batches and Model.encode_text on the same prompts
(the 80 ImageNet templates x the 1000 class names, in order) in batches of 64. A round's rates
use the median per-item time of its batches after one warm-up batch, as `clipkit bench` does;
each side reports its best round, which keeps the comparison stable on a shared machine. Prints
one JSON line per batch size with both figures and the ratio Python / C++. Not a test: timings
depend on the machine.

--torch adds a third side to every round: the same weights in the PyTorch modules of
bench/compare/clip_torch.py (OpenAI's CLIP graph, Debian's python3-torch, the same thread count),
timed on the same pixels and on the same prompts tokenised by clipkit.tokenize, in the same
batches; the JSON line then also carries PyTorch's rates and the ratios Python / PyTorch. The
model must be a safetensors file in OpenAI's layout, as `clipkit create-random --arch ViT-B/32`
writes. PyTorch runs the full 77-token context, as the reference graph does.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import os

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


def rates(encode_image, pixels, images, encode_text, texts):
    """Images/s and texts/s: the median per-item time of the batches after one warm-up batch.
    `pixels` is one batch; `texts` the whole list of inputs, encoded TEXT_BATCH at a time."""
    batch = len(pixels)
    encode_image(pixels[: min(batch, images)])  # warm-up
    per_item = []
    done = 0
    while done < images:
        b = min(batch, images - done)
        t = time.perf_counter()
        encode_image(pixels[:b])
        per_item.append((time.perf_counter() - t) / b)
        done += b
    image_per_s = 1.0 / statistics.median(per_item)
    encode_text(texts[:TEXT_BATCH])  # warm-up
    per_item = []
    for start in range(0, len(texts), TEXT_BATCH):
        chunk = texts[start : start + TEXT_BATCH]
        t = time.perf_counter()
        encode_text(chunk)
        per_item.append((time.perf_counter() - t) / len(chunk))
    return image_per_s, 1.0 / statistics.median(per_item)


def random_pixels(batch, resolution):
    return np.random.default_rng(1234).standard_normal((batch, 3, resolution, resolution), dtype=np.float32)


def python_rates(model, batch, images, texts):
    return rates(model.encode_pixels, random_pixels(batch, model.resolution), images, model.encode_text,
                 imagenet_prompts(texts))


def torch_rates(net, torch, batch, images, texts, resolution):
    pixels = torch.from_numpy(random_pixels(batch, resolution))
    ids = torch.from_numpy(clipkit.tokenize(imagenet_prompts(texts)).astype(np.int64))
    with torch.no_grad():
        return rates(net.encode_image, pixels, images, net.encode_text, ids)


def load_torch(path, threads):
    import torch  # Debian's python3-torch: only this optional comparison needs it
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare"))
    import clip_torch
    torch.set_num_threads(threads if threads > 0 else os.cpu_count())
    return clip_torch.load_clip(path), torch


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
    ap.add_argument("--torch", action="store_true", help="also time PyTorch on the same weights")
    args = ap.parse_args()

    model = clipkit.load(args.model, dtype=args.dtype, threads=args.threads)
    net, torch = load_torch(args.model, args.threads) if args.torch else (None, None)
    for batch in (int(b) for b in args.batches.split(",")):
        cli_img, cli_txt, py_img, py_txt, pt_img, pt_txt = [], [], [], [], [], []
        kernels = None
        sides = ["cli", "python"] + (["torch"] if net is not None else [])
        for r in range(args.rounds):
            for side in sides[r % len(sides):] + sides[: r % len(sides)]:  # the order rotates
                if side == "cli":
                    out = subprocess.run(
                        [args.cli, "bench", "--model", args.model, "--dtype", args.dtype, "--threads",
                         str(args.threads), "--batch", str(batch), "--images", str(args.images), "--texts",
                         str(args.texts)], capture_output=True, text=True, check=True)
                    c = json.loads(out.stdout.strip().splitlines()[-1])
                    cli_img.append(c["image_per_s"])
                    cli_txt.append(c["text_per_s"])
                    kernels = c.get("kernels")
                elif side == "python":
                    img, txt = python_rates(model, batch, args.images, args.texts)
                    py_img.append(img)
                    py_txt.append(txt)
                else:
                    img, txt = torch_rates(net, torch, batch, args.images, args.texts, model.resolution)
                    pt_img.append(img)
                    pt_txt.append(txt)
        line = {
            "model": args.model, "dtype": args.dtype, "threads": args.threads, "batch": batch,
            "images": args.images, "texts": args.texts, "text_batch": TEXT_BATCH, "rounds": args.rounds,
            "cli_image_per_s": round(max(cli_img), 2), "python_image_per_s": round(max(py_img), 2),
            "image_ratio": round(max(py_img) / max(cli_img), 4),
            "cli_text_per_s": round(max(cli_txt), 2), "python_text_per_s": round(max(py_txt), 2),
            "text_ratio": round(max(py_txt) / max(cli_txt), 4),
            "kernels": kernels,
        }
        if pt_img:
            line.update({
                "torch_image_per_s": round(max(pt_img), 2), "torch_text_per_s": round(max(pt_txt), 2),
                "python_vs_torch_image": round(max(py_img) / max(pt_img), 3),
                "python_vs_torch_text": round(max(py_txt) / max(pt_txt), 3),
            })
        print(json.dumps(line))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
