#!/usr/bin/env python3
"""Generate a labelled folder of patterned-garment images for `clipkit eval`.

Each image shows one garment (t-shirt, dress, skirt, trousers, handbag, scarf, hat or sock)
filled with one of 8 patterns in two of 10 named colours, on a plain or gradient background,
drawn at 128x128, box-downsampled to 64x64 and given mild noise -- the same kind of picture the
demo model in models/demo/ was trained on (see its README). Every image is a pure function of
(--seed, class, index), so the output is byte-for-byte reproducible.

    python3 scripts/make-patterns-dataset.py OUT_DIR [--per-class 30] [--seed 2024]

Writes OUT_DIR/<pattern>/<NNN>_<garment>_<colour>.png (folder names use '_' for spaces) and
OUT_DIR/labels.json mapping each folder to its label text ("polka_dot" -> "polka dot"), the
layout `clipkit eval --dataset` reads. Needs Python 3, numpy and Pillow.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

PATTERNS = ["striped", "polka dot", "checkered", "floral", "plaid", "zigzag", "leopard print", "plain"]
GARMENTS = ["t-shirt", "dress", "skirt", "trousers", "handbag", "scarf", "hat", "sock"]
COLOURS = {
    "red": (200, 30, 35), "orange": (240, 130, 20), "yellow": (240, 215, 40), "green": (40, 150, 60),
    "blue": (35, 75, 200), "purple": (120, 50, 160), "pink": (240, 130, 175), "brown": (110, 65, 30),
    "black": (20, 20, 22), "white": (245, 245, 240),
}
S = 128  # drawing size; saved at S // 2


def garment_polygon(name, rng):
    """Silhouette polygon(s)/ellipses of a garment in a unit box, jittered, as a PIL mask."""
    shapes = {
        "t-shirt": [[(.30, .15), (.42, .12), (.50, .18), (.58, .12), (.70, .15), (.90, .32), (.78, .42), (.70, .36),
                     (.70, .88), (.30, .88), (.30, .36), (.22, .42), (.10, .32)]],
        "dress": [[(.40, .10), (.60, .10), (.64, .30), (.58, .42), (.82, .90), (.18, .90), (.42, .42), (.36, .30)]],
        "skirt": [[(.34, .25), (.66, .25), (.84, .80), (.16, .80)]],
        "trousers": [[(.30, .12), (.70, .12), (.74, .90), (.56, .90), (.50, .40), (.44, .90), (.26, .90)]],
        "handbag": [[(.22, .40), (.78, .40), (.84, .85), (.16, .85)]],
        "scarf": [[(.15, .30), (.85, .30), (.85, .48), (.62, .48), (.66, .90), (.50, .90), (.46, .48), (.15, .48)]],
        "hat": [[(.10, .68), (.90, .68), (.90, .76), (.10, .76)], [(.28, .68), (.32, .34), (.68, .34), (.72, .68)]],
        "sock": [[(.38, .10), (.60, .10), (.60, .62), (.82, .72), (.80, .88), (.50, .88), (.38, .72)]],
    }[name]
    scale = rng.uniform(0.85, 1.05)
    dx, dy = rng.uniform(-0.06, 0.06, size=2)
    angle = rng.uniform(-0.18, 0.18)
    mirror = rng.random() < 0.5
    ca, sa = math.cos(angle), math.sin(angle)
    mask = Image.new("L", (S, S), 0)
    draw = ImageDraw.Draw(mask)
    for poly in shapes:
        pts = []
        for x, y in poly:
            if mirror:
                x = 1.0 - x
            x, y = (x - 0.5) * scale, (y - 0.5) * scale
            x, y = x * ca - y * sa, x * sa + y * ca
            pts.append(((x + 0.5 + dx) * S, (y + 0.5 + dy) * S))
        draw.polygon(pts, fill=255)
    if name == "handbag":  # handle
        cx = S * (0.5 + dx)
        draw.arc([cx - S * .18, S * (.22 + dy), cx + S * .18, S * (.58 + dy)], 180, 360, fill=255, width=5)
    return np.asarray(mask, dtype=np.float32) / 255.0


def rotated(rng, angle=None):
    a = rng.uniform(0, math.pi) if angle is None else angle
    y, x = np.mgrid[0:S, 0:S].astype(np.float32)
    return x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)


def pattern_field(name, rng):
    """Fraction of the secondary colour per pixel, in [0, 1] ([S, S])."""
    if name == "striped":
        u, _ = rotated(rng, rng.choice([0, math.pi / 2, math.pi / 4, 3 * math.pi / 4]) + rng.uniform(-.1, .1))
        period = rng.uniform(8, 18)
        return ((u % period) < period * rng.uniform(0.35, 0.6)).astype(np.float32)
    if name == "polka dot":
        u, v = rotated(rng, rng.uniform(-.3, .3))
        sp = rng.uniform(12, 20)
        r = sp * rng.uniform(0.2, 0.32)
        row = np.floor(v / sp)
        uu = u + (row % 2) * sp / 2
        du = (uu % sp) - sp / 2
        dv = (v % sp) - sp / 2
        return (du * du + dv * dv < r * r).astype(np.float32)
    if name == "checkered":
        u, v = rotated(rng, rng.choice([0.0, math.pi / 4]) + rng.uniform(-.1, .1))
        s = rng.uniform(8, 16)
        return ((np.floor(u / s) + np.floor(v / s)) % 2).astype(np.float32)
    if name == "plaid":
        u, v = rotated(rng, rng.uniform(-.1, .1))
        p = rng.uniform(18, 30)
        w = p * rng.uniform(0.3, 0.45)
        a = ((u % p) < w).astype(np.float32)
        b = ((v % p) < w).astype(np.float32)
        thin = (((u + p / 2) % p) < 2) | (((v + p / 2) % p) < 2)
        return np.clip(0.45 * a + 0.45 * b + 0.8 * thin, 0, 1)
    if name == "zigzag":
        u, v = rotated(rng, rng.choice([0.0, math.pi / 2]))
        w = rng.uniform(8, 14)
        amp = rng.uniform(4, 8)
        tri = np.abs((u / w) % 2 - 1) * 2 - 1
        p = rng.uniform(10, 16)
        return (((v + amp * tri) % p) < p / 2).astype(np.float32)
    if name == "floral":
        f = np.zeros((S, S), np.float32)
        img = Image.fromarray(np.zeros((S, S), np.uint8))
        d = ImageDraw.Draw(img)
        n = int(rng.integers(7, 13))
        for _ in range(n):
            cx, cy = rng.uniform(0, S, size=2)
            petals = int(rng.choice([5, 6]))
            rad = rng.uniform(5, 9)
            rot = rng.uniform(0, 2 * math.pi)
            for k in range(petals):
                a = rot + 2 * math.pi * k / petals
                px, py = cx + rad * math.cos(a), cy + rad * math.sin(a)
                d.ellipse([px - rad * .6, py - rad * .6, px + rad * .6, py + rad * .6], fill=255)
            d.ellipse([cx - rad * .4, cy - rad * .4, cx + rad * .4, cy + rad * .4], fill=128)
        f = np.asarray(img, np.float32) / 255.0
        return f
    if name == "leopard print":
        img = Image.fromarray(np.zeros((S, S), np.uint8))
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(14, 22))):
            cx, cy = rng.uniform(0, S, size=2)
            r = rng.uniform(5, 9)
            for k in range(int(rng.integers(4, 7))):
                a = 2 * math.pi * k / 6 + rng.uniform(-.3, .3)
                px, py = cx + r * math.cos(a), cy + r * math.sin(a)
                e = rng.uniform(1.8, 3.2)
                d.ellipse([px - e, py - e * 1.3, px + e, py + e * 1.3], fill=255)
            d.ellipse([cx - r * .5, cy - r * .5, cx + r * .5, cy + r * .5], fill=90)
        return np.asarray(img, np.float32) / 255.0
    if name == "plain":
        return np.zeros((S, S), np.float32)
    raise ValueError(name)


def render(pattern, rng):
    garment = GARMENTS[int(rng.integers(len(GARMENTS)))]
    names = list(COLOURS)
    c1, c2 = rng.choice(len(names), size=2, replace=False)
    if pattern == "leopard print" and rng.random() < 0.7:  # mostly animal colours
        c1, c2 = names.index(rng.choice(["orange", "yellow", "brown"])), names.index("black")
    col1, col2 = np.array(COLOURS[names[c1]], np.float32), np.array(COLOURS[names[c2]], np.float32)
    # background: plain or vertical gradient of a light random tone
    base = rng.uniform(170, 250, size=3).astype(np.float32)
    grad = np.linspace(0, rng.uniform(-40, 40), S, dtype=np.float32)[:, None, None]
    bg = np.clip(base[None, None, :] + (grad if rng.random() < 0.5 else 0), 0, 255) * np.ones((S, S, 1), np.float32)
    field = pattern_field(pattern, rng)[:, :, None]
    if pattern == "leopard print":  # dark spots, lighter rosette centres
        fill = col1 * (1 - field) + col2 * field
    else:
        fill = col1 * (1 - field) + col2 * field
    shade = np.linspace(1.05, 0.85, S, dtype=np.float32)[None, :, None]  # soft side lighting
    mask = garment_polygon(garment, rng)[:, :, None]
    img = bg * (1 - mask) + np.clip(fill * shade, 0, 255) * mask
    small = img.reshape(S // 2, 2, S // 2, 2, 3).mean(axis=(1, 3))
    small = small + rng.normal(0, 3.0, size=small.shape)
    return Image.fromarray(np.clip(np.round(small), 0, 255).astype(np.uint8), "RGB"), garment, names[c1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output folder (created)")
    ap.add_argument("--per-class", type=int, default=30, help="images per pattern (default 30)")
    ap.add_argument("--seed", type=int, default=2024, help="base seed (default 2024)")
    args = ap.parse_args()
    if args.per_class < 1:
        sys.exit("--per-class must be at least 1")
    labels = {}
    for ci, pattern in enumerate(PATTERNS):
        folder = pattern.replace(" ", "_")
        labels[folder] = pattern
        os.makedirs(os.path.join(args.out, folder), exist_ok=True)
        for i in range(args.per_class):
            rng = np.random.default_rng([args.seed, ci, i])
            img, garment, colour = render(pattern, rng)
            img.save(os.path.join(args.out, folder, "%03d_%s_%s.png" % (i, garment, colour)), optimize=False)
    with open(os.path.join(args.out, "labels.json"), "w") as f:
        json.dump(labels, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote %d images in %d classes to %s" % (args.per_class * len(PATTERNS), len(PATTERNS), args.out))


if __name__ == "__main__":
    main()
