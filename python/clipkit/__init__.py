"""clipkit: a native CLIP engine for Python.

Load a model (OpenAI ``.pt``, open_clip/OpenAI safetensors, torch state dicts, Hugging Face
folders), embed images and texts into numpy arrays, classify zero-shot with prompt ensembles,
evaluate prompt strategies and search image collections::

    import clipkit
    model = clipkit.load("ViT-B-32.pt")
    images = model.encode_image(["cat.jpg", "dog.png"], normalize=True)   # float32 [2, 512]
    texts = model.encode_text(["a cat", "a dog"], normalize=True)
    print(images @ texts.T)

Every computing call releases the GIL; engine failures raise :class:`clipkit.Error`.
"""
from __future__ import annotations

import os as _os
from typing import Any, Dict, List, Optional, Sequence, Union

from ._clipkit import (  # noqa: F401  (re-exported)
    Error,
    Index,
    Model,
    SearchHit,
    ZeroShotClassifier,
    __version__,
    label_sets,
    template_sets,
    tokenize,
)
from . import _clipkit

__all__ = [
    "Error",
    "Index",
    "Model",
    "SearchHit",
    "ZeroShotClassifier",
    "evaluate",
    "label_sets",
    "load",
    "template_sets",
    "tokenize",
]

# The classes live in the extension module; show them where users find them.
for _cls in (Index, Model, SearchHit, ZeroShotClassifier):
    _cls.__module__ = __name__
for _fn in (tokenize, template_sets, label_sets):
    try:
        _fn.__module__ = __name__
    except (AttributeError, TypeError):
        pass

_LOAD_OPTIONS = ("activation", "convolution")

PathLike = Union[str, "_os.PathLike[str]"]


def load(
    path: PathLike,
    dtype: str = "f32",
    threads: int = 0,
    text_model: Optional[PathLike] = None,
    tokenizer: Optional[PathLike] = None,
    **options: str,
) -> Model:
    """Loads a CLIP model and returns a :class:`Model`.

    ``path`` is an OpenAI TorchScript ``.pt`` archive, a torch.save state dict, a safetensors
    file (OpenAI/open_clip or Hugging Face tensor names), a Hugging Face model folder, an
    M-CLIP folder (a multilingual text tower alone: texts only) or an open_clip XLM-RoBERTa
    checkpoint; the format is detected from the content.

    ``dtype``: ``"f32"`` (default), ``"f16"`` (fp16 weights, fp32 arithmetic) or ``"int8"``
    (int8 weights and activations: fastest). ``threads``: compute threads (0 = one per core).

    ``text_model`` (the CLI's ``--text-model``): a text tower from another folder or file,
    paired with the image tower of ``path`` -- an M-CLIP folder, or a checkpoint holding an
    XLM-RoBERTa text tower. Its embedding size must equal the image tower's (otherwise
    :class:`clipkit.Error` names both sizes); the model's ``fingerprint`` then covers both
    towers. ``tokenizer`` (the CLI's ``--tokenizer``): the SentencePiece model of an
    XLM-RoBERTa text tower; by default ``sentencepiece.bpe.model`` in the text tower's folder
    or beside its file.

    Further options are the engine's model options:

    - ``activation``: ``"auto"`` (default), ``"quick_gelu"`` or ``"gelu"``;
    - ``convolution`` (ResNet image towers): ``"auto"`` (default), ``"direct"``, ``"nhwc"`` or
      ``"blocked"``.

    Raises :class:`clipkit.Error` for a missing or unreadable file or a bad option value.
    """
    unknown = sorted(set(options) - set(_LOAD_OPTIONS))
    if unknown:
        raise TypeError(
            "load() got unknown option(s) %s (known: %s)" % (", ".join(unknown), ", ".join(_LOAD_OPTIONS))
        )
    try:
        fspath = _os.fspath(path)
    except TypeError:
        raise TypeError("path: expected a str or os.PathLike, got %s" % type(path).__name__) from None
    if not isinstance(fspath, str):
        raise TypeError("path: expected a str path, got %s" % type(fspath).__name__)
    if not isinstance(dtype, str):
        raise TypeError("dtype: expected a str ('f32', 'f16' or 'int8'), got %s" % type(dtype).__name__)
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError("threads: expected an int, got %s" % type(threads).__name__)
    if threads < 0:
        raise ValueError("threads: must be 0 (one per core) or more, got %d" % threads)
    for name in _LOAD_OPTIONS:
        if name in options and not isinstance(options[name], str):
            raise TypeError("%s: expected a str, got %s" % (name, type(options[name]).__name__))
    paths = {}
    for name, value in (("text_model", text_model), ("tokenizer", tokenizer)):
        if value is None:
            paths[name] = ""
            continue
        try:
            p = _os.fspath(value)
        except TypeError:
            raise TypeError("%s: expected a str or os.PathLike, got %s" % (name, type(value).__name__)) from None
        if not isinstance(p, str) or not p:
            raise TypeError("%s: expected a non-empty str path" % name)
        paths[name] = p
    return _clipkit._load(
        fspath,
        dtype,
        threads,
        options.get("activation", "auto"),
        options.get("convolution", "auto"),
        paths["text_model"],
        paths["tokenizer"],
    )


def evaluate(
    model: Model,
    folder: PathLike,
    strategies: Union[str, Sequence[str]] = "none,photo,imagenet7,imagenet80",
    scale: Optional[float] = None,
    batch_size: int = 32,
    select_from: Optional[str] = None,
    max_templates: int = 10,
    holdout: float = 0.5,
) -> Dict[str, Any]:
    """Compares prompt strategies on a labelled image folder, as ``clipkit eval`` does.

    ``folder`` holds one folder per class (the folder name is the label, unless
    ``folder/labels.json`` maps folder names to label texts or synonym lists). ``strategies``
    are template sets or template files, as a list or a comma-separated string. Images are
    encoded once and shared by every strategy. ``scale`` is the logit scale for probabilities
    (default: the model's own learned scale, as ``clipkit eval`` and ``clipkit classify`` use). With ``select_from`` (a template set or file),
    templates are also chosen by sequential forward selection (up to ``max_templates``, with
    ``holdout`` of each class held out).

    Returns the report as a dict: what ``clipkit eval --report R.json`` writes (model, dataset,
    labels, class_counts, images, failed_images, scale, strategies with top1/top5/mean per
    class/per class/confusion, and selection when asked).
    """
    return _clipkit._evaluate(
        model, _os.fspath(folder), strategies, float(getattr(model, "logit_scale", 100.0) if scale is None else scale), int(batch_size), select_from, int(max_templates), float(holdout)
    )
