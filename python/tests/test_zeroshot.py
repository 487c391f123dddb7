"""Zero-shot classification against the reference goldens (the tolerances of
tests/zeroshot/test_model_golden.cpp), classifier files, built-in sets and evaluation."""
import json
import os
import shutil

import numpy as np
import pytest

import clipkit
from conftest import DATA, ROOT, golden, model, run_cli


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_classifier_matches_reference(name):
    m = model("models/%s.safetensors" % name)
    g = golden(name)
    zs = g.meta["zeroshot"]
    clf = clipkit.ZeroShotClassifier(m, zs["classes"], templates=zs["templates"], batch_size=16)
    assert clf.labels == zs["classes"]
    assert clf.num_classes == 10 and clf.dim == 64
    assert clf.fingerprint == m.fingerprint
    assert clf.logit_scale == pytest.approx(g.meta["logit_scale_exp"], abs=1e-4)
    w = clf.class_embeddings.astype(np.float64)
    want = g["zeroshot.class_embeds"].astype(np.float64)
    cos = (w * want).sum(1) / np.linalg.norm(w, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999
    img = m.encode_pixels(g["pixel_values"].copy())
    for suffix, scale in (("100", 100.0), ("scale", None)):
        p = clf.probs(img, scale=scale)
        assert p.dtype == np.float32 and p.shape == (12, 10)
        assert np.abs(p - g["zeroshot.probs_" + suffix]).max() <= 1e-5
        top = clf.classify(img, top_k=5, scale=scale)
        assert len(top) == 12
        for i, row in enumerate(top):
            assert [zs["classes"].index(label) for label, _ in row] == g["zeroshot.top5_" + suffix][i].tolist()
            for label, prob in row:
                assert prob == pytest.approx(float(p[i, zs["classes"].index(label)]), abs=1e-7)


def test_images_files_and_embeddings_give_the_same_probs(vit):
    g = golden("tiny-vit")
    zs = g.meta["zeroshot"]
    clf = clipkit.ZeroShotClassifier(vit, zs["classes"], templates=zs["templates"])
    files = [str(DATA / i["file"]) for i in g.meta["images"]]
    by_file = clf.probs(files, scale=100)
    assert np.abs(by_file - g["zeroshot.probs_100"]).max() <= 1e-5
    emb = vit.encode_image(files)
    np.testing.assert_allclose(clf.probs(emb, scale=100), by_file, atol=1e-6)
    np.testing.assert_allclose(clf.probs(emb[0], scale=100), by_file[:1], atol=1e-6)


def test_save_load_and_mismatch(tmp_path, vit, rn):
    clf = clipkit.ZeroShotClassifier(vit, ["cat", ["dog", "puppy"], "bird"], templates="photo")
    assert clf.labels == ["cat", "dog", "bird"]
    assert clf.templates == ["a photo of a {}."]
    path = str(tmp_path / "animals.clf")
    clf.save(path)
    back = clipkit.ZeroShotClassifier.load(path, vit)
    assert back.labels == clf.labels and back.templates == clf.templates
    np.testing.assert_array_equal(back.class_embeddings, clf.class_embeddings)
    emb = vit.encode_image(str(DATA / "images/00_astronaut.png"))
    np.testing.assert_array_equal(back.probs(emb), clf.probs(emb))
    no_model = clipkit.ZeroShotClassifier.load(path)
    assert no_model.model is None
    np.testing.assert_array_equal(no_model.probs(emb), clf.probs(emb))
    with pytest.raises(ValueError, match="no model"):
        no_model.probs(str(DATA / "images/00_astronaut.png"))
    assert back.model_name == clf.model_name == str(DATA / "models/tiny-vit.safetensors")
    with pytest.raises(clipkit.Error) as e:
        clipkit.ZeroShotClassifier.load(path, rn)
    assert e.value.code == "Mismatch"
    assert "built for model " + clf.model_name + " (fingerprint " + vit.fingerprint + ")" in str(e.value)
    assert "the loaded model is " + str(DATA / "models/tiny-rn.safetensors") + " (fingerprint " in str(e.value)
    (tmp_path / "broken.clf").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(clipkit.Error) as e:
        clipkit.ZeroShotClassifier.load(str(tmp_path / "broken.clf"))
    assert "broken.clf" in str(e.value)


def test_label_and_template_forms(tmp_path, vit):
    a = clipkit.ZeroShotClassifier(vit, "cat,dog|puppy")
    b = clipkit.ZeroShotClassifier(vit, ["cat", ["dog", "puppy"]], templates=["a photo of a {}."])
    np.testing.assert_array_equal(a.class_embeddings, b.class_embeddings)
    f = tmp_path / "labels.txt"
    f.write_text("cat\ndog|puppy\n")
    t = tmp_path / "templates.txt"
    t.write_text("a photo of a {}.\n")
    c = clipkit.ZeroShotClassifier(vit, str(f), templates=t)
    np.testing.assert_array_equal(c.class_embeddings, a.class_embeddings)
    pat = clipkit.ZeroShotClassifier(vit, "patterns")
    assert pat.labels == clipkit.label_sets()["patterns"]


def test_builtin_sets():
    ts = clipkit.template_sets()
    assert ts["photo"] == ["a photo of a {}."]
    assert ts["imagenet80"] == json.loads((DATA / "imagenet_templates.json").read_text())
    assert ts["imagenet7"] == json.loads((DATA / "imagenet_templates_selected.json").read_text())
    ls = clipkit.label_sets()
    assert ls["imagenet1000"] == json.loads((DATA / "imagenet_classes.json").read_text())
    assert "patterns" in ls and len(ls["patterns"]) == 8


def _pattern_dataset(tmp_path):
    labels = json.loads((ROOT / "examples/patterns/labels.json").read_text())
    ds = tmp_path / "patterns-by-class"
    for name, meta in sorted(labels.items()):
        d = ds / meta["pattern"].replace(" ", "_")
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "examples/patterns" / name, d / name)
    return ds


