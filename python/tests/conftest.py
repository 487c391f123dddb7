"""Shared fixtures: the reference data of tests/data, the models, and the built command line."""
import json
import os
import pathlib
import struct
import subprocess

import numpy as np
import pytest

import clipkit

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
IMAGES = sorted(p for p in (DATA / "images").iterdir() if p.suffix in (".png", ".jpg"))


def cli_path():
    """The `clipkit` executable of the build the package comes from (CLIPKIT_CLI overrides)."""
    if os.environ.get("CLIPKIT_CLI"):
        return os.environ["CLIPKIT_CLI"]
    return str(ROOT / "build" / "clipkit")


def run_cli(*args):
    """Runs the command line and returns its stdout; fails the test on a non-zero exit."""
    exe = cli_path()
    if not os.path.exists(exe):
        pytest.skip("the clipkit executable is not built (%s)" % exe)
    r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


_DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64}


def read_safetensors(path):
    """The tensors of a safetensors file as numpy arrays."""
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=_DTYPES[t["dtype"]]).reshape(t["shape"])
    return out


class Golden:
    def __init__(self, name):
        self.meta = json.loads((DATA / "golden" / (name + ".json")).read_text())
        self.tensors = read_safetensors(DATA / "golden" / (name + ".safetensors"))

    def __getitem__(self, key):
        return self.tensors[key]


_golden = {}


def golden(name):
    if name not in _golden:
        _golden[name] = Golden(name)
    return _golden[name]


def expect_matches(got, want, what, min_cos=0.99999, rel=1e-4):
    """The C++ golden tests' criterion: every row's cosine >= min_cos and
    max|got - want| <= rel * max|want|."""
    got = np.asarray(got, dtype=np.float64).reshape(want.shape[0], -1)
    want = np.asarray(want, dtype=np.float64).reshape(want.shape[0], -1)
    assert got.shape == want.shape, what
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= min_cos, "%s: row %d cosine %.9f" % (what, int(cos.argmin()), cos.min())
    diff = np.abs(got - want).max()
    ref = np.abs(want).max()
    assert diff <= rel * ref, "%s: max|diff| %g, max|ref| %g" % (what, diff, ref)


_models = {}


def model(relative, **kw):
    key = (relative, tuple(sorted(kw.items())))
    if key not in _models:
        _models[key] = clipkit.load(str(DATA / relative), **kw)
    return _models[key]


@pytest.fixture(scope="session")
def vit():
    return model("models/tiny-vit.safetensors")


@pytest.fixture(scope="session")
def rn():
    return model("models/tiny-rn.safetensors")


@pytest.fixture(scope="session")
def demo():
    return clipkit.load(str(ROOT / "models" / "demo" / "patterns-vit.safetensors"))
