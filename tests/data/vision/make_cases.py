#!/usr/bin/env python3
"""Generates the image-pipeline test cases in this folder with Pillow 9.4 + numpy.

For every source image (every mode and format the decoders handle) it records what Pillow's
Image.open gives (mode, size, pixels, convert('RGB')), the CLIP reference transform's 8-bit
result (Resize(n, BICUBIC) on the image in its own mode, CenterCrop(n), convert('RGB')) at a few
resolutions, and a few plain Image.resize(BICUBIC) results at arbitrary sizes. The transform is
restated with Pillow calls exactly as torchvision 0.14 performs them on PIL images.

Run from anywhere:  python3 make_cases.py   (needs Pillow 9.4 and numpy)
Writes: src/<case files>, expected/<case>.*.npy.gz (gzip-compressed .npy), manifest.json.
Deterministic.
"""
import io
import json
import os
import struct
import warnings
import gzip
import zlib

import numpy as np
import PIL
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")
EXP = os.path.join(HERE, "expected")
RNG = np.random.default_rng(20240229)


def smooth(w, h, channels, seed):
    """A smooth colour field with some texture and sharp edges (exercises over/undershoot)."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for c in range(channels):
        fx, fy, ph = r.uniform(0.5, 3.0), r.uniform(0.5, 3.0), r.uniform(0, 6.28)
        v = 127.5 + 90 * np.sin(fx * 6.28 * x / max(w, 1) + ph) * np.cos(fy * 6.28 * y / max(h, 1))
        v += r.normal(0, 18, size=(h, w))
        v[(x.astype(int) // 5 + y.astype(int) // 7) % 4 == 0] = 255 if c % 2 else 0
        out.append(np.clip(np.round(v), 0, 255).astype(np.uint8))
    return np.stack(out, axis=-1)


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def raw_png(w, h, depth, ctype, rows, extra=b"", interlace=0):
    """A PNG written by hand (Pillow cannot write 16-bit RGB, LA16, 2/4-bit gray...)."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    data = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(data, 9))
            + png_chunk(b"IEND", b""))


def pack_bits(values, depth):
    """Packs a row of small integers MSB first."""
    per = 8 // depth
    out = bytearray()
    for i in range(0, len(values), per):
        b = 0
        for j in range(per):
            v = values[i + j] if i + j < len(values) else 0
            b |= (int(v) & ((1 << depth) - 1)) << (8 - depth * (j + 1))
        out.append(b)
    return bytes(out)


def bmp_file(w, h, bits, pixel_rows, palette=None, compression=0, masks=None, header=40, top_down=False,
             raw_data=None):
    """A BMP written by hand. pixel_rows: bottom-up packed rows (already padded) unless raw_data."""
    pal = b""
    if palette is not None:
        pal = b"".join(bytes([b, g, r, 0]) if header != 12 else bytes([b, g, r]) for (r, g, b) in palette)
    data = raw_data if raw_data is not None else b"".join(pixel_rows)
    mask_bytes = b""
    if header == 12:
        info = struct.pack("<IHHHH", 12, w, h, 1, bits)
    else:
        hh = -h if top_down else h
        info = struct.pack("<IiiHHIIiiII", header, w, hh, 1, bits, compression, len(data), 2835, 2835,
                           len(palette) if palette else 0, 0)
        if header >= 108:
            m = list(masks) + [0] * (4 - len(masks)) if masks else [0, 0, 0, 0]
            info += struct.pack("<IIII", *m) + b"\x00" * (header - 56)
        elif masks is not None:
            mask_bytes = struct.pack("<III", *masks[:3])
    offset = 14 + len(info) + len(mask_bytes) + len(pal)
    head = b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset)
    return head + info + mask_bytes + pal + data


def bmp_rows(arr_rows, row_bytes_fn):
    rows = []
    for r in arr_rows[::-1]:
        b = row_bytes_fn(r)
        b += b"\x00" * ((4 - len(b) % 4) % 4)
        rows.append(b)
    return rows


def rle8_encode(idx):
    """Simple RLE8 stream (runs + absolute runs + end of line / bitmap), bottom-up."""
    out = bytearray()
    for row in idx[::-1]:
        x = 0
        w = len(row)
        while x < w:
            run = 1
            while x + run < w and run < 255 and row[x + run] == row[x]:
                run += 1
            if run >= 3 or w - x < 3:
                out += bytes([run, row[x]])
                x += run
            else:
                n = min(255, w - x)
                n = max(3, n)
                lit = bytes(row[x:x + n])
                out += bytes([0, n]) + lit
                if n % 2:
                    out += b"\x00"
                x += n
        out += b"\x00\x00"
    out += b"\x00\x01"
    return bytes(out)


