"""Multilingual text towers through clipkit.load's text_model= and tokenizer= options, against
tests/data/multilingual/golden with the tolerances of tests/multilingual/test_xlmr_golden.cpp."""
import json
import pathlib
import shutil

import numpy as np
import pytest

import clipkit
from conftest import DATA, expect_matches, read_safetensors

ML = DATA / "multilingual"


def _golden(name):
    meta = json.loads((ML / "golden" / (name + ".json")).read_text())
    return meta, read_safetensors(ML / "golden" / (name + ".safetensors"))


def _image_files(entries):
    return [str(DATA / "images" / pathlib.PurePath(e if isinstance(e, str) else e["file"]).name) for e in entries]


@pytest.fixture(scope="module")
def pair():
    return clipkit.load(DATA / "models" / "tiny-vit.safetensors", text_model=ML / "tiny-mclip")


def test_paired_mclip_text_embeddings_and_zero_shot_match_golden(pair):
    meta, t = _golden("tiny-mclip")
    assert pair.dim == 64
    assert pair.info["text_model"] == str(ML / "tiny-mclip")
    assert pair.info["tokenizer"] == str(ML / "tiny-mclip" / "sentencepiece.bpe.model")
    assert pair.info["architecture"]["text_kind"] == "xlm-roberta"
    alone = clipkit.load(ML / "tiny-mclip")
    assert pair.fingerprint not in (alone.fingerprint, clipkit.load(DATA / "models" / "tiny-vit.safetensors").fingerprint)
    expect_matches(pair.encode_text(meta["texts"]), t["text_embeds"], "text_embeds")
    expect_matches(pair.encode_text(meta["texts"], normalize=True), t["text_embeds_normalized"], "normalized")

    zs = meta["zeroshot"]
    clf = clipkit.ZeroShotClassifier(pair, zs["classes"], zs["templates"])
    expect_matches(clf.class_embeddings, t["zeroshot.class_embeds"], "class_embeds")
    probs = clf.probs(_image_files(zs["images"]), scale=100.0)
    np.testing.assert_allclose(probs, t["zeroshot.probs_100"], rtol=0, atol=1e-4)
    for i, top in enumerate(clf.classify(_image_files(zs["images"]), top_k=5, scale=100.0)):
        assert [label for label, _ in top] == [zs["classes"][c] for c in zs["top5_100"][i]], "image %d" % i


def test_tokenizer_option_names_the_sentencepiece_model(tmp_path):
    meta, t = _golden("tiny-xlmr-clip")
    ckpt = tmp_path / "xlmr.safetensors"
    shutil.copyfile(ML / "tiny-xlmr-clip.safetensors", ckpt)  # no tokenizer beside it
    with pytest.raises(clipkit.Error, match="sentencepiece.bpe.model"):
        clipkit.load(ckpt)
    m = clipkit.load(ckpt, tokenizer=ML / "sentencepiece.bpe.model")
    assert m.info["tokenizer"] == str(ML / "sentencepiece.bpe.model")
    expect_matches(m.encode_text(meta["texts"]), t["text_embeds"], "open_clip XLM-R text_embeds")


def test_bad_text_model_arguments():
    vit = DATA / "models" / "tiny-vit.safetensors"
    with pytest.raises(clipkit.Error, match="96.*64|64.*96"):  # both embedding sizes named
        clipkit.load(vit, text_model=ML / "tiny-xlmr-clip.safetensors")
    with pytest.raises(TypeError, match="text_model"):
        clipkit.load(vit, text_model=3)
    with pytest.raises(clipkit.Error):
        clipkit.load(ML / "tiny-mclip").encode_image(_image_files(["00_astronaut.png"]))
