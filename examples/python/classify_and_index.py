#!/usr/bin/env python3
"""Classifies the shipped pattern pictures with the demo model, then builds a small search index.

    PYTHONPATH=build/python python3 examples/python/classify_and_index.py [INDEX_DIR]

Run from the repository root (or pass --root). Without INDEX_DIR the index goes to a temporary
folder that is removed at the end.
"""
import argparse
import json
import pathlib
import tempfile

import clipkit


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index_dir", nargs="?", help="where to create the index (default: a temporary folder)")
    ap.add_argument("--root", default=".", help="repository root (default: the current folder)")
    args = ap.parse_args()
    root = pathlib.Path(args.root)
    pictures = sorted((root / "examples" / "patterns").glob("*.png"))
    truth = json.loads((root / "examples" / "patterns" / "labels.json").read_text())

    model = clipkit.load(str(root / "models" / "demo" / "patterns-vit.safetensors"))
    print("model: %s, %d-dimensional embeddings, %dx%d input" % (
        model.info["architecture"]["kind"], model.dim, model.resolution, model.resolution))

    # Zero-shot: the built-in "patterns" label set comes with its own prompt templates.
    clf = clipkit.ZeroShotClassifier(model, "patterns")
    embeddings = model.encode_image(pictures, normalize=True)  # encode once, classify from rows
    correct = 0
    for path, top in zip(pictures, clf.classify(embeddings, top_k=2, scale=100)):
        want = truth[path.name]["pattern"]
        correct += top[0][0] == want
        guesses = ", ".join("%s %.2f" % (label, prob) for label, prob in top)
        print("  %-32s %-14s -> %s" % (path.name, want, guesses))
    print("top-1: %d of %d" % (correct, len(pictures)))

    # A small index of the same pictures, searched by text and by example.
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = args.index_dir or str(pathlib.Path(tmp) / "patterns.idx")
        with clipkit.Index.create(index_dir, model) as index:
            report = index.add([str(p) for p in pictures], tags=["demo"])
            print("indexed: %d added, %d failed" % (report["added"], report["failed"]))
            for query in ("striped", "polka dot", "leopard print"):
                hits = index.search(text=query, templates="patterns", k=3)
                print("  %-14s %s" % (query, ", ".join("%s (%.3f)" % (pathlib.Path(h.path).name, h.score) for h in hits)))
            like = index.search(like=str(pictures[0].resolve()), k=2)
            print("  like %s: %s" % (pictures[0].name, ", ".join(pathlib.Path(h.path).name for h in like)))


if __name__ == "__main__":
    main()
