"""The label-efficiency bench's protocol (bench/active_learning.py) on a small real set."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench import active_learning as al
from bench import al_data
from bench.al_data import ImageSet


@pytest.fixture
def small_set(monkeypatch: pytest.MonkeyPatch) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's real 8×8 digits as a bench set, its pixels as the 'descriptors'."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    test, pool = order[:500], order[500:]
    data = ImageSet(
        "small",
        tuple(str(d) for d in range(10)),
        x[pool].reshape(-1, 1, 8, 8).astype(np.float32),
        y[pool].astype(np.int64),
        x[test].reshape(-1, 1, 8, 8).astype(np.float32),
        y[test].astype(np.int64),
    )
    monkeypatch.setitem(al.LEARNERS, "small", "texture-lr")
    monkeypatch.setitem(al_data.DATASETS, "small", lambda seed: data)
    mean, std = x[pool].mean(0), x[pool].std(0) + 1e-6
    return (x[pool] - mean) / std, (x[test] - mean) / std


def test_a_longer_budget_keeps_the_first_400_labels_and_stops_at_400(
    small_set: tuple[np.ndarray, np.ndarray],
) -> None:
    long = al.curve("cluster_margin", "small", 0, al.Protocol(budget=520), small_set)
    short = al.curve("cluster_margin", "small", 0, al.Protocol(budget=400), small_set)
    labels = [n for n, _ in long]
    assert 400 in labels and labels[-1] == 520
    assert all(b - a <= 40 for a, b in itertools.pairwise(labels))
    assert [p for p in long if p[0] <= 400] == short
    rnd = al.curve("random", "small", 0, al.Protocol(budget=520), small_set)
    row = al.summarise({"random": rnd, "cluster_margin": long}, 520)
    assert row["target_accuracy"] == rnd[-1][1]
    assert row["ratio"]["random"] == 1.0
    # the real learner on real digits: cluster-margin gets there with fewer labels than random
    assert row["ratio"]["cluster_margin"] is not None and row["ratio"]["cluster_margin"] < 1.0
