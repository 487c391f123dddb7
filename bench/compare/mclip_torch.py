#!/usr/bin/env python3
"""M-CLIP text tower throughput: clipkit vs PyTorch (f32), same random weights.

Development tool only; the engine never runs Python. Needs Debian's python3-torch
(`scripts/install-deps.sh --dev`). From the repository root, on a quiet machine:

    /usr/bin/python3 bench/compare/mclip_torch.py --clipkit build/clipkit --arch mclip-xlmr-large \
        --tokenizer sentencepiece.bpe.model --threads 4 --texts 640 --workdir mclip-work

It
  1. writes random weights with `clipkit create-random --arch ARCH` (an M-CLIP folder) unless
     the folder exists already (the tokenizer given is copied into it),
  2. loads them into a PyTorch XLM-RoBERTa written here (torch.nn.TransformerEncoderLayer with
     post-LayerNorm, erf GELU and eps 1e-5 per layer; position ids from padding_idx + 1; masked
     mean pooling; LinearTransformation), as M-CLIP computes it,
  3. checks clipkit's embeddings of a few prompts (`clipkit embed`) against PyTorch's
     (cosine >= 0.99999 expected),
  4. times PyTorch f32 on the ImageNet prompts (80 templates x 1000 classes, class by class, as
     `clipkit bench` takes them) in batches of 64, each batch padded to its longest text (what
     M-CLIP's tokenizer call does), tokenised by `clipkit tokenize --tokenizer`,
  5. runs `clipkit bench` (f32 and int8) with the same thread count and prints texts/s and the
     ratios to PyTorch f32, with clipkit's load time and peak memory.
Each measurement takes one warm-up batch and reports the median batch time.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_torch import read_safetensors  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class XlmrMClip(torch.nn.Module):
    def __init__(self, sd):
        super().__init__()
        p = "transformer."
        V, H = sd[p + "embeddings.word_embeddings.weight"].shape
        layers = len({k.split(".")[3] for k in sd if k.startswith(p + "encoder.layer.")})
        inter = sd[p + "encoder.layer.0.intermediate.dense.weight"].shape[0]
        self.word = torch.nn.Embedding.from_pretrained(sd[p + "embeddings.word_embeddings.weight"])
        self.pos = torch.nn.Embedding.from_pretrained(sd[p + "embeddings.position_embeddings.weight"])
        self.type0 = torch.nn.Parameter(sd[p + "embeddings.token_type_embeddings.weight"][0], requires_grad=False)
        self.ln = torch.nn.LayerNorm(H, eps=1e-5)
        self.ln.load_state_dict({"weight": sd[p + "embeddings.LayerNorm.weight"], "bias": sd[p + "embeddings.LayerNorm.bias"]})
        self.layers = torch.nn.ModuleList()
        for i in range(layers):
            q = f"{p}encoder.layer.{i}."
            l = torch.nn.TransformerEncoderLayer(H, H // 64, inter, dropout=0.0, activation="gelu",
                                                 layer_norm_eps=1e-5, batch_first=True, norm_first=False)
            l.load_state_dict({
                "self_attn.in_proj_weight": torch.cat([sd[q + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]),
                "self_attn.in_proj_bias": torch.cat([sd[q + f"attention.self.{n}.bias"] for n in ("query", "key", "value")]),
                "self_attn.out_proj.weight": sd[q + "attention.output.dense.weight"],
                "self_attn.out_proj.bias": sd[q + "attention.output.dense.bias"],
                "linear1.weight": sd[q + "intermediate.dense.weight"], "linear1.bias": sd[q + "intermediate.dense.bias"],
                "linear2.weight": sd[q + "output.dense.weight"], "linear2.bias": sd[q + "output.dense.bias"],
                "norm1.weight": sd[q + "attention.output.LayerNorm.weight"], "norm1.bias": sd[q + "attention.output.LayerNorm.bias"],
                "norm2.weight": sd[q + "output.LayerNorm.weight"], "norm2.bias": sd[q + "output.LayerNorm.bias"],
            })
            self.layers.append(l)
        self.proj = torch.nn.Linear(H, sd["LinearTransformation.weight"].shape[0])
        self.proj.load_state_dict({"weight": sd["LinearTransformation.weight"], "bias": sd["LinearTransformation.bias"]})

    def forward(self, ids, mask):
        real = (ids != 1).long()
        pos = torch.cumsum(real, dim=1) * real + 1
        x = self.ln(self.word(ids) + self.type0 + self.pos(pos))
        for l in self.layers:
            x = l(x, src_key_padding_mask=(mask == 0))
        m = mask.unsqueeze(2).to(x.dtype)
        return self.proj((x * m).sum(1) / m.sum(1))


def batches(rows, size):
    for i in range(0, len(rows), size):
        chunk = rows[i:i + size]
        n = max(len(r) for r in chunk)
        ids = torch.tensor([r + [1] * (n - len(r)) for r in chunk])
        mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in chunk])
        yield ids, mask


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clipkit", default=os.path.join(ROOT, "build", "clipkit"))
    ap.add_argument("--arch", default="mclip-xlmr-large")
    ap.add_argument("--tokenizer", required=True, help="sentencepiece.bpe.model (XLM-RoBERTa's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--texts", type=int, default=640)
    ap.add_argument("--workdir", default="mclip-work")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    folder = os.path.join(a.workdir, a.arch)
    if not os.path.isdir(folder):
        os.makedirs(a.workdir, exist_ok=True)
        run([a.clipkit, "create-random", "--arch", a.arch, "--out", folder])
    shutil.copyfile(a.tokenizer, os.path.join(folder, "sentencepiece.bpe.model"))
    with torch.no_grad():
        model = XlmrMClip({k: v.float() for k, v in read_safetensors(os.path.join(folder, "model.safetensors")).items()})
        model.eval()
        classes = json.load(open(os.path.join(ROOT, "tests", "data", "imagenet_classes.json")))
        templates = json.load(open(os.path.join(ROOT, "tests", "data", "imagenet_templates.json")))
        prompts = [t.format(c) for c in classes for t in templates][:a.texts]
        rows = [json.loads(line) for line in run([a.clipkit, "tokenize", "--tokenizer", a.tokenizer, "--"] + prompts).splitlines()]
        # Agreement on a few prompts.
        out = os.path.join(a.workdir, "check.npy")
        run([a.clipkit, "embed", "--model", folder, "--out", out, "--text"] + prompts[:4])
        import numpy as np
        ours = torch.from_numpy(np.load(out))
        ids, mask = next(batches(rows[:4], 4))
        ref = model(ids, mask)
        cos = torch.nn.functional.cosine_similarity(ours, ref).min().item()
        print(f"clipkit f32 vs PyTorch: min cosine {cos:.7f}", flush=True)
        times = []
        for i, (ids, mask) in enumerate(batches(rows, 64)):
            t = time.perf_counter()
            model(ids, mask)
            if i > 0:
                times.append((time.perf_counter() - t) / ids.shape[0])
        torch_rate = 1.0 / statistics.median(times)
        print(f"PyTorch f32: {torch_rate:.1f} texts/s", flush=True)
    res = {"pytorch_f32": torch_rate}
    for dtype in ("f32", "int8"):
        j = json.loads(run([a.clipkit, "bench", "--model", folder, "--texts", str(a.texts), "--dtype", dtype,
                            "--threads", str(a.threads)]))
        res["clipkit_" + dtype] = j["text_per_s"]
        res["load_s_" + dtype] = j["load_s"]
        res["peak_rss_mb_" + dtype] = j["peak_rss_mb"]
        res["weights_mb_" + dtype] = j["weights_mb"]
    print(f"| engine | texts/s | vs PyTorch f32 |\n|---|---|---|")
    for k in ("pytorch_f32", "clipkit_f32", "clipkit_int8"):
        print(f"| {k} | {res[k]:.1f} | {res[k] / torch_rate:.2f}x |")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
