"""The textures' learner of the label-efficiency bench (bench/al_features.py)."""

from __future__ import annotations

import numpy as np

from bench.al_features import GROUPS, N_FEATURES, describe, fit_predict


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


def _columns(group: str) -> slice:
    start = 0
    for name, width in GROUPS.items():
        if name == group:
            return slice(start, start + width)
        start += width
    raise KeyError(group)


def test_rotation_invariant_groups_describe_a_turned_patch_the_same() -> None:
    """The bench turns patches by 90°: the groups built to ignore that must ignore it, and the
    one that is orientation-specific (the small Gabor bank) must not (so the check can fail)."""
    rng = np.random.default_rng(1)
    xx = np.mgrid[0:28, 0:28][1]
    stripes = np.sin(xx * 1.1) + rng.normal(scale=0.3, size=(28, 28))
    stripes = ((stripes - stripes.mean()) / stripes.std()).astype(np.float32)
    x = np.stack([stripes, np.rot90(stripes).copy()])[:, None]
    f = describe(x)
    for group in ("lbp", "gabor_large_bank", "cooccurrence", "grey_levels", "gradient"):
        cols = _columns(group)
        assert np.allclose(f[0, cols], f[1, cols], rtol=1e-3, atol=1e-4), group
    small = _columns("gabor_small_bank")
    assert not np.allclose(f[0, small], f[1, small], rtol=1e-2, atol=1e-2)


def test_descriptors_tell_real_photographs_textures_apart_from_few_labels() -> None:
    """Brick, grass and gravel patches of the scikit-image photographs (as the bench cuts them):
    30 labels per class give a clearly better than chance classifier on other patches."""
    from bench.al_data import _gray, _patches

    rng = np.random.default_rng(2)
    train, test = [], []
    for name in ("brick", "grass", "gravel"):
        img = _gray(name)
        cut = int(img.shape[0] * 0.75)
        train.append(_patches(img[:cut], 30, rng))
        test.append(_patches(img[cut:], 20, rng))
    xtr = describe(np.concatenate(train)[:, None])
    xte = describe(np.concatenate(test)[:, None])
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    ytr, yte = np.repeat([0, 1, 2], 30), np.repeat([0, 1, 2], 20)
    [(probs, _)] = fit_predict((xtr - mean) / std, ytr, [(xte - mean) / std], classes=3)
    assert (probs.argmax(1) == yte).mean() >= 0.8
