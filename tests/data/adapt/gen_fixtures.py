#!/usr/bin/env python3
"""Reference outputs for the few-shot training tests (tests/adapt/).

Run once with Debian's Python and scikit-learn (apt-get install python3-sklearn):

    /usr/bin/python3 tests/data/adapt/gen_fixtures.py tests/data/adapt

Writes, for each case, the inputs (L2-normalised float32 features and int32 labels) and
scikit-learn's LogisticRegression(C=..., solver="lbfgs") probabilities and predictions on held-out
features, plus a Tip-Adapter case whose logits are computed here with NumPy from the formula
    logits = s * f W^T + alpha * exp(-beta * (1 - f K^T)) L.
The fits use a tight tolerance (tol=1e-10, max_iter=100000) so that the reference is the optimum of
scikit-learn's objective, not an early stop. The tests need only the written files.
"""
import json
import sys

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def features(rng, means, per_class, noise):
    xs, ys = [], []
    for c, m in enumerate(means):
        xs.append(m + noise * rng.standard_normal((per_class, means.shape[1])))
        ys += [c] * per_class
    return unit(np.concatenate(xs)), np.array(ys, dtype=np.int32)


def logreg_case(out, name, rng, classes, dim, train_per_class, test_per_class, noise, c_values):
    means = rng.standard_normal((classes, dim))
    xtr, ytr = features(rng, means, train_per_class, noise)
    xte, yte = features(rng, means, test_per_class, noise)
    np.save(f"{out}/{name}_train_x.npy", xtr)
    np.save(f"{out}/{name}_train_y.npy", ytr)
    np.save(f"{out}/{name}_test_x.npy", xte)
    meta = {"classes": classes, "dim": dim, "train": len(ytr), "test": len(yte), "C": c_values}
    for i, c in enumerate(c_values):
        clf = LogisticRegression(C=c, solver="lbfgs", tol=1e-10, max_iter=100000)
        clf.fit(xtr.astype(np.float64), ytr)
        proba = clf.predict_proba(xte.astype(np.float64))
        np.save(f"{out}/{name}_C{i}_proba.npy", np.ascontiguousarray(proba, dtype=np.float64))
        np.save(f"{out}/{name}_C{i}_pred.npy", clf.predict(xte.astype(np.float64)).astype(np.int32))
        meta[f"C{i}_iterations"] = int(np.max(clf.n_iter_))
    return meta


def tip_case(out, rng):
    classes, dim, shots, queries = 4, 8, 3, 10
    w = unit(rng.standard_normal((classes, dim)))
    keys = unit(rng.standard_normal((classes * shots, dim)))
    labels = np.repeat(np.arange(classes, dtype=np.int32), shots)
    f = unit(rng.standard_normal((queries, dim)))
    alpha, beta, scale = 1.7, 5.5, 100.0
    onehot = np.eye(classes)[labels]
    f64, w64, k64 = f.astype(np.float64), w.astype(np.float64), keys.astype(np.float64)
    logits = scale * f64 @ w64.T + alpha * np.exp(-beta * (1.0 - f64 @ k64.T)) @ onehot
    np.save(f"{out}/tip_class_w.npy", w)
    np.save(f"{out}/tip_keys.npy", keys)
    np.save(f"{out}/tip_labels.npy", labels)
    np.save(f"{out}/tip_queries.npy", f)
    np.save(f"{out}/tip_logits.npy", logits)
    return {"alpha": alpha, "beta": beta, "scale": scale}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    rng = np.random.default_rng(20261207)
    meta = {"sklearn": sklearn.__version__, "numpy": np.__version__,
            "estimator": "LogisticRegression(C=C, solver='lbfgs', tol=1e-10, max_iter=100000)"}
    meta["multi"] = logreg_case(out, "multi", rng, 5, 16, 12, 8, 0.9, [0.1, 1.0, 10.0, 100.0])
    meta["binary"] = logreg_case(out, "binary", rng, 2, 12, 15, 10, 1.2, [0.5, 5.0])
    meta["tip"] = tip_case(out, rng)
    with open(f"{out}/fixtures.json", "w") as fh:
        json.dump(meta, fh, indent=1, sort_keys=True)
        fh.write("\n")


if __name__ == "__main__":
    main()
