#!/usr/bin/env python3
"""Side-by-side throughput: clipkit vs ONNX Runtime (fp32, int8) vs PyTorch, same random weights.

Development tool only; the engine never runs Python. Setup (Debian packages + npm):

    scripts/install-deps.sh --dev                        # python3-torch, python3-onnx
    (cd bench/compare && npm install --ignore-scripts)   # onnxruntime-node, pinned in package.json

`--ignore-scripts` skips onnxruntime-node's install script, which only downloads optional GPU
libraries; the CPU library ships inside the npm package. Then, from the repository root:

    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 bench/compare/compare.py --clipkit build/clipkit \
        --models ViT-B/32,ViT-B/16,RN50 --threads 2 --repeats 5 --workdir compare-work

(`OPENBLAS_CORETYPE` only matters to PyTorch, whose Debian build uses the system OpenBLAS; set it
to a core type your CPU has, or leave it out, or pass --skip-torch.)

For every model it
  1. writes random weights with `clipkit create-random --arch NAME` (OpenAI state_dict layout),
  2. loads them into the PyTorch modules of clip_torch.py (strict name/shape check),
  3. exports the image and text encoders to ONNX (onnx_export.py) and quantises both to int8
     (quantize_int8.py: ONNX Runtime's dynamic-quantisation graph, fused by ORT at load),
  4. checks the outputs: ORT fp32 vs PyTorch (cosine >= 0.99999 expected), ORT int8 vs PyTorch,
     clipkit f32 (`clipkit embed`) vs PyTorch, on one real image and four ImageNet prompts,
  5. times every engine with the same thread count: `clipkit bench` (f32, int8), ort_bench.js
     (fp32, int8) and PyTorch. Images are random pixels at batch 1 and --batch; texts are the
     first 64 x --repeats ImageNet prompts (1000 classes x 80 templates, class by class, as
     `clipkit bench` takes them), tokenised by `clipkit tokenize`, in batches of 64,
  6. prints one Markdown table per model and the ratios the performance targets use, with clipkit's
     peak resident memory at load next to the weights it holds.
open_clip names (`--models ViT-H-14,ViT-bigG-14`) run the same way: `create-random` writes open_clip's
sizes and states the name in the file, and clip_torch.py follows the head widths, MLP ratio and
exact GELU the file carries. Their int8 target is 1.4x ORT int8 instead of 1.5x. --image-only
leaves the text towers out (no text export, check or timing, and image cycles only with --pairs):
a reduced run of a large model.
--sequential is for models too large to hold twice on the machine (ViT-bigG-14 has 10.2 GB of f32
weights): one engine process at a time, never two models in memory, image towers only. PyTorch
takes ONNX Runtime's place (the ONNX export and quantiser hold several copies of the weights):
torch_worker.py builds the image tower alone, holding its weights once, in fp32 and in PyTorch's
dynamic int8 (every Linear, the attention projections included). The check compares clipkit f32 and
int8 and PyTorch int8 with PyTorch fp32 on two real images; every --pairs cycle starts each engine
in turn (load, one warm-up batch, one timed batch, exit), waiting whenever the machine has less
memory available than the engine needs plus 2 GiB.
Every part runs one warm-up call then --repeats timed calls and reports the median. The ImageNet
classifier build time (1000 x 80 = 80,000 prompts) is extrapolated from prompts/s, not measured.
clipkit's text tower stops at the longest EOT of the batch; ONNX Runtime and PyTorch run the full
77-token context, as the reference graph does.

On a shared machine whose speed drifts by tens of percent over minutes, --rounds N measures
clipkit and ONNX Runtime N times, interleaved; the table shows each engine's median over the
rounds, and every ratio both from those medians and per round (a round's engines ran back to
back, so its ratio is a paired comparison).

--pairs N pairs far more tightly: after the rounds, it starts one long-lived process per engine
(build/bench/clipkit_compare_worker for clipkit f32 and int8, `ort_bench.js serve` for ORT fp32
and int8), each holding its model loaded, and cycles through them N times, one batch per engine
per cycle (the order rotates from cycle to cycle, with a short pause before every call so that no
engine's idle threads still spin). Every cycle gives each ratio from calls made within about a
second of each other; the paired table shows each engine's median and every ratio's median and
quartiles over the cycles.
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time

import numpy as np
import torch

from clip_torch import load_clip
from onnx_export import export
from quantize_int8 import quantize

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
IMAGENET_PROMPTS = 1000 * 80
CONTEXT = 77
CHECK_IMAGE = os.path.join(ROOT, "tests", "data", "images", "02_coffee.png")
ENGINES = [("clipkit_f32", "clipkit f32"), ("clipkit_int8", "clipkit int8"), ("ort_f32", "ORT fp32"),
           ("ort_int8", "ORT int8"), ("torch", "PyTorch fp32")]
# --sequential pairs clipkit with PyTorch's image tower in fp32 and dynamic int8 (torch_worker.py).
PAIRED_ENGINES = ENGINES[:4] + [("torch_f32", "PyTorch fp32"), ("torch_int8", "PyTorch int8 (dynamic)")]
CHECK_IMAGES = [CHECK_IMAGE, os.path.join(ROOT, "tests", "data", "images", "00_astronaut.png")]


def log(msg):
    print(f"[compare {time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def imagenet_prompts(n):
    """The first n prompts in `clipkit bench` order: class by class, the 80 templates each."""
    with open(os.path.join(ROOT, "data", "zeroshot", "imagenet_classes.json")) as f:
        classes = json.load(f)
    with open(os.path.join(ROOT, "data", "zeroshot", "imagenet_templates.json")) as f:
        templates = json.load(f)
    out = []
    c = 0
    while len(out) < n:
        out += [t.replace("{}", classes[c % len(classes)], 1) for t in templates]
        c += 1
    return out[:n]


def tokenize(clipkit, texts):
    rows = []
    for i in range(0, len(texts), 200):
        out = subprocess.run([clipkit, "tokenize", "--", *texts[i:i + 200]], check=True, capture_output=True,
                             text=True).stdout
        rows += [json.loads(line) for line in out.splitlines() if line.strip()]
    ids = np.array(rows, dtype=np.int64)
    assert ids.shape == (len(texts), CONTEXT), ids.shape
    return ids


def image_resolution(path):
    """The image tower's input size, from the safetensors header alone (no weights read)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    if "visual.proj" in header:
        grid = round((header["visual.positional_embedding"]["shape"][0] - 1) ** 0.5)
        return grid * header["visual.conv1.weight"]["shape"][-1]
    return 32 * round((header["visual.attnpool.positional_embedding"]["shape"][0] - 1) ** 0.5)


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ---------------------------------------------------------------------------------------------
# engines

