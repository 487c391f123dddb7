#!/usr/bin/env python3
"""XLM-RoBERTa text towers at real size: load time, peak memory at load and texts/s, one command.

    /usr/bin/python3 bench/mclip_speed.py --clipkit build/clipkit --arch mclip-xlmr-large \\
        --threads 4 --workdir mclip-work [--tokenizer sentencepiece.bpe.model]

It
  1. writes random weights of the architecture with `clipkit create-random` twice, stored f32 and
     stored f16 (M-CLIP folders `ARCH-f32/` and `ARCH-f16/` in the work folder, kept between runs),
  2. puts a tokenizer in both: the --tokenizer given (XLM-RoBERTa's own sentencepiece.bpe.model,
     250,000 pieces, e.g. from a `clipkit models download M-CLIP/...` folder), or else a stand-in
     of the same size: tests/data/multilingual/sentencepiece.bpe.model (a Unigram model of 8,000
     pieces) with filler pieces of private-use characters appended, which never match a prompt.
     The stand-in segments the prompts as that 8,000-piece model does, so its texts/s are
     indicative only (a real vocabulary cuts the prompts into somewhat fewer tokens); load time
     and memory do not depend on it,
  3. unless --no-packed, converts the f32 folder with `clipkit convert --dtype D` (packed layout,
     the default) for D = f32, int8 and f16 (`ARCH-packed-D/`, kept between runs; each conversion
     of the large model takes a few minutes and about 5.6 GB of memory),
  4. loads each (f32 storage as f32 and int8, f16 storage as f16 and f32, each packed file as its
     dtype) --runs times with
     `clipkit bench --images 0 --texts 0` (one process per load; the file stays in the page cache
     as between a user's commands): minimum and median load_s, load_peak_rss_mb, weights_mb, and
     the ratio of the peak to the weights in the file and to weights_mb,
  5. runs `clipkit bench --texts N` (ImageNet prompts in batches of 64, each batch cut to its
     longest text) for f32 and int8: texts/s.
Prints Markdown tables with the machine's load average. Standard library only.
"""
import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_TOKENIZER = os.path.join(ROOT, "tests", "data", "multilingual", "sentencepiece.bpe.model")
VOCAB = 250002  # rows of XLM-RoBERTa's word embedding table: 250,000 pieces + <pad> + <mask>


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return n, i


