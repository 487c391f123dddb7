"""clipkit.tokenize against the reference token ids (the fixtures' clip.tokenize output)."""
import json

import numpy as np
import pytest

import clipkit
from conftest import DATA, golden


def test_golden_texts_tokenize_to_the_reference_ids():
    g = golden("tiny-vit")
    ids = clipkit.tokenize(g.meta["texts"])
    assert ids.dtype == np.int32 and ids.shape == (40, 77)
    np.testing.assert_array_equal(ids, g["input_ids"])
    np.testing.assert_array_equal(ids, np.array(g.meta["input_ids"], dtype=np.int32))


def test_zeroshot_prompts_tokenize_to_the_reference_ids():
    g = golden("tiny-vit")
    zs = g.meta["zeroshot"]
    prompts = [t.replace("{}", c) for c in zs["classes"] for t in zs["templates"]]
    ids = clipkit.tokenize(prompts).reshape(len(zs["classes"]), len(zs["templates"]), 77)
    np.testing.assert_array_equal(ids, g["zeroshot.input_ids"])


def test_tokenizer_cases():
    cases = json.loads((DATA / "tokenizer_cases.json").read_text())
    ctx = cases["context_length"]
    # ids of ftfy-sensitive strings were computed without ftfy (FIXTURES.md); clip.tokenize repairs
    # text first, as clipkit.tokenize does, so only the others are comparable.
    plain = [c for c in cases["cases"] if not c["ftfy_sensitive"]]
    assert len(plain) > 2500
    got = clipkit.tokenize([c["text"] for c in plain], context_length=ctx)
    want = np.array([c["ids"] for c in plain], dtype=np.int32)
    bad = np.nonzero((got != want).any(axis=1))[0]
    assert bad.size == 0, "cases %s differ" % [plain[i]["id"] for i in bad[:10]]


def test_context_length_and_truncation():
    ids = clipkit.tokenize("a photo of a cat.", context_length=10)
    assert ids.shape == (1, 10)
    assert ids[0, 0] == 49406 and 49407 in ids[0]
    long = " ".join(["word"] * 100)
    t = clipkit.tokenize([long])
    assert t[0, -1] == 49407
    with pytest.raises(clipkit.Error) as e:
        clipkit.tokenize([long], truncate=False)
    assert e.value.code == "Limit"
    with pytest.raises(ValueError, match="context_length"):
        clipkit.tokenize("a", context_length=1)