def node_cmd(args, *rest):
    return [args.node, os.path.join(HERE, "ort_bench.js"), *rest]


def ort_run(args, model, x, out_dir):
    """Runs one batch through an ONNX model with ONNX Runtime; returns the float32 output."""
    inp, out = os.path.join(out_dir, "check_in.bin"), os.path.join(out_dir, "check_out.bin")
    x = np.ascontiguousarray(x)
    x.tofile(inp)
    kind = "int64" if x.dtype == np.int64 else "float32"
    r = subprocess.run(node_cmd(args, "run", "--model", model, "--input", inp, "--type", kind, "--shape",
                                ",".join(map(str, x.shape)), "--out", out, "--threads", str(args.threads)),
                       check=True, capture_output=True, text=True)
    dims = json.loads(r.stdout.strip().splitlines()[-1])["dims"]
    return np.fromfile(out, dtype=np.float32).reshape(dims)


def clipkit_embed(args, model, image, texts):
    r = subprocess.run([args.clipkit, "embed", "--model", model, "--threads", str(args.threads), "--image", image,
                        *(["--text", *texts] if texts else [])], check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    return (np.array([r["embedding"] for r in rows if r["kind"] == "image"]),
            np.array([r["embedding"] for r in rows if r["kind"] == "text"]))


def check(args, clip, model_path, onnx_paths, model_dir):
    """Cosine similarity of every engine's embeddings with PyTorch's: {name: min cosine}."""
    res = clip.image_resolution
    pixels = os.path.join(model_dir, "check_image.npy")
    subprocess.run([args.clipkit, "preprocess", CHECK_IMAGE, "--resolution", str(res), "-o", pixels], check=True,
                   capture_output=True)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.from_numpy(np.load(pixels))[None], torch.randn(1, 3, res, res, generator=g)])
    texts = [] if args.image_only else imagenet_prompts(4)
    with torch.inference_mode():
        ref_img = clip.encode_image(x).numpy()
        if texts:
            ids = tokenize(args.clipkit, texts)
            ref_txt = clip.encode_text(torch.from_numpy(ids)).numpy()
    out = {}
    for tag in ("f32", "int8"):
        out[f"ort_{tag}_image"] = cosines(ort_run(args, onnx_paths[tag][0], x.numpy(), model_dir), ref_img).min()
        if texts:
            out[f"ort_{tag}_text"] = cosines(ort_run(args, onnx_paths[tag][1], ids, model_dir), ref_txt).min()
    ck_img, ck_txt = clipkit_embed(args, model_path, CHECK_IMAGE, texts)
    out["clipkit_f32_image"] = cosines(ck_img, ref_img[:1]).min()
    if texts:
        out["clipkit_f32_text"] = cosines(ck_txt, ref_txt).min()
    return {k: float(v) for k, v in out.items()}