def piece_scores(model):
    """(count, lowest score) of the pieces (ModelProto field 1) of a serialized SentencePiece model."""
    i, count, low = 0, 0, 0.0
    while i < len(model):
        key, i = read_varint(model, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = read_varint(model, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = read_varint(model, i)
            if field == 1:
                count += 1
                j, end = i, i + n
                while j < end:  # SentencePiece: 1 piece, 2 score, 3 type
                    k, j = read_varint(model, j)
                    if k == (2 << 3 | 5):
                        low = min(low, struct.unpack("<f", model[j : j + 4])[0])
                        j += 4
                    elif k & 7 == 0:
                        _, j = read_varint(model, j)
                    else:
                        m, j = read_varint(model, j)
                        j += m
            i += n
        else:
            sys.exit("mclip_speed: %s is not a SentencePiece model" % BASE_TOKENIZER)
    return count, low


def stand_in_tokenizer(path):
    """The 8,000-piece test model padded with filler pieces to XLM-RoBERTa's 250,000."""
    model = open(BASE_TOKENIZER, "rb").read()
    count, low = piece_scores(model)
    extra = bytearray()
    for i in range(VOCAB - 2 - count):
        text = (chr(0xE000 + i // 6000) + chr(0xE000 + i % 6000)).encode()
        piece = b"\x0a" + varint(len(text)) + text + b"\x15" + struct.pack("<f", low)
        extra += b"\x0a" + varint(len(piece)) + piece
    with open(path, "wb") as f:
        f.write(model + bytes(extra))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("mclip_speed: %s failed: %s" % (" ".join(cmd), r.stderr.strip()))
    return r.stdout


def bench(a, folder, dtype, texts):
    out = run([a.clipkit, "bench", "--model", folder, "--dtype", dtype, "--threads", str(a.threads), "--images", "0",
               "--texts", str(texts)])
    return json.loads(out.strip().splitlines()[-1])


def file_weights_mb(folder):
    return os.path.getsize(os.path.join(folder, "model.safetensors")) / (1024.0 * 1024.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clipkit", required=True, help="the clipkit program")
    ap.add_argument("--arch", default="mclip-xlmr-large", help="mclip-xlmr-large (default) or mclip-xlmr-base")
    ap.add_argument("--tokenizer", help="XLM-RoBERTa's sentencepiece.bpe.model (default: a stand-in, see above)")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5, help="loads per row")
    ap.add_argument("--texts", type=int, default=640, help="prompts timed per dtype (0: load only)")
    ap.add_argument("--workdir", default="mclip-work")
    ap.add_argument("--no-packed", action="store_true", help="skip the files converted to the packed layout")
    a = ap.parse_args()
    if a.runs < 1:
        sys.exit("mclip_speed: --runs must be at least 1")
    os.makedirs(a.workdir, exist_ok=True)
    folders = {}
    for stored in ("f32", "f16"):
        folder = os.path.join(a.workdir, "%s-%s" % (a.arch, stored))
        if not os.path.exists(os.path.join(folder, "model.safetensors")):
            run([a.clipkit, "create-random", "--arch", a.arch, "--dtype", stored, "--out", folder])
        folders[stored] = folder
    tok = os.path.join(a.workdir, "sentencepiece.bpe.model")
    if a.tokenizer:
        shutil.copyfile(a.tokenizer, tok)
    elif not os.path.exists(tok + ".stand-in"):
        stand_in_tokenizer(tok)
        open(tok + ".stand-in", "w").close()
    for folder in folders.values():
        shutil.copyfile(tok, os.path.join(folder, "sentencepiece.bpe.model"))
    rows = [("f32", "f32"), ("f32", "int8"), ("f16", "f16"), ("f16", "f32")]
    if not a.no_packed:
        for dtype in ("f32", "int8", "f16"):
            folder = os.path.join(a.workdir, "%s-packed-%s" % (a.arch, dtype))
            if not os.path.exists(os.path.join(folder, "model.safetensors")):
                os.makedirs(folder, exist_ok=True)
                shutil.copyfile(os.path.join(folders["f32"], "config.json"), os.path.join(folder, "config.json"))
                run([a.clipkit, "convert", "--dtype", dtype, folders["f32"], os.path.join(folder, "model.safetensors")])
            shutil.copyfile(tok, os.path.join(folder, "sentencepiece.bpe.model"))
            folders["packed " + dtype] = folder
            rows.append(("packed " + dtype, dtype))
    kind = "XLM-RoBERTa's" if a.tokenizer else "stand-in (see --help)"
    print("%s, %d threads, %s tokenizer, load average %.1f at start" % (a.arch, a.threads, kind, os.getloadavg()[0]))
    print()
    print("| stored | dtype | load s (min / median) | load peak RSS MB | weights in file MB | weights_mb | "
          "peak / file | peak / weights_mb |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for stored, dtype in rows:
        bench(a, folders[stored], dtype, 0)  # page cache warm for this row
        runs = [bench(a, folders[stored], dtype, 0) for _ in range(a.runs)]
        times = [r["load_s"] for r in runs]
        peak = statistics.median(r["load_peak_rss_mb"] for r in runs)
        fmb, wmb = file_weights_mb(folders[stored]), runs[0]["weights_mb"]
        print("| %s | %s | %.2f / %.2f | %.0f | %.0f | %.0f | %.2f× | %.2f× |" % (
            stored, dtype, min(times), statistics.median(times), peak, fmb, wmb, peak / fmb, peak / wmb), flush=True)
    if a.texts > 0:
        print()
        print("| dtype | texts/s (batch %d) |" % 64)
        print("|---|---:|")
        for dtype in ("f32", "int8"):
            j = bench(a, folders["f32"], dtype, a.texts)
            print("| %s | %.1f |" % (dtype, j["text_per_s"]), flush=True)
    print()
    print("load average %.1f at end" % os.getloadavg()[0])


if __name__ == "__main__":
    main()
