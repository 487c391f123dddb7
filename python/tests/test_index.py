"""clipkit.Index: search order checked against brute force (as tests/search does), the hits'
fields against `clipkit search --format json`, and maintenance."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import clipkit
from conftest import DATA, IMAGES, run_cli


@pytest.fixture()
def pics(tmp_path):
    d = tmp_path / "pics"
    (d / "sub").mkdir(parents=True)
    files = []
    for p in IMAGES:
        shutil.copy(p, d / p.name)
        files.append(str(d / p.name))
    shutil.copy(IMAGES[1], d / "sub" / "copy_of_01.jpg")
    return d, files


def brute_force(vit, files, q):
    e = vit.encode_image(files, normalize=True).astype(np.float64)
    s = e @ np.asarray(q, np.float64)
    order = sorted(range(len(files)), key=lambda i: -s[i])  # stable: ties keep file order
    return [files[i] for i in order], [s[i] for i in order]


def test_add_search_and_maintenance(tmp_path, pics, vit):
    d, files = pics
    idx = clipkit.Index.create(str(tmp_path / "idx"), vit)
    r = idx.add([str(d)], recursive=True, tags=["fixture"])
    assert r == {"candidates": 13, "added": 12, "updated": 0, "duplicates": 1, "skipped": 0, "failed": 0, "failures": []}
    assert idx.add(str(d), recursive=True)["skipped"] == 13
    info = idx.info
    assert info["items"] == 12 and info["files"] == 13 and info["dim"] == 64
    assert info["model_fingerprint"] == vit.fingerprint
    assert len(idx) == 12
    assert idx.verify()["ok"]

    # by text: brute-force order and scores
    q = vit.encode_text("a red sunset", normalize=True)[0]
    want, scores = brute_force(vit, files, q)
    hits = idx.search(text="a red sunset", k=12)
    assert [h.rank for h in hits] == list(range(1, 13))
    assert [h.paths[0] for h in hits] == want
    for h, s in zip(hits, scores):
        assert h.score == pytest.approx(s, abs=1e-5)
    # the same query as a vector
    assert [h.id for h in idx.search(vector=q, k=12)] == [h.id for h in hits]
    # by image: the image itself first, then brute-force order; a PIL image of it is the same query
    probe = files[6]
    by_file = idx.search(image=probe, k=5)
    want, _ = brute_force(vit, files, vit.encode_image(probe, normalize=True)[0])
    assert [h.paths[0] for h in by_file] == want[:5]
    assert by_file[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.id for h in idx.search(image=Image.open(probe), k=5)] == [h.id for h in by_file]
    # more like this: excludes the item and its duplicate path
    like = idx.search(like=str(d / "sub" / "copy_of_01.jpg"), k=3)
    others = [f for f in files if f != files[1]]
    want, _ = brute_force(vit, others, vit.encode_image(files[1], normalize=True)[0])
    assert [h.paths[0] for h in like] == want[:3]
    assert [h.id for h in idx.search(like=like[0].id, k=3)] != []
    # filters
    assert idx.search(text="x", tags=["nope"]) == []
    assert len(idx.search(text="x", tags=["fixture"], k=50)) == 12
    sub = idx.search(text="x", path_prefix=str(d / "sub"), k=50)
    assert [h.path for h in sub] == [str(d / "sub" / "copy_of_01.jpg")]
    assert all(h.score >= 0.5 for h in idx.search(text="x", min_score=0.5, k=50))
    # expression syntax
    expr = idx.search(query="image:%s + 0.5*text:in red - text:indoors" % files[3], k=4)
    assert len(expr) == 4

    # removal
    assert idx.remove([files[0]]) == 1
    assert idx.info["items"] == 11
    assert idx.remove(str(d / "sub")) == 1
    assert idx.info["files"] == 11
    assert idx.verify()["ok"]
    idx.close()
    with pytest.raises(ValueError, match="closed"):
        idx.search(text="x")


def test_hits_have_the_cli_json_fields(tmp_path, pics, vit):
    d, files = pics
    dir_ = str(tmp_path / "idx")
    with clipkit.Index.create(dir_, vit) as idx:
        idx.add([str(d)], recursive=True, tags=["t1"])
    lines = run_cli("search", dir_, "--text", "a red sunset", "--k", "6", "--format", "json").splitlines()
    want = [json.loads(line) for line in lines]
    with clipkit.Index.open(dir_, read_only=True) as idx:
        hits = idx.search(text="a red sunset", k=6)
        got = [h.to_dict() for h in hits]
        assert idx.model.fingerprint == vit.fingerprint  # loaded from the recorded path
    assert len(got) == 6
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for key in w:
            if key == "score":
                assert g[key] == pytest.approx(w[key], abs=1e-6)
            else:
                assert g[key] == w[key], key
    h = hits[0]
    assert (h.rank, h.id, h.path, h.sha256, h.tags) == (want[0]["rank"], want[0]["id"], want[0]["path"],
                                                        want[0]["sha256"], ["t1"])
    info = json.loads(run_cli("index", "info", dir_, "--format", "json"))
    with clipkit.Index.open(dir_) as idx:
        assert idx.info == info


def test_index_kinds_and_rebuild(tmp_path, pics, vit):
    d, _ = pics
    with clipkit.Index.create(str(tmp_path / "h"), vit, kind="hnsw") as idx:
        idx.add(str(d))
        assert idx.info["kind"] == "hnsw"
        top = idx.search(text="a cat", k=3)
        idx.rebuild("flat")
        assert idx.info["kind"] == "flat"
        assert [h.id for h in idx.search(text="a cat", k=3)] == [h.id for h in top]


def test_index_errors(tmp_path, pics, vit, rn):
    d, files = pics
    with pytest.raises(clipkit.Error) as e:
        clipkit.Index.open(str(tmp_path / "missing"))
    assert e.value.code == "NotFound"
    dir_ = str(tmp_path / "idx")
    idx = clipkit.Index.create(dir_, vit)
    with pytest.raises(clipkit.Error):
        clipkit.Index.create(dir_, vit)  # already an index
    with pytest.raises(clipkit.Error):
        clipkit.Index.open(dir_)  # the writer's lock is held
    with pytest.raises(clipkit.Error) as e:
        clipkit.Index.create(str(tmp_path / "bad"), vit, kind="no-such-kind")
    broken = d / "broken.png"
    broken.write_bytes(b"not a png")
    r = idx.add([str(broken), files[0]])
    assert r["added"] == 1 and r["failed"] == 1 and r["failures"][0]["path"].endswith("broken.png")
    assert "not a supported image" in r["failures"][0]["reason"]
    with pytest.raises(ValueError, match="give a query"):
        idx.search()
    with pytest.raises(ValueError, match="k"):
        idx.search(text="x", k=0)
    with pytest.raises(TypeError, match="vector"):
        idx.search(vector=[0.0] * 64)
    with pytest.raises(ValueError, match="vector"):
        idx.search(vector=np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="like"):
        idx.search(like=1.5)
    with pytest.raises(TypeError, match="paths"):
        idx.add(3)
    with pytest.raises(clipkit.Error) as e:
        idx.search(query="bogus:x")
    idx.close()
    with pytest.raises(clipkit.Error) as e:
        clipkit.Index.open(dir_, model=rn)
    assert e.value.code == "Mismatch"
    with pytest.raises(TypeError, match="model"):
        clipkit.Index.create(str(tmp_path / "x"), "not a model")