def sequential_check(args, model_path, model_dir):
    """--sequential's output check, one process at a time: PyTorch's fp32 and dynamic int8 image
    towers (torch_worker.py check), then clipkit f32 and int8 (`clipkit embed`), on two real images."""
    res = image_resolution(model_path)
    rows = []
    for i, image in enumerate(CHECK_IMAGES):
        npy = os.path.join(model_dir, f"check_image_{i}.npy")
        subprocess.run([args.clipkit, "preprocess", image, "--resolution", str(res), "-o", npy], check=True,
                       capture_output=True)
        rows.append(np.load(npy))
    pixels = os.path.join(model_dir, "check_pixels.npy")
    np.save(pixels, np.stack(rows).astype(np.float32))
    ref_path = os.path.join(model_dir, "check_torch.npz")
    need = engine_memory(model_path)
    wait_for_memory(need["torch_f32"], "PyTorch reference")
    log("PyTorch reference (fp32, fp32 with Linear attention, dynamic int8)")
    subprocess.run([sys.executable, os.path.join(HERE, "torch_worker.py"), "check", "--model", model_path,
                    "--pixels", pixels, "--threads", str(args.threads), "--out", ref_path], check=True)
    ref = np.load(ref_path)
    out = {"torch_f32_linear_image": cosines(ref["f32_linear"], ref["f32"]).min(),
           "torch_int8_image": cosines(ref["int8"], ref["f32"]).min()}
    for dtype in ("f32", "int8"):
        wait_for_memory(need[f"clipkit_{dtype}"], f"clipkit {dtype}")
        log(f"clipkit {dtype} embeddings")
        r = subprocess.run([args.clipkit, "embed", "--model", model_path, "--threads", str(args.threads), "--dtype",
                            dtype, "--image", *CHECK_IMAGES], check=True, capture_output=True, text=True)
        emb = np.array([json.loads(line)["embedding"] for line in r.stdout.splitlines() if line.strip()])
        out[f"clipkit_{dtype}_image"] = cosines(emb, ref["f32"]).min()
    return {k: float(v) for k, v in out.items()}


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def torch_numbers(clip, ids, threads, repeats, batch, text_batch):
    torch.set_num_threads(threads)
    res = clip.image_resolution
    g = torch.Generator().manual_seed(0)
    out = {}
    with torch.inference_mode():
        x = torch.randn(batch, 3, res, res, generator=g)
        t1 = timed(lambda: clip.encode_image(x[:1]), repeats)
        out["image_ms_b1"], out["image_per_s_b1"] = 1000 * t1, 1 / t1
        out["image_per_s_bN"] = batch / timed(lambda: clip.encode_image(x), repeats)
        if ids is None:
            return out
        chunks = [torch.from_numpy(ids[i:i + text_batch]) for i in range(0, len(ids) - text_batch + 1, text_batch)]
        k = iter(range(10 ** 9))
        out["text_per_s"] = text_batch / timed(lambda: clip.encode_text(chunks[next(k) % len(chunks)]), repeats)
    return out


def clipkit_numbers(args, path, dtype):
    cmd = [args.clipkit, "bench", "--model", path, "--dtype", dtype, "--threads", str(args.threads),
           "--batch", str(args.batch), "--images", str(args.batch * args.repeats),
           "--texts", str(0 if args.image_only else args.text_batch * args.repeats)]
    j = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {"image_ms_b1": j["image_ms_batch1"], "image_per_s_b1": 1000.0 / j["image_ms_batch1"],
            "image_per_s_bN": j["image_per_s"], "text_per_s": j["text_per_s"], "load_s": j["load_s"],
            "load_peak_rss_mb": j.get("load_peak_rss_mb"), "peak_rss_mb": j.get("peak_rss_mb"),
            "weights_mb": j.get("weights_mb"), "kernels": j.get("kernels")}


class Worker:
    """A long-lived engine process answering `image` / `text` requests with one JSON line each."""

    def __init__(self, label, cmd):
        self.label = label
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label}: worker ended (exit status {self.proc.wait()})")
        j = json.loads(line)
        if "error" in j:
            raise RuntimeError(f"{self.label}: {j['error']}")
        return j

    def ready(self):
        return self._read()

    def call(self, kind):
        self.proc.stdin.write(kind + "\n")
        return self._read()["s"]

    def close(self):
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()


def quartiles(v):
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return q[0], statistics.median(v), q[2]


def sequential_commands(args, path):
    """--sequential: the command of every engine's worker, image tower only."""
    cmds = {}
    for dtype in ("f32", "int8"):
        cmds[f"clipkit_{dtype}"] = [args.worker, "--model", path, "--dtype", dtype, "--threads", str(args.threads),
                                    "--batch", str(args.batch)]
    for dtype in ("f32", "int8"):
        cmds[f"torch_{dtype}"] = [sys.executable, os.path.join(HERE, "torch_worker.py"), "serve", "--model", path,
                                  "--dtype", dtype, "--threads", str(args.threads), "--batch", str(args.batch)]
    return cmds


