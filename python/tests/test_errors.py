"""Every argument check (TypeError/ValueError naming the argument) and engine errors
(clipkit.Error, a RuntimeError, with the command line's message)."""
import numpy as np
import pytest
from PIL import Image

import clipkit
from conftest import DATA, IMAGES, run_cli


def test_error_is_a_runtime_error_with_the_cli_message(tmp_path):
    assert issubclass(clipkit.Error, RuntimeError)
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(clipkit.Error) as e:
        clipkit.load(missing)
    assert e.value.code == "NotFound"
    assert "nope.safetensors" in str(e.value)
    import subprocess
    from conftest import cli_path
    r = subprocess.run([cli_path(), "info", "--model", missing], capture_output=True, text=True)
    assert r.stderr.strip() == "clipkit info: " + str(e.value)


def test_load_arguments(tmp_path):
    with pytest.raises(TypeError, match="unknown option"):
        clipkit.load(str(DATA / "models/tiny-vit.safetensors"), colour="red")
    with pytest.raises(TypeError, match="path"):
        clipkit.load(3)
    with pytest.raises(TypeError, match="threads"):
        clipkit.load(str(DATA / "models/tiny-vit.safetensors"), threads="2")
    with pytest.raises(ValueError, match="threads"):
        clipkit.load(str(DATA / "models/tiny-vit.safetensors"), threads=-1)
    with pytest.raises(clipkit.Error) as e:
        clipkit.load(str(DATA / "models/tiny-vit.safetensors"), dtype="f64")
    assert e.value.code == "InvalidArgument"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(clipkit.Error) as e:
        clipkit.load(str(bad))
    assert e.value.code == "Format"


def test_encode_image_arguments(tmp_path, vit):
    with pytest.raises(TypeError, match=r"images: expected .*got int"):
        vit.encode_image(3)
    with pytest.raises(TypeError, match=r"images\[1\]: expected .*got NoneType"):
        vit.encode_image([str(IMAGES[0]), None])
    with pytest.raises(TypeError, match=r"images\[0\]: expected a uint8 array.*float64"):
        vit.encode_image([np.zeros((8, 8, 3))])
    with pytest.raises(ValueError, match=r"images\[0\]: expected a uint8 array of shape.*\(8, 8, 5\)"):
        vit.encode_image([np.zeros((8, 8, 5), np.uint8)])
    with pytest.raises(ValueError, match=r"shape"):
        vit.encode_image(np.zeros((0, 8), np.uint8))
    with pytest.raises(ValueError, match="batch_size"):
        vit.encode_image(str(IMAGES[0]), batch_size=0)
    with pytest.raises(ValueError, match=r"images\[0\]: PIL mode 'F'"):
        vit.encode_image([Image.new("F", (4, 4))])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(clipkit.Error) as e:
        vit.encode_image([str(IMAGES[0]), str(broken)])
    assert "broken.png" in str(e.value) and e.value.code == "Format"
    with pytest.raises(clipkit.Error) as e:
        vit.encode_image(str(tmp_path / "missing.jpg"))
    assert e.value.code == "NotFound"
    with pytest.raises(TypeError, match="image"):
        vit.preprocess([str(IMAGES[0])])


def test_encode_pixels_and_text_arguments(vit):
    with pytest.raises(TypeError, match="pixels: expected a float32 numpy array"):
        vit.encode_pixels([[0.0]])
    with pytest.raises(TypeError, match="pixels: expected a float32 array, got dtype float64"):
        vit.encode_pixels(np.zeros((1, 3, 64, 64)))
    with pytest.raises(ValueError, match=r"pixels: expected shape \[n, 3, 64, 64\], got \(1, 3, 32, 32\)"):
        vit.encode_pixels(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="pixels"):
        vit.encode_pixels(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(TypeError, match=r"texts\[1\]: expected str, got int"):
        vit.encode_text(["a", 1])
    with pytest.raises(TypeError, match="texts: expected a str or a list of str"):
        vit.encode_text(b"bytes")
    with pytest.raises(TypeError, match="texts"):
        clipkit.tokenize(None)


def test_classifier_arguments(vit):
    with pytest.raises(TypeError, match="model"):
        clipkit.ZeroShotClassifier("model", ["a"])
    with pytest.raises(ValueError, match="labels"):
        clipkit.ZeroShotClassifier(vit, [])
    with pytest.raises(TypeError, match=r"labels\[1\]"):
        clipkit.ZeroShotClassifier(vit, ["a", 2])
    with pytest.raises(TypeError, match="labels"):
        clipkit.ZeroShotClassifier(vit, 5)
    with pytest.raises(clipkit.Error) as e:
        clipkit.ZeroShotClassifier(vit, ["a"], templates=["no field"])
    assert e.value.code == "InvalidArgument"
    with pytest.raises(clipkit.Error) as e:
        clipkit.ZeroShotClassifier(vit, ["a"], templates="no-such-set")
    assert e.value.code == "NotFound"
    clf = clipkit.ZeroShotClassifier(vit, ["a", "b"])
    with pytest.raises(TypeError, match="float32"):
        clf.probs(np.zeros((2, 64)))
    with pytest.raises(ValueError, match=r"\[n, 64\]"):
        clf.probs(np.zeros((2, 32), np.float32))
    with pytest.raises(ValueError, match="top_k"):
        clf.classify(np.ones((1, 64), np.float32), top_k=0)
    with pytest.raises(ValueError, match="scale"):
        clf.probs(np.ones((1, 64), np.float32), scale=-1.0)
    with pytest.raises(TypeError, match="scale"):
        clf.probs(np.ones((1, 64), np.float32), scale="big")


def test_evaluate_arguments(tmp_path, vit):
    with pytest.raises(clipkit.Error) as e:
        clipkit.evaluate(vit, str(tmp_path / "missing"))
    assert e.value.code == "NotFound"
    with pytest.raises(ValueError, match="strategies"):
        clipkit.evaluate(vit, str(tmp_path), strategies=[])
    with pytest.raises(TypeError, match="model"):
        clipkit.evaluate(None, str(tmp_path))


def test_engine_errors_of_files_and_indexes(tmp_path, vit):
    with clipkit.Index.create(str(tmp_path / "i"), vit):
        pass
    ro = clipkit.Index.open(str(tmp_path / "i"), read_only=True)
    with pytest.raises(clipkit.Error, match="read-only") as e:
        ro.add(str(IMAGES[0]))
    assert e.value.code == "InvalidArgument"
    with pytest.raises(clipkit.Error) as e:
        ro.search(like=str(tmp_path / "not-indexed.png"))
    assert e.value.code == "NotFound"
    with pytest.raises(clipkit.Error) as e:
        ro.search(text="x", templates="no-such-set")
    assert e.value.code == "NotFound"
    ro.close()
    with pytest.raises(clipkit.Error) as e:
        clipkit.ZeroShotClassifier.load(str(tmp_path / "none.clf"))
    assert e.value.code == "NotFound"
    clf = clipkit.ZeroShotClassifier(vit, ["a"])
    with pytest.raises(clipkit.Error):
        clf.save(str(tmp_path / "no" / "dir" / "x.clf"))
    with pytest.raises(clipkit.Error) as e:
        clipkit.evaluate(vit, str(DATA), strategies="no-such-set")
    assert e.value.code == "NotFound"
