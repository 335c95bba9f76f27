"""The textures' learner of the label-efficiency bench (bench/al_features.py)."""

from __future__ import annotations

import numpy as np

from bench.al_features import N_FEATURES, describe, fit_predict


def _patches(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    xx = np.mgrid[0:28, 0:28][1]
    out = []
    for _ in range(n):
        if kind == "stripes":
            p = np.sin(xx * rng.uniform(0.8, 1.2) + rng.uniform(0, 6.3))
        else:
            p = rng.normal(size=(28, 28))
        p = p + rng.normal(scale=0.2, size=p.shape)
        out.append((p - p.mean()) / p.std())
    return np.asarray(out, dtype=np.float32)[:, None]


def test_descriptors_tell_two_textures_apart_and_keep_class_columns() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([_patches("stripes", 30, rng), _patches("noise", 30, rng)])
    y = np.repeat([0, 2], 30)  # class 1 has no label: its column must stay, at 0
    f = describe(x)
    assert f.shape == (60, N_FEATURES) and np.isfinite(f).all()
    f = (f - f.mean(0)) / (f.std(0) + 1e-6)
    train = np.r_[0:20, 30:50]
    test = np.r_[20:30, 50:60]
    [(probs, emb)] = fit_predict(f[train], y[train], [f[test]], classes=3)
    assert probs.shape == (20, 3) and np.allclose(probs.sum(1), 1)
    assert (probs[:, 1] == 0).all()
    assert (probs.argmax(1) == y[test]).mean() == 1.0
    assert emb is f[test] or np.array_equal(emb, f[test])