def memory_available():
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def wait_for_memory(need, label):
    """Waits until the machine has `need` bytes and 2 GiB more available (a shared machine)."""
    while (avail := memory_available()) is not None and avail < need + (2 << 30):
        log(f"{label}: waiting for memory ({avail / 2**30:.1f} GiB available, "
            f"{need / 2**30 + 2:.1f} GiB wanted)")
        time.sleep(20)


def engine_memory(path):
    """Bytes each --sequential engine holds, roughly: clipkit f32 both towers, int8 a quarter of them;
    PyTorch the image tower's f32 weights (its int8 model is quantised from them in place)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    size = lambda keep: sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items()
                            if k != "__metadata__" and keep(k))
    total, image = size(lambda k: True), size(lambda k: k.startswith("visual."))
    return {"clipkit_f32": total, "clipkit_int8": total // 4, "torch_f32": image, "torch_int8": image}


def cycle_order(names, c):
    """The engines' order in cycle c: rotated by one each cycle and reversed every other cycle, so
    that no engine always runs first or right after the same one."""
    order = names[c % len(names):] + names[:c % len(names)]
    return order[::-1] if c % 2 else order


def sequential_cycles(args, path):
    """--sequential cycles: every engine in its own process, started for its call and ended after it
    (load, one warm-up batch, one timed batch), one process at a time, so that no two models are in
    memory together. The order rotates from cycle to cycle as in paired_numbers."""
    cmds = sequential_commands(args, path)
    need = engine_memory(path)
    names = list(cmds)
    cycles = []
    for c in range(args.pairs):
        rates = {}
        for n in cycle_order(names, c):
            time.sleep(args.pair_gap)
            wait_for_memory(need[n], n)
            w = Worker(n, cmds[n])
            try:
                w.ready()
                rates[n] = args.batch / w.call("image")
            finally:
                w.close()
            log(f"cycle {c + 1}/{args.pairs}: {n} {rates[n]:.3f} images/s")
        cycles.append({"kind": "image", "rates": rates})
    return cycles


def paired_numbers(args, path, onnx_paths, tokens_bin, prompts_file, res):
    """--pairs cycles: per engine the seconds of every call, and the per-cycle rates."""
    if args.sequential:
        return sequential_cycles(args, path)
    workers = {}
    try:
        for dtype in ("f32", "int8"):
            text = [] if args.image_only else ["--prompts", prompts_file, "--text-batch", str(args.text_batch)]
            workers[f"clipkit_{dtype}"] = Worker(f"clipkit {dtype}", [
                args.worker, "--model", path, "--dtype", dtype, "--threads", str(args.threads), "--batch",
                str(args.batch), *text])
            workers[f"clipkit_{dtype}"].ready()  # one at a time: loads and warm-ups are not overlapped
        for tag in ("f32", "int8") if onnx_paths else ():
            image_onnx, text_onnx = onnx_paths[tag]
            text = [] if text_onnx is None else ["--text", text_onnx, "--tokens", tokens_bin]
            workers[f"ort_{tag}"] = Worker(f"ORT {tag}", node_cmd(
                args, "serve", "--image", image_onnx, *text, "--resolution",
                str(res), "--threads", str(args.threads), "--batch", str(args.batch), "--text-batch",
                str(args.text_batch)))
            workers[f"ort_{tag}"].ready()
        names = list(workers)
        cycles = []
        for kind, items in (("image", args.batch), ("text", args.text_batch)):
            if kind not in args.pair_kinds:
                continue
            for c in range(args.pairs):
                rates = {}
                for n in cycle_order(names, c):
                    time.sleep(args.pair_gap)
                    rates[n] = items / workers[n].call(kind)
                cycles.append({"kind": kind, "rates": rates})
    finally:
        for w in workers.values():
            w.close()
    return cycles


def is_openclip(name):
    """An open_clip architecture name (ViT-H-14, ViT-bigG-14, ...) rather than OpenAI's (ViT-B/32, RN50)."""
    return "/" not in name and not name.startswith("RN") and not name.startswith("custom:")


def int8_target(name):
    return "≥ 1.4" if is_openclip(name) else "≥ 1.5"


def image_target(args, target, f32=False):
    """The image targets hold at batch 16; at batch 1 only f32's (latency no worse than ORT's)."""
    if args.batch == 16:
        return target
    return "≥ 1.0 (batch-1 latency)" if f32 and args.batch == 1 else "—"