def test_evaluate_matches_the_cli_report(tmp_path, demo):
    ds = _pattern_dataset(tmp_path)
    report = tmp_path / "r.json"
    mpath = str(ROOT / "models/demo/patterns-vit.safetensors")
    run_cli("eval", "--model", mpath, "--dataset", ds, "--strategies", "none,photo,patterns", "--report", report)
    want = json.loads(report.read_text())
    got = clipkit.evaluate(demo, ds, strategies=["none", "photo", "patterns"])
    assert got.keys() == want.keys()
    for key in want:
        if key != "model":
            assert got[key] == want[key], key
    assert got["images"] == 16
    assert got["strategies"][2]["top1"] > 0.5  # the demo model does classify its patterns
    # template selection runs too
    sel = clipkit.evaluate(demo, ds, strategies=[], select_from="patterns", max_templates=2)
    assert len(sel["selection"]["steps"]) == 2


@pytest.mark.parametrize("method", ["linear-probe", "tip-adapter"])
def test_trained_classifier_from_the_cli(tmp_path, demo, method):
    ds = _pattern_dataset(tmp_path)
    mpath = str(ROOT / "models/demo/patterns-vit.safetensors")
    out = tmp_path / (method + ".clf")
    run_cli("classifier", "train", "--model", mpath, "--train", ds, "--method", method, "--no-cache", "--out", out)
    clf = clipkit.ZeroShotClassifier.load(str(out), demo)
    lines = run_cli("classify", "--model", mpath, "--classifier", out, "--format", "json", "-k", "1", ds).splitlines()
    assert len(lines) == 16
    for line in lines:
        row = json.loads(line)
        probs = clf.probs(row["image"])[0]
        best = int(np.argmax(probs))
        assert clf.labels[best] == row["top"][0]["label"]
        assert abs(float(probs[best]) - row["top"][0]["prob"]) < 1e-5
