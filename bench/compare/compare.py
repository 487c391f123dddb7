#!/usr/bin/env python3
"""Throughput comparison: clipkit vs PyTorch (vs ONNX Runtime when available) on CLIP models.

Development tool only (needs PyTorch: Debian `python3-torch`); the engine never runs Python.

    python3 bench/compare/compare.py --clipkit build/clipkit --models ViT-B-32,ViT-B-16,RN50 \
        --threads 2 --workdir /tmp/clip-compare

For every model it
  1. writes random weights with `clipkit create-random --arch NAME` (OpenAI state_dict layout),
  2. loads the same safetensors into the PyTorch module defined below (strict name/shape check),
  3. times PyTorch: images/s at batch 1 and 16, prompts/s at batch 64 over the full 77-token
     context (as the reference implementation runs the text tower),
  4. runs `clipkit bench` (f32 and int8) on the same file,
  5. prints one table; the ImageNet classifier build time (1000 classes x 80 templates = 80,000
     prompts) is extrapolated from the measured prompts/s.
ONNX Runtime columns are filled only when --ort-json points at results measured separately
(see docs/performance.md); this script does not install or download anything.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_PROMPTS = 1000 * 80


# ---------------------------------------------------------------------------------------------
# safetensors reader (the format is tiny: u64 header length, JSON header, raw little-endian data)

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
           "I8": np.int8, "U8": np.uint8}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(blob, dtype=_DTYPES[info["dtype"]], count=(b - a) // np.dtype(_DTYPES[info["dtype"]]).itemsize,
                            offset=base + a).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


# ---------------------------------------------------------------------------------------------
# CLIP modules (written for this benchmark from the published architecture; parameter names
# follow OpenAI's state_dict so the clipkit-generated file loads with strict=True)

class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualBlock(nn.Module):
    def __init__(self, width, heads, mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = nn.LayerNorm(width)
        self.mask = mask

    def forward(self, x):  # x: [seq, batch, width]
        h = self.ln_1(x)
        mask = None if self.mask is None else self.mask[:x.shape[0], :x.shape[0]]
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, mask=None):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualBlock(width, heads, mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, resolution, patch, width, layers, heads, out_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros((resolution // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, out_dim))

    def forward(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [b, grid², width]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.ln_pre(x).permute(1, 0, 2)
        x = self.transformer(x).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


class Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(OrderedDict([("-1", nn.AvgPool2d(stride)),
                                                         ("0", nn.Conv2d(inplanes, planes * 4, 1, bias=False)),
                                                         ("1", nn.BatchNorm2d(planes * 4))]))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(self.avgpool(y)))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class AttentionPool(nn.Module):
    def __init__(self, spatial, dim, heads, out_dim):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.zeros(spatial * spatial + 1, dim))
        self.k_proj, self.q_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.c_proj = nn.Linear(dim, out_dim)
        self.heads = heads

    def forward(self, x):
        x = x.flatten(2).permute(2, 0, 1)  # [hw, b, c]
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0) + self.positional_embedding[:, None, :]
        seq, b, c = x.shape
        d = c // self.heads
        q = self.q_proj(x[:1]).reshape(1, b * self.heads, d).transpose(0, 1) / math.sqrt(d)
        k = self.k_proj(x).reshape(seq, b * self.heads, d).transpose(0, 1)
        v = self.v_proj(x).reshape(seq, b * self.heads, d).transpose(0, 1)
        o = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v  # [b*h, 1, d]
        return self.c_proj(o.transpose(0, 1).reshape(b, c))


class ModifiedResNet(nn.Module):
    def __init__(self, layers, out_dim, heads, resolution, width):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._stage(width, layers[0], 1)
        self.layer2 = self._stage(width * 2, layers[1], 2)
        self.layer3 = self._stage(width * 4, layers[2], 2)
        self.layer4 = self._stage(width * 8, layers[3], 2)
        self.attnpool = AttentionPool(resolution // 32, width * 32, heads, out_dim)

    def _stage(self, planes, blocks, stride):
        mods = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * 4
        mods += [Bottleneck(self._inplanes, planes, 1) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.avgpool(F.relu(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


class CLIP(nn.Module):
    def __init__(self, sd):
        super().__init__()
        embed_dim = sd["text_projection"].shape[1]
        if "visual.proj" in sd:
            width = sd["visual.conv1.weight"].shape[0]
            patch = sd["visual.conv1.weight"].shape[-1]
            layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
            grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            self.visual = VisionTransformer(grid * patch, patch, width, layers, width // 64, embed_dim)
            self.image_resolution = grid * patch
        else:
            counts = [len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{i}.")}) for i in (1, 2, 3, 4)]
            width = sd["visual.layer1.0.conv1.weight"].shape[0]
            spatial = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
            self.visual = ModifiedResNet(counts, embed_dim, width * 32 // 64, spatial * 32, width)
            self.image_resolution = spatial * 32
        ctx = sd["positional_embedding"].shape[0]
        tw = sd["ln_final.weight"].shape[0]
        tl = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
        mask = torch.full((ctx, ctx), float("-inf")).triu_(1)
        self.transformer = Transformer(tw, tl, tw // 64, mask)
        self.token_embedding = nn.Embedding(sd["token_embedding.weight"].shape[0], tw)
        self.positional_embedding = nn.Parameter(torch.zeros(ctx, tw))
        self.ln_final = nn.LayerNorm(tw)
        self.text_projection = nn.Parameter(torch.zeros(tw, embed_dim))
        self.logit_scale = nn.Parameter(torch.zeros([]))
        self.context_length = ctx

    def encode_image(self, x):
        return self.visual(x)

    def encode_text(self, ids):
        x = self.token_embedding(ids) + self.positional_embedding[:ids.shape[1]]
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection


def load_clip(path):
    sd = {k: v.float() if v.is_floating_point() else v for k, v in read_safetensors(path).items()}
    model = CLIP(sd)
    model.load_state_dict(sd, strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------

def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def torch_numbers(path, threads, repeats, text_batch):
    torch.set_num_threads(threads)
    t = time.perf_counter()
    model = load_clip(path)
    load_s = time.perf_counter() - t
    res = model.image_resolution
    g = torch.Generator().manual_seed(0)
    out = {"load_s": load_s}
    with torch.inference_mode():
        for b in (1, 16):
            x = torch.randn(b, 3, res, res, generator=g)
            out[f"image_per_s_b{b}"] = b / timed(lambda: model.encode_image(x), repeats if b == 1 else max(2, repeats // 3))
        # Prompts of 12 tokens padded to the full context, as the reference text tower runs them.
        tb = text_batch
        ids = torch.zeros(tb, model.context_length, dtype=torch.long)
        ids[:, 0] = 49406
        ids[:, 1:11] = torch.randint(1, 49000, (tb, 10), generator=g)
        ids[:, 11] = 49407
        out["text_per_s"] = tb / timed(lambda: model.encode_text(ids), max(2, repeats // 3))
    return out


def clipkit_numbers(binary, path, threads, dtype, images, texts):
    res = {}
    for batch in (1, 16):
        cmd = [binary, "bench", "--model", path, "--dtype", dtype, "--threads", str(threads), "--batch", str(batch),
               "--images", str(images if batch > 1 else max(4, images // 8)), "--texts", str(texts if batch > 1 else 0)]
        j = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        res[f"image_per_s_b{batch}"] = j["image_per_s"]
        if batch > 1:
            res["text_per_s"] = j["text_per_s"]
            res["load_s"] = j["load_s"]
            res["kernels"] = j["kernels"]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clipkit", required=True, help="path of the built clipkit binary")
    ap.add_argument("--models", default="ViT-B/32,ViT-B/16,RN50")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workdir", default="compare-work")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=32, help="images per clipkit batch-16 run")
    ap.add_argument("--texts", type=int, default=256, help="prompts per clipkit run")
    ap.add_argument("--torch-text-batch", type=int, default=64, help="prompts per PyTorch text batch")
    ap.add_argument("--ort-json", help="optional JSON {model: {ort_f32: {...}, ort_int8: {...}}} measured elsewhere")
    ap.add_argument("--json-out", help="also write all numbers here")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    ort = json.load(open(args.ort_json)) if args.ort_json else {}
    rows = []
    results = {}
    for name in args.models.split(","):
        path = os.path.join(args.workdir, name.replace("/", "-").replace("@", "-") + ".safetensors")
        if not os.path.exists(path):
            subprocess.run([args.clipkit, "create-random", "--arch", name, "--out", path], check=True)
        r = {"torch": torch_numbers(path, args.threads, args.repeats, args.torch_text_batch),
             "clipkit_f32": clipkit_numbers(args.clipkit, path, args.threads, "f32", args.images, args.texts),
             "clipkit_int8": clipkit_numbers(args.clipkit, path, args.threads, "int8", args.images, args.texts)}
        r.update(ort.get(name, {}))
        results[name] = r
        for engine in ("clipkit_f32", "clipkit_int8", "ort_f32", "ort_int8", "torch"):
            if engine not in r:
                rows.append((name, engine, None, None, None, None))
                continue
            e = r[engine]
            tps = e.get("text_per_s")
            rows.append((name, engine, e.get("image_per_s_b1"), e.get("image_per_s_b16"), tps,
                         IMAGENET_PROMPTS / tps if tps else None))
    fmt = "{:<10} {:<13} {:>12} {:>13} {:>11} {:>22}"
    print(fmt.format("model", "engine", "img/s b=1", "img/s b=16", "prompts/s", "ImageNet clf build (s)"))
    for row in rows:
        cells = ["n/a" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v)) for v in row]
        print(fmt.format(*cells))
    print(f"threads={args.threads}; ImageNet classifier build = 80,000 prompts / prompts/s (extrapolated)")
    if args.json_out:
        json.dump(results, open(args.json_out, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
