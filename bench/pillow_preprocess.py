#!/usr/bin/env python3
"""Pillow + numpy baseline for bench/preprocess.cpp: decode the same 1024x768 JPEG from memory and
apply the CLIP transform (Resize(224, BICUBIC) on the short side, CenterCrop(224), convert('RGB'),
/255, normalise, CHW float32) on one thread. Prints images per CPU second for decode+preprocess, decode
only and preprocess only (compare with the "CPU" column / items_per_second of bench_preprocess).

Usage: python3 bench/pillow_preprocess.py [path/to/bench_1024x768.jpg] [seconds per measurement]
"""
import io
import os
import sys
import time

import numpy as np
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)


def decode(data):
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def preprocess(im, n=224):
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = n, int(n * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.BICUBIC)
    top = int(round((new_h - n) / 2.0))
    left = int(round((new_w - n) / 2.0))
    im = im.crop((left, top, left + n, top + n)).convert("RGB")
    x = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return (x - MEAN) / STD


def rate(fn, seconds):
    """Images per second of process CPU time (robust on a loaded machine), single thread."""
    fn()  # warm up
    count, start, wall = 0, time.process_time(), time.perf_counter()
    while True:
        fn()
        count += 1
        if time.perf_counter() - wall >= seconds:
            return count / (time.process_time() - start)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "data", "vision",
                                                               "bench_1024x768.jpg")
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    data = open(path, "rb").read()
    im = decode(data)
    print(f"Pillow {Image.__version__ if hasattr(Image, '__version__') else ''} numpy {np.__version__}, "
          f"{im.size[0]}x{im.size[1]} {im.mode}")
    full = rate(lambda: preprocess(decode(data)), seconds)
    dec = rate(lambda: decode(data), seconds)
    pre = rate(lambda: preprocess(im), seconds)
    print(f"decode+preprocess224: {full:8.1f} images/s  ({1000 / full:.2f} ms)")
    print(f"decode only:          {dec:8.1f} images/s  ({1000 / dec:.2f} ms)")
    print(f"preprocess224 only:   {pre:8.1f} images/s  ({1000 / pre:.2f} ms)")


if __name__ == "__main__":
    main()