def paired_table(name, cycles, args):
    def rates(kind, engine):
        return [c["rates"][engine] for c in cycles if c["kind"] == kind and engine in c["rates"]]

    lines = [f"#### {name} — paired: {args.pairs} cycles per kind, one call per engine per cycle",
             "", f"| engine | images/s batch {args.batch}: median (quartiles) | prompts/s: median (quartiles) |",
             "|---|---:|---:|"]
    for key, label in PAIRED_ENGINES:
        cells = []
        for kind in ("image", "text"):
            v = rates(kind, key)
            q1, med, q3 = quartiles(v) if v else (None, None, None)
            d = 1 if not v or min(v) >= 1 else 3  # a large model's fraction of an image per second
            cells.append(f"{med:.{d}f} ({q1:.{d}f}–{q3:.{d}f})" if v else "not run")
        if cells != ["not run", "not run"]:
            lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    specs = [(f"images/s batch {args.batch}: clipkit f32 / ORT fp32", "image", "clipkit_f32", "ort_f32",
              image_target(args, "≥ 1.0", f32=True)),
             (f"images/s batch {args.batch}: clipkit int8 / ORT int8", "image", "clipkit_int8", "ort_int8",
              image_target(args, int8_target(name))),
             (f"images/s batch {args.batch}: clipkit int8 / ORT fp32", "image", "clipkit_int8", "ort_f32",
              image_target(args, "≥ 3")),
             ("prompts/s: clipkit f32 / ORT fp32", "text", "clipkit_f32", "ort_f32", "≥ 5"),
             ("prompts/s: clipkit int8 / ORT fp32", "text", "clipkit_int8", "ort_f32", "≥ 10"),
             (f"images/s batch {args.batch}: clipkit f32 / PyTorch fp32", "image", "clipkit_f32", "torch_f32",
              image_target(args, "≥ 1.0", f32=True)),
             (f"images/s batch {args.batch}: clipkit int8 / PyTorch int8", "image", "clipkit_int8", "torch_int8",
              image_target(args, int8_target(name))),
             (f"images/s batch {args.batch}: clipkit int8 / PyTorch fp32", "image", "clipkit_int8", "torch_f32",
              image_target(args, "≥ 3"))]
    lines += ["", "| ratio, per cycle | median | quartiles | min / max | target |", "|---|---:|---:|---:|---:|"]
    for label, kind, num, den, target in specs:
        per = [c["rates"][num] / c["rates"][den] for c in cycles
               if c["kind"] == kind and num in c["rates"] and den in c["rates"]]
        if not per:
            continue
        q1, med, q3 = quartiles(per)
        lines.append(f"| {label} | {med:.2f}× | {q1:.2f}–{q3:.2f} | {min(per):.2f} / {max(per):.2f} | {target} |")
    return "\n".join(lines)


def ort_numbers(args, image_onnx, text_onnx, tokens_bin, res):
    text = [] if text_onnx is None else ["--text", text_onnx, "--tokens", tokens_bin]
    cmd = node_cmd(args, "bench", "--image", image_onnx, *text,
                   "--resolution", str(res), "--threads", str(args.threads), "--repeats", str(args.repeats),
                   "--batch", str(args.batch), "--text-batch", str(args.text_batch))
    j = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    j["image_per_s_bN"] = j.pop(f"image_per_s_b{args.batch}")
    return j


# ---------------------------------------------------------------------------------------------
# report

def fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def table(name, r, args):
    rounds = r.get("rounds") or []
    title = f"### {name} — {args.threads} threads, median of {args.repeats}"
    if len(rounds) > 1:
        title += f"; clipkit and ORT: median of {len(rounds)} interleaved rounds"
    lines = [title,
             "",
             f"| engine | images/s batch 1 (ms) | images/s batch {args.batch} | prompts/s (batch {args.text_batch}) "
             "| ImageNet classifier build, 80,000 prompts (extrapolated) |",
             "|---|---:|---:|---:|---:|"]
    for key, label in ENGINES:
        e = r.get(key)
        if key == "ort_int8":
            label += " (" + ("per-channel" if args.per_channel else "per-tensor") + \
                (", Conv too" if args.conv_int8 else "") + ")"
        if e is None:
            lines.append(f"| {label} | not run | not run | not run | not run |")
            continue
        tps = e.get("text_per_s")
        build = "n/a" if not tps else (f"{IMAGENET_PROMPTS / tps / 60:.1f} min" if IMAGENET_PROMPTS / tps < 5400
                                       else f"{IMAGENET_PROMPTS / tps / 3600:.1f} h")
        lines.append(f"| {label} | {fmt(e.get('image_per_s_b1'))} ({fmt(e.get('image_ms_b1'), 0)}) "
                     f"| {fmt(e.get('image_per_s_bN'))} | {fmt(tps)} | {build} |")

    def get(engine, field):
        return (r.get(engine) or {}).get(field)

    # (label, numerator engine, field, denominator engine, field, target)
    specs = [
        (f"images/s batch {args.batch}: clipkit f32 / ORT fp32", "clipkit_f32", "image_per_s_bN", "ort_f32",
         "image_per_s_bN", image_target(args, "≥ 1.0", f32=True)),
        (f"images/s batch {args.batch}: clipkit int8 / ORT int8", "clipkit_int8", "image_per_s_bN", "ort_int8",
         "image_per_s_bN", image_target(args, int8_target(name))),
        (f"images/s batch {args.batch}: clipkit int8 / ORT fp32", "clipkit_int8", "image_per_s_bN", "ort_f32",
         "image_per_s_bN", image_target(args, "≥ 3")),
        ("prompts/s: clipkit f32 / ORT fp32", "clipkit_f32", "text_per_s", "ort_f32", "text_per_s", "≥ 5"),
        ("prompts/s: clipkit int8 / ORT fp32", "clipkit_int8", "text_per_s", "ort_f32", "text_per_s", "≥ 10"),
        ("batch-1 latency: ORT fp32 ms / clipkit f32 ms", "ort_f32", "image_ms_b1", "clipkit_f32", "image_ms_b1", "—"),
        ("batch-1 latency: ORT int8 ms / clipkit int8 ms", "ort_int8", "image_ms_b1", "clipkit_int8", "image_ms_b1", "—"),
    ]
    if len(rounds) > 1:
        # Each round measured the engines back to back: its own ratio is a paired comparison,
        # less exposed to the machine's speed drifting between rounds.
        lines += ["", "| ratio | of the medians | per round: min / median / max | target |", "|---|---:|---:|---:|"]
        for label, ne, nf, de, df, target in specs:
            v = ratio(get(ne, nf), get(de, df))
            per = [x for x in (ratio((rd.get(ne) or {}).get(nf), (rd.get(de) or {}).get(df)) for rd in rounds)
                   if x is not None]
            spread = (f"{min(per):.2f} / {statistics.median(per):.2f} / {max(per):.2f}" if per else "n/a")
            lines.append(f"| {label} | {fmt(v, 2)}× | {spread} | {target} |")
    else:
        lines += ["", "| ratio | value | target |", "|---|---:|---:|"]
        for label, ne, nf, de, df, target in specs:
            v = ratio(get(ne, nf), get(de, df))
            lines.append(f"| {label} | {fmt(v, 2)}× | {target} |" if v is not None else f"| {label} | n/a | {target} |")
    mem = []
    for key in ("clipkit_f32", "clipkit_int8"):
        e = r.get(key) or {}
        if e.get("load_peak_rss_mb") and e.get("weights_mb"):
            mem.append(f"| {key.replace('_', ' ')} | {e['weights_mb']:.0f} | {e['load_peak_rss_mb']:.0f} "
                       f"| {e['load_peak_rss_mb'] / e['weights_mb']:.2f}× | {e.get('peak_rss_mb', 0):.0f} | ≤ 1.3× |")
    if mem:
        lines += ["", "| memory | weights held, MiB | peak RSS at load, MiB | load peak / weights | peak RSS of the run, MiB "
                  "| target |", "|---|---:|---:|---:|---:|---:|"] + mem
    if "check" in r:
        c = r["check"]
        lines += ["", "Cosine with PyTorch's embeddings (minimum over 2 images / 4 prompts): "
                  + ", ".join(f"{k} {v:.7f}" for k, v in c.items())]
    lines += ["", f"Machine load (1-minute average) before / after: {r['load'][0]:.1f} / {r['load'][1]:.1f}. "
              "Classifier build = 80,000 / prompts/s, extrapolated, not measured. clipkit's text tower stops "
              "at the batch's longest EOT; ORT and PyTorch run the full 77-token context."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------

def run_model(args, name, ids, tokens_bin, prompts_file):
    stem = name.replace("/", "-").replace("@", "-")
    model_dir = os.path.join(args.workdir, stem)
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(args.workdir, stem + ".safetensors")
    if not os.path.exists(path):
        log(f"{name}: create-random")
        subprocess.run([args.clipkit, "create-random", "--arch", name, "--out", path], check=True, capture_output=True)
    r = {"load": [os.getloadavg()[0], None]}
    res = image_resolution(path)
    if args.sequential:
        if not args.no_check:
            log(f"{name}: output check (sequential)")
            r["check"] = sequential_check(args, path, model_dir)
            log(f"{name}: cosines {r['check']}")
        if args.pairs and not args.check_only:
            log(f"{name}: {args.pairs} sequential cycles")
            t = time.time()
            r["paired"] = paired_numbers(args, path, {}, tokens_bin, prompts_file, res)
            log(f"{name}: sequential cycles done in {time.time() - t:.0f} s")
        r["load"][1] = os.getloadavg()[0]
        return r
    # PyTorch's copy of the weights (minutes and GBs for the largest models) only when something uses it.
    clip = None
    if not (args.skip_torch or args.check_only) or (not args.skip_ort and not args.no_check):
        clip = load_clip(path)
    onnx_paths = {}
    if not args.skip_ort:
        suffix = ".int8" + (".pc" if args.per_channel else "") + (".conv" if args.conv_int8 else "") + ".onnx"
        f32 = (os.path.join(model_dir, "image", "image.onnx"),
               None if args.image_only else os.path.join(model_dir, "text", "text.onnx"))
        if not all(os.path.exists(p) and os.path.getmtime(p) >= os.path.getmtime(path) for p in f32 if p):
            log(f"{name}: ONNX export")
            clip = clip or load_clip(path)
            export(path, model_dir, clip=clip, text=not args.image_only)
        int8 = tuple(p and p[:-len(".onnx")] + suffix for p in f32)
        for src, dst in zip(f32, int8):
            if src is None:
                continue
            if not (os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src)):
                log(f"{name}: int8 quantisation of {os.path.basename(src)}: "
                    f"{quantize(src, dst, args.per_channel, args.conv_int8)}")
        onnx_paths = {"f32": f32, "int8": int8}
        if not args.no_check:
            log(f"{name}: output check")
            r["check"] = check(args, clip, path, onnx_paths, model_dir)
            log(f"{name}: cosines {r['check']}")
            if min(v for k, v in r["check"].items() if k.startswith("ort_f32")) < 0.99999:
                log(f"{name}: WARNING: ORT fp32 differs from PyTorch (cosine < 0.99999)")
    if args.check_only:
        r["load"][1] = os.getloadavg()[0]
        return r

    def measure(key, label, fn, into=None):
        log(f"{name}: {label}")
        t = time.time()
        into = r if into is None else into
        into[key] = fn()
        into[key]["wall_s"] = time.time() - t

    if not args.skip_torch:
        measure("torch", "PyTorch", lambda: torch_numbers(clip, None if args.image_only else ids, args.threads,
                                                          args.torch_repeats or args.repeats,
                                                          args.batch, args.text_batch))
    clip = None  # frees the PyTorch weights before the other engines run
    rounds = []
    for k in range(args.rounds if not args.pairs_only else 0):
        rd = {}
        tag_k = f" (round {k + 1}/{args.rounds})" if args.rounds > 1 else ""
        for dtype in ("f32", "int8"):
            measure(f"clipkit_{dtype}", f"clipkit {dtype}{tag_k}", lambda: clipkit_numbers(args, path, dtype), rd)
        for tag in ("f32", "int8") if onnx_paths else ():
            measure(f"ort_{tag}", f"ONNX Runtime {tag}{tag_k}",
                    lambda: ort_numbers(args, *onnx_paths[tag], tokens_bin, res), rd)
        rounds.append(rd)
    for key in rounds[0] if rounds else ():
        # Per field, the median over rounds (a single round is taken as it is).
        merged = {}
        for field, v in rounds[0][key].items():
            vals = [rd[key].get(field) for rd in rounds]
            nums = [x for x in vals if isinstance(x, (int, float)) and not isinstance(x, bool)]
            merged[field] = statistics.median(nums) if len(nums) == len(vals) and nums else v
        r[key] = merged
    if args.rounds > 1:
        r["rounds"] = rounds
    if args.pairs:
        log(f"{name}: {args.pairs} paired cycles per kind")
        t = time.time()
        r["paired"] = paired_numbers(args, path, onnx_paths, tokens_bin, prompts_file, res)
        log(f"{name}: paired cycles done in {time.time() - t:.0f} s")
    r["load"][1] = os.getloadavg()[0]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clipkit", required=True, help="path of the built clipkit binary")
    ap.add_argument("--models", default="ViT-B/32,ViT-B/16,RN50", help="comma-separated `create-random` archs")
    ap.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (after one warm-up)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure clipkit and ORT this many times, interleaved (clipkit f32, int8, ORT f32, int8, "
                         "again ...): medians per engine, and each ratio per round (default 1)")
    ap.add_argument("--pairs", type=int, default=0,
                    help="after the rounds, this many paired cycles per kind (images, prompts) with long-lived "
                         "engine processes, one call per engine per cycle (default 0: none)")
    ap.add_argument("--pairs-only", action="store_true", help="with --pairs: no rounds (and no PyTorch timings)")
    ap.add_argument("--pair-gap", type=float, default=0.1,
                    help="seconds of pause before every paired call (default 0.1)")
    ap.add_argument("--pair-kinds", default="image,text", help="what --pairs times: image, text or both (default)")
    ap.add_argument("--worker", help="clipkit_compare_worker binary for --pairs (default: bench/ next to --clipkit)")
    ap.add_argument("--torch-repeats", type=int, help="timed calls for PyTorch (default: --repeats)")
    ap.add_argument("--batch", type=int, default=16, help="image batch of the throughput column (default 16)")
    ap.add_argument("--text-batch", type=int, default=64, help="prompts per text batch (default 64)")
    ap.add_argument("--workdir", default="compare-work", help="weights, ONNX files and tokens go here (reused)")
    ap.add_argument("--skip-torch", action="store_true", help="no PyTorch timings (the slowest part)")
    ap.add_argument("--image-only", action="store_true",
                    help="image towers only: no text export, check or timing (a reduced run of a large model)")
    ap.add_argument("--skip-ort", action="store_true", help="no ONNX export, check or ORT timings")
    ap.add_argument("--no-check", action="store_true", help="skip the output comparison")
    ap.add_argument("--check-only", action="store_true", help="export, quantise and check; no timings")
    ap.add_argument("--per-channel", action="store_true", help="ORT int8: one weight scale per output column")
    ap.add_argument("--conv-int8", action="store_true", help="ORT int8: also quantise Conv (ConvInteger)")
    ap.add_argument("--sequential", action="store_true",
                    help="for models too large to hold twice (ViT-bigG-14): one engine process at a time, image "
                         "towers only, PyTorch fp32 and dynamic int8 in ONNX Runtime's place; implies --image-only "
                         "--skip-ort --pairs-only")
    ap.add_argument("--node", default="node", help="Node.js executable")
    ap.add_argument("--json-out", help="also write every number here")
    args = ap.parse_args()
    if args.sequential:
        args.image_only = args.skip_ort = args.skip_torch = True
        args.pairs_only = bool(args.pairs)
        if not args.pairs and not args.check_only:
            sys.exit("compare: --sequential times with --pairs N (or checks with --check-only)")
    if args.rounds < 1:
        sys.exit("compare: --rounds must be at least 1")
    if args.pairs < 0 or (args.pairs_only and not args.pairs):
        sys.exit("compare: --pairs must be positive (and given with --pairs-only)")
    args.pair_kinds = args.pair_kinds.split(",")
    if not args.pair_kinds or any(k not in ("image", "text") for k in args.pair_kinds):
        sys.exit("compare: --pair-kinds takes image, text or image,text")
    if args.pairs_only:
        args.skip_torch = True
    if args.image_only:
        args.pair_kinds = ["image"]
    if args.pairs:
        args.worker = args.worker or os.path.join(os.path.dirname(os.path.abspath(args.clipkit)), "bench",
                                                  "clipkit_compare_worker")
        if not os.access(args.worker, os.X_OK):
            sys.exit(f"compare: no clipkit_compare_worker at {args.worker} (build the bench targets, or pass --worker)")
    args.workdir = os.path.abspath(args.workdir)
    os.makedirs(args.workdir, exist_ok=True)

    if not args.skip_ort:
        try:
            probe = subprocess.run([args.node, "-e", "require('onnxruntime-node')"], cwd=HERE, capture_output=True,
                                   text=True)
        except FileNotFoundError:
            sys.exit(f"compare: no Node.js executable '{args.node}' (see --node), or pass --skip-ort")
        if probe.returncode != 0:
            sys.exit("compare: cannot load onnxruntime-node: run `npm install --ignore-scripts` in bench/compare "
                     "(or pass --skip-ort)\n" + probe.stderr.strip())
    n_prompts = args.text_batch * max(1, args.repeats)
    ids = tokenize(args.clipkit, imagenet_prompts(n_prompts))
    tokens_bin = os.path.join(args.workdir, f"imagenet_prompts_{n_prompts}.bin")
    ids.tofile(tokens_bin)
    prompts_file = os.path.join(args.workdir, f"imagenet_prompts_{n_prompts}.txt")
    with open(prompts_file, "w") as f:
        f.write("".join(p + "\n" for p in imagenet_prompts(n_prompts)))

    results, tables = {}, []
    for name in args.models.split(","):
        t = time.time()
        results[name] = run_model(args, name, ids, tokens_bin, prompts_file)
        results[name]["wall_s"] = time.time() - t
        parts = [f"{k} {v['wall_s']:.0f} s" for k, v in results[name].items() if isinstance(v, dict) and "wall_s" in v]
        log(f"{name}: done in {results[name]['wall_s']:.0f} s" + (f" ({', '.join(parts)})" if parts else ""))
        if args.check_only:
            print(f"{name}: " + json.dumps(results[name].get("check", {})), flush=True)
            continue
        if not args.pairs_only:
            tables.append(table(name, results[name], args))
        if args.pairs:
            tables.append(paired_table(name, results[name]["paired"], args))
        print("\n\n".join(tables[-2 if args.pairs and not args.pairs_only else -1:]) + "\n", flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
