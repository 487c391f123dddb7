#!/usr/bin/env python3
"""Export the PyTorch CLIP encoders of clip_torch.py to ONNX (for ONNX Runtime in compare.py).

    python3 bench/compare/onnx_export.py MODEL.safetensors OUTDIR

writes OUTDIR/image/image.onnx (input `pixels` float32 [B, 3, R, R], output `embedding` [B, D]) and
OUTDIR/text/text.onnx (input `ids` int64 [B, 77], output `embedding` [B, D]: the projection at the EOT
token, i.e. at the highest id, as the reference does). The batch axis is dynamic; constant folding
turns every weight (including the transposed ones) into an initializer, which the int8 quantizer
(quantize_int8.py) relies on. The text graph runs the full 77-token context, like the reference.
"""
import argparse
import os
import sys
import warnings

import torch

from clip_torch import ImageEncoder, TextEncoder, load_clip

OPSET = 17  # the newest PyTorch 1.13 writes; has LayerNormalization as one op


def export(model_path, out_dir, opset=OPSET, clip=None, text=True):
    """Writes image.onnx and (unless text=False) text.onnx under out_dir; returns their paths.
    A graph over 2 GB (ViT-H-14's image tower and larger) keeps its weights in files beside it
    (ONNX external data), which ONNX Runtime reads from there."""
    os.makedirs(out_dir, exist_ok=True)
    clip = clip if clip is not None else load_clip(model_path)
    res = clip.image_resolution
    # One folder per graph: the external-data files of two large graphs must not collide.
    image_path = os.path.join(out_dir, "image", "image.onnx")
    text_path = os.path.join(out_dir, "text", "text.onnx")
    os.makedirs(os.path.dirname(image_path), exist_ok=True)
    os.makedirs(os.path.dirname(text_path), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes: the batch axis is declared dynamic
        torch.onnx.export(ImageEncoder(clip).eval(), (torch.zeros(2, 3, res, res),), image_path,
                          input_names=["pixels"], output_names=["embedding"],
                          dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                          opset_version=opset, do_constant_folding=True)
        if not text:
            return image_path, None
        ids = torch.zeros(2, clip.context_length, dtype=torch.long)
        ids[:, 0], ids[:, 1], ids[:, 2] = 49406, 320, 49407
        torch.onnx.export(TextEncoder(clip).eval(), (ids,), text_path,
                          input_names=["ids"], output_names=["embedding"],
                          dynamic_axes={"ids": {0: "batch"}, "embedding": {0: "batch"}},
                          opset_version=opset, do_constant_folding=True)
    return image_path, text_path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="safetensors file in OpenAI layout (e.g. from `clipkit create-random`)")
    ap.add_argument("out_dir")
    ap.add_argument("--opset", type=int, default=OPSET)
    args = ap.parse_args()
    for p in export(args.model, args.out_dir, args.opset):
        print(p)


if __name__ == "__main__":
    sys.exit(main())
