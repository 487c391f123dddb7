"""CLIP in PyTorch, for the comparison benchmark (bench/compare/compare.py).

Written for this benchmark from the published architecture. Parameter names follow OpenAI's
state_dict, so a file written by `clipkit create-random` loads with strict=True and PyTorch, ONNX
Runtime and clipkit all run the same weights. open_clip names (`create-random --arch ViT-H-14`)
carry open_clip's model_cfg in the file's metadata: head widths, MLP ratio and exact GELU follow it.
"""
import json
import math
import struct
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------------
# safetensors reader (the format is tiny: u64 header length, JSON header, raw little-endian data)

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
           "I8": np.int8, "U8": np.uint8}


def read_safetensors(path, with_metadata=False):
    """The tensors (and, with_metadata, the __metadata__ strings). The file is memory-mapped, so a
    model of several GB is held once (its tensors), not twice."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    blob = np.memmap(path, dtype=np.uint8, mode="r")
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dt = np.dtype(_DTYPES[info["dtype"]])
        arr = np.frombuffer(blob, dtype=dt, count=(b - a) // dt.itemsize, offset=base + a).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    del blob
    return (out, header.get("__metadata__", {})) if with_metadata else out


def model_cfg_of(metadata):
    """open_clip's model_cfg when the file carries one (`clipkit create-random --arch ViT-H-14` and
    `clipkit convert` write it under "open_clip_config"), else None: OpenAI's architecture."""
    raw = metadata.get("open_clip_config")
    return json.loads(raw).get("model_cfg") if raw else None


# ---------------------------------------------------------------------------------------------
# CLIP modules

class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualBlock(nn.Module):
    def __init__(self, width, heads, mask=None, mlp_width=None, quick_gelu=True):
        super().__init__()
        mlp_width = mlp_width or 4 * width
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        act = QuickGELU() if quick_gelu else nn.GELU()  # open_clip: exact GELU unless quick_gelu
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, mlp_width)), ("gelu", act),
                                              ("c_proj", nn.Linear(mlp_width, width))]))
        self.ln_2 = nn.LayerNorm(width)
        self.mask = mask

    def forward(self, x):  # x: [seq, batch, width]
        h = self.ln_1(x)
        mask = None if self.mask is None else self.mask[:x.shape[0], :x.shape[0]]
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, mask=None, mlp_width=None, quick_gelu=True):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualBlock(width, heads, mask, mlp_width, quick_gelu)
                                         for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, resolution, patch, width, layers, heads, out_dim, mlp_width=None, quick_gelu=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros((resolution // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_width=mlp_width, quick_gelu=quick_gelu)
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
    """OpenAI's CLIP, or open_clip's with the same tower types when `model_cfg` (open_clip's config)
    is given: its vision head width, text heads and activation; sizes come from the tensors."""

    def __init__(self, sd, model_cfg=None, image_only=False):
        super().__init__()
        cfg = model_cfg or {}
        vcfg, tcfg = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        quick_gelu = bool(cfg.get("quick_gelu", False)) if model_cfg else True
        head_width = vcfg.get("head_width", 64)
        embed_dim = sd["text_projection"].shape[1]
        if "visual.proj" in sd:
            width = sd["visual.conv1.weight"].shape[0]
            patch = sd["visual.conv1.weight"].shape[-1]
            layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
            grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            mlp = sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
            self.visual = VisionTransformer(grid * patch, patch, width, layers, width // head_width, embed_dim,
                                            mlp_width=mlp, quick_gelu=quick_gelu)
            self.image_resolution = grid * patch
        else:
            counts = [len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{i}.")}) for i in (1, 2, 3, 4)]
            width = sd["visual.layer1.0.conv1.weight"].shape[0]
            spatial = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
            self.visual = ModifiedResNet(counts, embed_dim, width * 32 // head_width, spatial * 32, width)
            self.image_resolution = spatial * 32
        self.image_only = image_only
        if image_only:  # no text modules: a large model's image tower alone (sizes only read from sd)
            return
        ctx = sd["positional_embedding"].shape[0]
        tw = sd["ln_final.weight"].shape[0]
        tl = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
        mask = torch.full((ctx, ctx), float("-inf")).triu_(1)
        self.transformer = Transformer(tw, tl, tcfg.get("heads", tw // 64), mask, quick_gelu=quick_gelu)
        self.token_embedding = nn.Embedding(sd["token_embedding.weight"].shape[0], tw)
        self.positional_embedding = nn.Parameter(torch.zeros(ctx, tw))
        self.ln_final = nn.LayerNorm(tw)
        self.text_projection = nn.Parameter(torch.zeros(tw, embed_dim))
        self.logit_scale = nn.Parameter(torch.zeros([]))
        self.context_length = ctx

    def encode_image(self, x):
        return self.visual(x)

    def encode_text(self, ids):
        if self.image_only:
            raise ValueError("encode_text: this model was loaded with its image tower only")
        x = self.token_embedding(ids) + self.positional_embedding[:ids.shape[1]]
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection


class _no_init:
    """Modules built inside skip their random initialisation (seconds for billions of weights)."""
    TYPES = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.BatchNorm2d, nn.Embedding)

    def __enter__(self):
        self.saved = [(t, t.reset_parameters) for t in self.TYPES]
        self.saved.append((nn.MultiheadAttention, nn.MultiheadAttention._reset_parameters))
        for t, _ in self.saved:
            setattr(t, "_reset_parameters" if t is nn.MultiheadAttention else "reset_parameters", lambda self: None)

    def __exit__(self, *exc):
        for t, fn in self.saved:
            setattr(t, "_reset_parameters" if t is nn.MultiheadAttention else "reset_parameters", fn)


def load_clip(path, image_only=False):
    """The model of a safetensors file, its weights as float32. Tensors are read from the file one
    at a time straight into the module's parameters, so the process holds the weights once (and
    no file mapping); image_only=True builds and reads the image tower alone."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    metadata = header.pop("__metadata__", {})
    shapes = {k: torch.empty(v["shape"], device="meta") for k, v in header.items()}
    with _no_init():  # every value is read from the file below
        model = CLIP(shapes, model_cfg_of(metadata), image_only=image_only)
    wanted = {k for k in header if not image_only or k.startswith("visual.")}
    state = model.state_dict(keep_vars=True)
    if set(state) != wanted:
        raise ValueError(f"{path}: tensors do not match the model: missing {sorted(set(state) - wanted)[:5]}, "
                         f"unexpected {sorted(wanted - set(state))[:5]}")
    with open(path, "rb") as f, torch.no_grad():
        for name, dst in state.items():
            info = header[name]
            if list(dst.shape) != info["shape"]:
                raise ValueError(f"{path}: {name} has shape {info['shape']}, the model wants {list(dst.shape)}")
            a, b = info["data_offsets"]
            dt = np.dtype(_DTYPES[info["dtype"]])
            f.seek(8 + n + a)
            src = np.fromfile(f, dtype=dt, count=(b - a) // dt.itemsize).reshape(info["shape"])
            dst.copy_(torch.from_numpy(src))
    return model.eval()


class ImageEncoder(nn.Module):
    """encode_image as a module of its own: pixels [B, 3, R, R] -> embedding [B, D] (for export)."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, pixels):
        return self.clip.encode_image(pixels)


class TextEncoder(nn.Module):
    """encode_text as a module of its own: token ids [B, 77] -> embedding [B, D] (for export)."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, ids):
        return self.clip.encode_text(ids)