def rle4_encode(idx):
    out = bytearray()
    for row in idx[::-1]:
        x = 0
        w = len(row)
        while x < w:
            n = min(w - x, 16)
            if n >= 4 and x % 3 == 0:
                # absolute run of n pixels (n even), 2 per byte, padded to words
                n -= n % 2
                lit = pack_bits(row[x:x + n], 4)
                out += bytes([0, n]) + lit
                if len(lit) % 2:
                    out += b"\x00"
                x += n
            else:
                n = min(w - x, 7)
                a, b = row[x], row[x + 1] if x + 1 < w else 0
                out += bytes([n, (a << 4) | b])
                x += n
        out += b"\x00\x00"
    out += b"\x00\x01"
    return bytes(out)


CASES = []


def add(name, data, note):
    path = os.path.join(SRC, name)
    with open(path, "wb") as f:
        f.write(data)
    CASES.append({"name": name, "note": note})


def pil_bytes(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def build_sources():
    # --- PNG, every colour type / depth ---
    rgb = smooth(53, 37, 3, 1)
    add("png_rgb8.png", pil_bytes(Image.fromarray(rgb, "RGB"), "PNG"), "RGB 8-bit PNG 53x37")
    rgba = np.concatenate([smooth(47, 61, 3, 2), smooth(47, 61, 1, 3)], axis=-1)
    rgba[::5, :, 3] = 0
    rgba[:, ::6, 3] = 255
    add("png_rgba8.png", pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"), "RGBA PNG 47x61, alpha 0/255/ramp")
    g = smooth(41, 29, 1, 4)[..., 0]
    add("png_l8.png", pil_bytes(Image.fromarray(g, "L"), "PNG"), "gray 8-bit PNG 41x29")
    la = np.stack([smooth(33, 45, 1, 5)[..., 0], smooth(33, 45, 1, 6)[..., 0]], axis=-1)
    la[::4, :, 1] = 0
    add("png_la8.png", pil_bytes(Image.fromarray(la, "LA"), "PNG"), "gray+alpha PNG 33x45")
    idx = (smooth(57, 31, 1, 7)[..., 0] // 16).astype(np.uint8)
    pal = RNG.integers(0, 256, size=(16, 3)).astype(np.uint8)
    trns = bytes(RNG.integers(0, 256, size=10).astype(np.uint8))
    add("png_p8_trns.png",
        raw_png(57, 31, 8, 3, [bytes(r) for r in idx], png_chunk(b"PLTE", pal.tobytes()) + png_chunk(b"tRNS", trns)),
        "palette PNG 8-bit with tRNS, 16 entries")
    for depth in (1, 2, 4):
        n = 1 << depth
        idx = (smooth(29, 19, 1, 8 + depth)[..., 0].astype(int) * n // 256).astype(np.uint8)
        palx = RNG.integers(0, 256, size=(n, 3)).astype(np.uint8)
        add(f"png_p{depth}.png",
            raw_png(29, 19, depth, 3, [pack_bits(r, depth) for r in idx], png_chunk(b"PLTE", palx.tobytes())),
            f"palette PNG {depth}-bit")
        gv = (smooth(31, 23, 1, 12 + depth)[..., 0].astype(int) * n // 256).astype(np.uint8)
        add(f"png_gray{depth}.png", raw_png(31, 23, depth, 0, [pack_bits(r, depth) for r in gv]),
            f"gray PNG {depth}-bit")
    g16 = (smooth(37, 27, 1, 20)[..., 0].astype(np.uint32) * 257 + RNG.integers(0, 257, size=(27, 37))).astype(">u2")
    add("png_gray16.png", raw_png(37, 27, 16, 0, [r.tobytes() for r in g16]), "gray 16-bit PNG (mode I)")
    g16s = (np.clip(smooth(35, 26, 1, 21)[..., 0].astype(np.int64) - 100, 0, 255) * 2).astype(">u2")
    g16s[::3, ::2] = 300
    g16s[1::4, ::3] = 0
    add("png_gray16_small.png", raw_png(35, 26, 16, 0, [r.tobytes() for r in g16s]),
        "gray 16-bit PNG with values around 0..510 (I resize + clip to 0..255)")
    rgb16 = (smooth(39, 21, 3, 22).astype(np.uint32) * 257 + RNG.integers(0, 257, size=(21, 39, 3))).astype(">u2")
    add("png_rgb16.png", raw_png(39, 21, 16, 2, [r.tobytes() for r in rgb16]), "RGB 16-bit PNG")
    rgba16 = (smooth(23, 35, 4, 23).astype(np.uint32) * 257 + RNG.integers(0, 257, size=(35, 23, 4))).astype(">u2")
    add("png_rgba16.png", raw_png(23, 35, 16, 6, [r.tobytes() for r in rgba16]), "RGBA 16-bit PNG")
    la16 = (smooth(27, 33, 2, 24).astype(np.uint32) * 257).astype(">u2")
    add("png_la16.png", raw_png(27, 33, 16, 4, [r.tobytes() for r in la16]), "gray+alpha 16-bit PNG (Pillow: RGBA)")
    g = smooth(30, 20, 1, 25)[..., 0]
    add("png_l8_trns.png", raw_png(30, 20, 8, 0, [bytes(r) for r in g], png_chunk(b"tRNS", struct.pack(">H", int(g[0, 0])))),
        "gray PNG with tRNS (mode stays L)")
    rgb = smooth(26, 30, 3, 26)
    add("png_rgb8_trns.png", raw_png(26, 30, 8, 2, [r.tobytes() for r in rgb], png_chunk(b"tRNS", b"\x00\x10\x00\x20\x00\x30")),
        "RGB PNG with tRNS (mode stays RGB)")
    rgb = smooth(45, 34, 3, 27)
    add("png_rgb8_interlaced.png", pil_bytes(Image.fromarray(rgb, "RGB"), "PNG", optimize=False) if False else
        raw_png_interlaced(rgb), "interlaced (Adam7) RGB PNG")
    idx = np.array([[0, 1, 2, 200, 255, 7, 1, 0]] * 6, dtype=np.uint8)
    add("png_p_short_palette.png",
        raw_png(8, 6, 8, 3, [bytes(r) for r in idx], png_chunk(b"PLTE", bytes([10, 20, 30, 40, 50, 60, 70, 80, 90]))),
        "palette PNG with indices beyond the 3-entry palette (Pillow: gray ramp)")
    big = smooth(257, 181, 3, 28) // 8 * 8
    add("png_rgb_257x181.png", pil_bytes(Image.fromarray(big, "RGB"), "PNG"), "RGB PNG 257x181 (strong downscale)")
    add("png_rgb_1x9.png", pil_bytes(Image.fromarray(smooth(1, 9, 3, 29), "RGB"), "PNG"), "1x9 RGB PNG")
    add("png_rgba_1x1.png", pil_bytes(Image.fromarray(np.array([[[200, 100, 50, 128]]], np.uint8), "RGBA"), "PNG"),
        "1x1 RGBA PNG")
    add("png_la_2x3.png", pil_bytes(Image.fromarray(la[:3, :2].copy(), "LA"), "PNG"), "2x3 LA PNG")

    # --- JPEG ---
    photo = smooth(96, 72, 3, 30)
    for sub, tag in ((2, "420"), (1, "422"), (0, "444")):
        add(f"jpeg_{tag}.jpg", pil_bytes(Image.fromarray(photo, "RGB"), "JPEG", quality=85, subsampling=sub),
            f"baseline JPEG 4:{tag[1]}:{tag[2]} 96x72")
    add("jpeg_progressive.jpg", pil_bytes(Image.fromarray(smooth(83, 61, 3, 31), "RGB"), "JPEG", quality=90,
                                          progressive=True), "progressive JPEG 83x61")
    add("jpeg_gray.jpg", pil_bytes(Image.fromarray(smooth(50, 70, 1, 32)[..., 0], "L"), "JPEG", quality=80),
        "grayscale JPEG (mode L)")
    cmyk = smooth(44, 36, 4, 33)
    add("jpeg_cmyk.jpg", pil_bytes(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=90), "CMYK JPEG (Adobe)")
    odd = smooth(101, 67, 3, 34)
    add("jpeg_odd_101x67.jpg", pil_bytes(Image.fromarray(odd, "RGB"), "JPEG", quality=70), "JPEG with odd size")
    ex = Image.Exif()
    ex[0x0112] = 6
    add("jpeg_exif_orient6.jpg", pil_bytes(Image.fromarray(smooth(40, 24, 3, 35), "RGB"), "JPEG", quality=90,
                                           exif=ex.tobytes()), "JPEG with EXIF orientation 6")

    # --- WebP ---
    add("webp_lossy.webp", pil_bytes(Image.fromarray(smooth(61, 43, 3, 40), "RGB"), "WEBP", quality=80),
        "lossy WebP (RGB)")
    wa = np.concatenate([smooth(37, 29, 3, 41), smooth(37, 29, 1, 42)], axis=-1)
    add("webp_lossless_rgba.webp", pil_bytes(Image.fromarray(wa, "RGBA"), "WEBP", lossless=True),
        "lossless WebP with alpha (RGBA)")
    add("webp_lossy_rgba.webp", pil_bytes(Image.fromarray(wa, "RGBA"), "WEBP", quality=70), "lossy WebP with alpha")
    fr = [Image.fromarray(smooth(30, 22, 3, 43 + i), "RGB") for i in range(2)]
    b = io.BytesIO()
    fr[0].save(b, "WEBP", save_all=True, append_images=fr[1:], duration=100, lossless=True)
    add("webp_animated.webp", b.getvalue(), "animated WebP (first frame)")

    # --- BMP ---
    rgb = smooth(35, 27, 3, 50)
    add("bmp_24.bmp", pil_bytes(Image.fromarray(rgb, "RGB"), "BMP"), "24-bit BMP (Pillow writer)")
    p_im = Image.fromarray(rgb, "RGB").quantize(colors=50)
    add("bmp_p8.bmp", pil_bytes(p_im, "BMP"), "8-bit palette BMP")
    add("bmp_l8.bmp", pil_bytes(Image.fromarray(smooth(31, 25, 1, 51)[..., 0], "L"), "BMP"),
        "8-bit gray-ramp BMP (mode L)")
    add("bmp_1.bmp", pil_bytes(Image.fromarray(smooth(37, 21, 1, 52)[..., 0] > 127).convert("1"), "BMP"),
        "1-bit black/white BMP (mode 1)")
    arr = smooth(35, 27, 3, 53)
    add("bmp_32.bmp", bmp_file(35, 27, 32, bmp_rows(arr, lambda r: b"".join(bytes([p[2], p[1], p[0], 77]) for p in r))),
        "32-bit BMP, BGRX")
    idx4 = (smooth(33, 23, 1, 54)[..., 0] // 16).astype(np.uint8)
    pal16 = [tuple(int(v) for v in RNG.integers(0, 256, 3)) for _ in range(16)]
    add("bmp_p4.bmp", bmp_file(33, 23, 4, bmp_rows(idx4, lambda r: pack_bits(r, 4)), palette=pal16),
        "4-bit palette BMP")
    idx1 = (smooth(29, 17, 1, 55)[..., 0] > 120).astype(np.uint8)
    add("bmp_p1_color.bmp", bmp_file(29, 17, 1, bmp_rows(idx1, lambda r: pack_bits(r, 1)),
                                     palette=[(200, 30, 40), (10, 220, 90)]), "1-bit BMP with coloured palette (P)")
    a16 = smooth(27, 19, 3, 56).astype(np.int64)
    add("bmp_16_555.bmp", bmp_file(27, 19, 16, bmp_rows(a16, lambda r: b"".join(
        struct.pack("<H", ((p[0] >> 3) << 10) | ((p[1] >> 3) << 5) | (p[2] >> 3)) for p in r))),
        "16-bit BMP 5-5-5")
    add("bmp_16_565.bmp", bmp_file(27, 19, 16, bmp_rows(a16, lambda r: b"".join(
        struct.pack("<H", ((p[0] >> 3) << 11) | ((p[1] >> 2) << 5) | (p[2] >> 3)) for p in r)),
        compression=3, masks=(0xF800, 0x7E0, 0x1F)), "16-bit BMP 5-6-5 bitfields")
    a32 = np.concatenate([smooth(25, 21, 3, 57), smooth(25, 21, 1, 58)], axis=-1)
    add("bmp_32_alpha_v5.bmp", bmp_file(25, 21, 32, bmp_rows(a32, lambda r: b"".join(
        bytes([p[2], p[1], p[0], p[3]]) for p in r)), compression=3, masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000),
        header=124), "32-bit BMP v5 with alpha bitfields (RGBA)")
    add("bmp_24_topdown.bmp", bmp_file(23, 17, 24, bmp_rows(arr[:17, :23][::-1], lambda r: b"".join(
        bytes([p[2], p[1], p[0]]) for p in r)), top_down=True), "top-down 24-bit BMP")
    idx8 = (smooth(41, 26, 1, 59)[..., 0] // 8).astype(np.uint8)
    idx8[:, 10:20] = 5
    pal32 = [tuple(int(v) for v in RNG.integers(0, 256, 3)) for _ in range(32)]
    add("bmp_rle8.bmp", bmp_file(41, 26, 8, None, palette=pal32, compression=1, raw_data=rle8_encode(idx8)),
        "RLE8 BMP")
    add("bmp_rle4.bmp", bmp_file(38, 22, 4, None, palette=pal16, compression=2,
                                 raw_data=rle4_encode((smooth(38, 22, 1, 60)[..., 0] // 16).astype(np.uint8))),
        "RLE4 BMP")
    add("bmp_os2.bmp", bmp_file(19, 13, 24, bmp_rows(arr[:13, :19], lambda r: b"".join(
        bytes([p[2], p[1], p[0]]) for p in r)), header=12), "OS/2 (12-byte header) 24-bit BMP")

    # --- GIF ---
    gp = Image.fromarray(smooth(45, 33, 3, 70), "RGB").quantize(colors=64)
    add("gif_global.gif", pil_bytes(gp, "GIF"), "GIF, global palette")
    gt = Image.fromarray(smooth(39, 28, 3, 71), "RGB").quantize(colors=32)
    add("gif_transparent.gif", pil_bytes(gt, "GIF", transparency=3), "GIF with a transparent index")
    add("gif_interlaced.gif", pil_bytes(gp, "GIF", interlace=True), "interlaced GIF")
    gl = Image.fromarray(smooth(36, 24, 1, 72)[..., 0], "L")
    add("gif_gray.gif", pil_bytes(gl, "GIF"), "GIF with the identity gray palette (mode L)")
    frames = [Image.fromarray(smooth(33, 25, 3, 73 + i), "RGB").quantize(colors=16) for i in range(2)]
    b = io.BytesIO()
    frames[0].save(b, "GIF", save_all=True, append_images=frames[1:], duration=50)
    add("gif_animated.gif", b.getvalue(), "animated GIF (first frame)")
    add("gif_offset_frame.gif", gif_offset_frame(), "GIF whose first frame covers part of the screen")
    ident = Image.fromarray(smooth(26, 18, 1, 81)[..., 0], "P")
    ident.putpalette(bytes(np.repeat(np.arange(256, dtype=np.uint8), 3)))
    add("gif_identity_palette.gif", pil_bytes(ident, "GIF", optimize=False),
        "GIF whose palette is the identity gray ramp (Pillow: mode L)")
    for o in range(2, 9):
        ex = Image.Exif()
        ex[0x0112] = o
        add(f"jpeg_exif_orient{o}_small.jpg", pil_bytes(Image.fromarray(smooth(12, 7, 3, 90 + o), "RGB"), "JPEG",
                                                       quality=95, exif=ex.tobytes()),
            f"small JPEG with EXIF orientation {o}")


def raw_png_interlaced(rgb):
    """Adam7-interlaced 8-bit RGB PNG written by hand."""
    h, w, _ = rgb.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    data = b""
    for x0, y0, dx, dy in passes:
        sub = rgb[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        for r in sub:
            data += b"\x00" + r.tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(data, 9))
            + png_chunk(b"IEND", b""))


def gif_offset_frame():
    """GIF89a with a 40x30 screen and a 20x12 first frame at (7, 5), local palette, written by hand."""
    fr = Image.fromarray(smooth(20, 12, 3, 80), "RGB").quantize(colors=8)
    raw = pil_bytes(fr, "GIF")
    # Pillow's writer emits: header(6) LSD(7) [GCT] ... image descriptor ','. Rebuild around its LZW data.
    pos = raw.index(b",")
    desc = raw[pos:pos + 10]
    flags = raw[10]
    gct_size = 3 << ((flags & 7) + 1) if flags & 0x80 else 0
    gct = raw[13:13 + gct_size]
    rest = raw[pos + 10:]
    lzw_and_rest = rest
    head = b"GIF89a" + struct.pack("<HH", 40, 30) + bytes([0, 0, 0])  # no global table
    dflags = 0x80 | (flags & 7)  # local table of the same size
    desc = b"," + struct.pack("<HHHH", 7, 5, 20, 12) + bytes([dflags])
    return head + desc + gct + lzw_and_rest


def pil_resize_crop(im, n):
    """torchvision 0.14 Resize(n) + CenterCrop(n) on a PIL image, then convert('RGB')."""
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = n, int(n * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.BICUBIC)
    iw, ih = im.size
    assert iw >= n and ih >= n
    top = int(round((ih - n) / 2.0))
    left = int(round((iw - n) / 2.0))
    im = im.crop((left, top, left + n, top + n))
    return im.convert("RGB"), [new_w, new_h], [left, top, left + n, top + n]


def save(fn, arr):
    """np.save into a gzip stream with a zero timestamp (reproducible bytes)."""
    b = io.BytesIO()
    np.save(b, np.ascontiguousarray(arr))
    with open(os.path.join(EXP, fn), "wb") as f:
        f.write(gzip.compress(b.getvalue(), compresslevel=9, mtime=0))


def mode_array(im):
    a = np.array(im)
    if im.mode == "1":
        a = a.astype(np.uint8) * 255
    if im.mode == "I":
        a = a.astype(np.int32)
    return a


RESOLUTIONS = [16, 33, 61]
BIG = {"png_gray16_small.png", "png_la_2x3.png", "gif_global.gif"}
RESIZES = [(50, 11), (7, 90), (120, 3), (1, 1), (64, 64)]


def main():
    assert PIL.__version__ == "9.4.0", PIL.__version__
    os.makedirs(SRC, exist_ok=True)
    os.makedirs(EXP, exist_ok=True)
    for f in os.listdir(SRC):
        os.remove(os.path.join(SRC, f))
    for f in os.listdir(EXP):
        os.remove(os.path.join(EXP, f))
    build_sources()
    manifest = {"pillow": PIL.__version__, "numpy": np.__version__, "cases": []}
    for case in CASES:
        name = case["name"]
        stem = os.path.splitext(name)[0]
        im = Image.open(os.path.join(SRC, name))
        im.load()
        entry = dict(case)
        entry["format"] = im.format
        entry["mode"] = im.mode
        entry["size"] = list(im.size)
        if im.size[0] * im.size[1] <= 10000:
            save(f"{stem}.decoded.npy.gz", mode_array(im))
            entry["decoded"] = f"{stem}.decoded.npy.gz"
            if im.mode != "RGB":
                save(f"{stem}.rgb.npy.gz", np.array(im.convert("RGB")))
                entry["rgb"] = f"{stem}.rgb.npy.gz"
        entry["preprocess"] = []
        res = RESOLUTIONS + ([224] if name in BIG else [])
        for n in res:
            out, resized, box = pil_resize_crop(im, n)
            fn = f"{stem}.pre{n}.npy.gz"
            save(fn, np.array(out))
            entry["preprocess"].append({"resolution": n, "file": fn, "resized_size": resized, "crop_box": box})
        entry["resize"] = []
        for (w, h) in RESIZES:
            r = im.resize((w, h), Image.BICUBIC)
            fn = f"{stem}.resize{w}x{h}.npy.gz"
            save(fn, mode_array(r))
            entry["resize"].append({"size": [w, h], "file": fn})
        # Which prefixes of the file Pillow still opens and loads (the rest raise).
        data = open(os.path.join(SRC, name), "rb").read()
        entry["truncations"] = []
        for cut in sorted({9, 20, len(data) // 2, len(data) - 16, len(data) - 12, len(data) - 5, len(data) - 2,
                           len(data) - 1}):
            if not 0 < cut < len(data):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = Image.open(io.BytesIO(data[:cut]))
                    t.load()
                ok = True
            except Exception:
                ok = False
            entry["truncations"].append({"bytes": cut, "pillow_loads": ok})
        if "exif_orient" in name:
            from PIL import ImageOps
            t = ImageOps.exif_transpose(im)
            save(f"{stem}.transposed.npy.gz", mode_array(t))
            entry["transposed"] = f"{stem}.transposed.npy.gz"
        manifest["cases"].append(entry)
    # The benchmark input (bench/preprocess.cpp, bench/pillow_preprocess.py): a 1024x768 JPEG.
    photo = smooth(1024, 768, 3, 99)
    from PIL import ImageFilter
    Image.fromarray(photo, "RGB").filter(ImageFilter.GaussianBlur(2)).save(
        os.path.join(HERE, "bench_1024x768.jpg"), "JPEG", quality=85)
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(d, f)) for d in (SRC, EXP) for f in os.listdir(d))
    print(f"{len(CASES)} cases, {total} bytes")


if __name__ == "__main__":
    main()
