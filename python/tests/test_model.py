"""Model loading, embeddings and preprocessing against the reference goldens (the tolerances of
tests/model/test_vit_golden.cpp), and the equivalence of the image input kinds."""
import json
import pydoc

import numpy as np
import pytest
from PIL import Image

import clipkit
from conftest import DATA, IMAGES, expect_matches, golden, model, run_cli

VIT_FORMATS = ["models/tiny-vit.safetensors", "models/tiny-vit.pt", "models/tiny-vit-hf"]


@pytest.mark.parametrize("relative", VIT_FORMATS)
def test_vit_image_and_text_embeddings_match_golden(relative):
    m = model(relative)
    g = golden("tiny-vit")
    assert m.dim == 64 and m.resolution == 64
    assert m.logit_scale == pytest.approx(24.5133705, abs=1e-5)
    img = m.encode_pixels(g["pixel_values"].copy())
    assert img.dtype == np.float32 and img.shape == (12, 64)
    expect_matches(img, g["image_embeds"], "image_embeds")
    expect_matches(m.encode_pixels(g["pixel_values"].copy()) / 1.0, g["image_embeds"], "again")
    txt = m.encode_text(g.meta["texts"])
    assert txt.dtype == np.float32 and txt.shape == (40, 64)
    expect_matches(txt, g["text_embeds"], "text_embeds")
    expect_matches(m.encode_text(g.meta["texts"], normalize=True), g["text_embeds_normalized"], "text normalized")
    # logits as CLIP.forward computes them
    a = m.encode_pixels(g["pixel_values"].copy())
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = m.encode_text(g.meta["texts"], normalize=True)
    expect_matches(m.logit_scale * (a.astype(np.float64) @ b.T), g["logits_per_image"], "logits_per_image")


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_image_files_match_golden(name):
    m = model("models/%s.safetensors" % name)
    g = golden(name)
    files = [str(DATA / i["file"]) for i in g.meta["images"]]
    expect_matches(m.encode_image(files), g["image_embeds"], "image_embeds from files")
    expect_matches(m.encode_image(files, normalize=True), g["image_embeds_normalized"], "normalized from files")
    # preprocessing is exact: the reference transform's pixel values, bit for bit
    for i, f in enumerate(files):
        px = m.preprocess(f)
        assert px.dtype == np.float32 and px.shape == (3, 64, 64)
        np.testing.assert_array_equal(px, g["pixel_values"][i], err_msg=f)


def test_batch_size_does_not_change_results(vit):
    g = golden("tiny-vit")
    files = [str(DATA / i["file"]) for i in g.meta["images"]]
    all16 = vit.encode_image(files)
    for bs in (1, 5, 12):
        assert np.abs(vit.encode_image(files, batch_size=bs) - all16).max() <= 1e-5


def test_rn_embeddings_match_golden(rn):
    g = golden("tiny-rn")
    expect_matches(rn.encode_pixels(g["pixel_values"].copy()), g["image_embeds"], "rn image_embeds")
    expect_matches(rn.encode_text(g.meta["texts"]), g["text_embeds"], "rn text_embeds")


def test_pil_numpy_and_path_inputs_give_identical_embeddings(vit):
    paths = [str(p) for p in IMAGES]
    by_path = vit.encode_image(paths)
    pils = [Image.open(p) for p in paths]
    modes = sorted({p.mode for p in pils})
    assert {"L", "P", "RGB", "RGBA"} <= set(modes)
    np.testing.assert_array_equal(vit.encode_image(pils), by_path)
    # pathlib paths too
    np.testing.assert_array_equal(vit.encode_image(list(IMAGES)), by_path)
    # numpy arrays of the same pixels (palette images have no array form of their own)
    for i, im in enumerate(pils):
        if im.mode in ("RGB", "L", "RGBA"):
            arr = np.asarray(im)
            np.testing.assert_array_equal(vit.encode_image(arr), by_path[i : i + 1], err_msg=paths[i])
            np.testing.assert_array_equal(vit.encode_image(im), by_path[i : i + 1], err_msg=paths[i])
            np.testing.assert_array_equal(vit.preprocess(arr), vit.preprocess(paths[i]))
    # a single item and a one-item list
    np.testing.assert_array_equal(vit.encode_image(paths[0]), by_path[:1])
    # a non-contiguous array view is read correctly
    rgb = np.asarray(Image.open(paths[0]).convert("RGB"))
    np.testing.assert_array_equal(vit.encode_image(rgb[:, ::-1][:, ::-1]), vit.encode_image(rgb))


def test_pil_other_modes(vit):
    rgb = Image.open(str(IMAGES[0])).convert("RGB")
    base = vit.encode_image(rgb)
    # mode 1, I and CMYK are read in their own mode (results differ from RGB but are valid)
    for mode in ("1", "I", "CMYK", "LA"):
        e = vit.encode_image(rgb.convert(mode))
        assert e.shape == (1, 64) and np.isfinite(e).all()
    gray = rgb.convert("L")
    np.testing.assert_array_equal(vit.encode_image(gray), vit.encode_image(np.asarray(gray)))
    assert not np.array_equal(vit.encode_image(gray), base)


def test_model_info_matches_the_cli(vit):
    path = str(DATA / "models/tiny-vit.safetensors")
    want = json.loads(run_cli("info", "--model", path))
    assert vit.info == want
    assert vit.info["architecture"]["kind"] == "vit"
    assert vit.fingerprint == want["fingerprint"]


def test_dtypes_and_options():
    g = golden("tiny-vit")
    for dtype in ("f16", "int8"):
        m = model("models/tiny-vit.safetensors", dtype=dtype, threads=1)
        assert m.info["compute_dtype"] == dtype
        e = m.encode_pixels(g["pixel_values"].copy())
        cos = (e * g["image_embeds"]).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(g["image_embeds"], axis=1)
        assert cos.min() > 0.99
    m = model("models/tiny-vit.safetensors", activation="gelu")
    assert m.info["architecture"]["activation"] == "gelu"


def test_empty_inputs(vit):
    assert vit.encode_image([]).shape == (0, 64)
    assert vit.encode_text([]).shape == (0, 64)
    assert vit.encode_pixels(np.zeros((0, 3, 64, 64), np.float32)).shape == (0, 64)


def test_outputs_are_owned_by_python(vit):
    e = vit.encode_text(["a"])
    assert e.flags.c_contiguous and e.flags.writeable
    e[:] = 0  # writable, and nothing else sees it
    assert vit.encode_text(["a"]).any()


def test_help_shows_docstrings():
    text = pydoc.render_doc(clipkit.Model)
    for name in ("encode_image", "encode_text", "encode_pixels", "preprocess", "info"):
        assert name in text
    assert "Embeds images" in text
    assert "Loads a CLIP model" in pydoc.render_doc(clipkit.load)
    for obj in (clipkit.ZeroShotClassifier, clipkit.Index, clipkit.SearchHit, clipkit.tokenize, clipkit.evaluate,
                clipkit.template_sets, clipkit.label_sets, clipkit.Error):
        assert obj.__doc__ and len(obj.__doc__) > 20, obj
    for cls in (clipkit.Model, clipkit.ZeroShotClassifier, clipkit.Index):
        for name, member in vars(cls).items():
            if not name.startswith("_"):
                assert member.__doc__, "%s.%s has no docstring" % (cls.__name__, name)
