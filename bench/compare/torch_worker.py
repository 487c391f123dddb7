#!/usr/bin/env python3
"""PyTorch side of compare.py's sequential mode: the image tower alone, fp32 or dynamic int8.

    python3 torch_worker.py serve --model M --dtype f32|int8 --threads N --batch B
        loads the image tower, runs one warm-up batch, prints {"ready": true, "load_s": ...}; then
        answers every stdin line `image` with {"s": seconds for one batch of B random N(0, 1)
        images} (the protocol of clipkit_compare_worker).
    python3 torch_worker.py check --model M --pixels X.npy --threads N --out OUT.npz
        writes the embeddings of X (float32 [B, 3, R, R]) by the fp32 model (`f32`), by the same
        model with its attention projections as plain Linear layers (`f32_linear`, must equal
        `f32`) and by the dynamic int8 model (`int8`).

int8 is PyTorch's dynamic quantisation (torch.ao.quantization.quantize_dynamic on every Linear:
int8 weights per tensor, activations quantised per batch at run time). nn.MultiheadAttention keeps
its projections out of reach of quantize_dynamic (its output projection is a class the quantiser
skips, its input projection a bare parameter), so the int8 model first runs attention through two
Linear layers holding the same weights: all of a block's matrix products are then int8, as in
ONNX Runtime's int8 graph. This process holds one model, with the image tower's weights once.
"""
import argparse
import json
import math
import sys
import time

import numpy as np
import torch
from torch import nn

from clip_torch import load_clip


class LinearAttention(nn.Module):
    """nn.MultiheadAttention's computation (no dropout, optional additive mask) with its input and
    output projections as nn.Linear modules sharing the original weights."""

    def __init__(self, mha):
        super().__init__()
        w = mha.embed_dim
        self.heads = mha.num_heads
        self.qkv = nn.Linear(w, 3 * w)
        self.qkv.weight, self.qkv.bias = mha.in_proj_weight, mha.in_proj_bias
        self.out = nn.Linear(w, w)
        self.out.weight, self.out.bias = mha.out_proj.weight, mha.out_proj.bias

    def forward(self, q_in, k_in, v_in, need_weights=False, attn_mask=None):  # x: [seq, batch, width]
        s, b, w = q_in.shape
        d = w // self.heads
        q, k, v = self.qkv(q_in).chunk(3, dim=-1)
        q, k, v = (t.reshape(s, b * self.heads, d).transpose(0, 1) for t in (q, k, v))
        scores = (q / math.sqrt(d)) @ k.transpose(1, 2)
        if attn_mask is not None:
            scores = scores + attn_mask
        o = torch.softmax(scores, dim=-1) @ v  # [b*heads, s, d]
        return self.out(o.transpose(0, 1).reshape(s, b, w)), None


def linear_attention(clip):
    for block in clip.visual.transformer.resblocks:
        block.attn = LinearAttention(block.attn)
    return clip


def quantize_int8(clip):
    linear_attention(clip)
    return torch.ao.quantization.quantize_dynamic(clip, {nn.Linear}, dtype=torch.qint8, inplace=True)


def load(path, dtype):
    if dtype not in ("f32", "int8"):
        raise ValueError(f"unknown --dtype {dtype} (f32 or int8)")
    clip = load_clip(path, image_only=True)
    if not hasattr(clip.visual, "transformer"):
        raise ValueError("torch_worker: ViT image towers only")
    return quantize_int8(clip) if dtype == "int8" else clip


def reply(j):
    print(json.dumps(j), flush=True)


def serve(args):
    t0 = time.perf_counter()
    clip = load(args.model, args.dtype)
    load_s = time.perf_counter() - t0
    res = clip.image_resolution
    x = torch.randn(args.batch, 3, res, res, generator=torch.Generator().manual_seed(1234))
    with torch.inference_mode():
        clip.encode_image(x)  # warm-up
        reply({"ready": True, "load_s": load_s, "torch": torch.__version__})
        for line in sys.stdin:
            if line.strip() != "image":
                reply({"error": f"unknown request '{line.strip()}' (image)"})
                continue
            t = time.perf_counter()
            clip.encode_image(x)
            reply({"s": time.perf_counter() - t})


def check(args):
    x = torch.from_numpy(np.load(args.pixels)).float()
    clip = load(args.model, "f32")
    out = {}
    with torch.inference_mode():
        out["f32"] = clip.encode_image(x).numpy()
        linear_attention(clip)
        out["f32_linear"] = clip.encode_image(x).numpy()
        torch.ao.quantization.quantize_dynamic(clip, {nn.Linear}, dtype=torch.qint8, inplace=True)
        out["int8"] = clip.encode_image(x).numpy()
    np.savez(args.out, **out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("verb", choices=("serve", "check"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--dtype", default="f32", help="serve: f32 or int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16, help="serve: images per batch")
    ap.add_argument("--pixels", help="check: float32 .npy [B, 3, R, R]")
    ap.add_argument("--out", help="check: .npz written")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        serve(args) if args.verb == "serve" else check(args)
    except Exception as e:  # one line for the driver
        if args.verb == "serve":
            reply({"error": str(e)})
        else:
            sys.exit(f"torch_worker: {e}")


if __name__ == "__main__":
    sys.exit(main())
