"""Properties of the batch-selection strategies (trainer/selection.py), on constructed pools."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.selection import (
    STRATEGIES,
    Pool,
    SelectionError,
    entropy_scores,
    kcenter_greedy,
    label_ratio,
    labels_to_reach,
    least_confidence_scores,
    margin_scores,
    select,
)


def _blobs(
    centres: np.ndarray, per: int, spread: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + spread * rng.standard_normal((per, centres.shape[1])) for c in centres])
    return x, np.repeat(np.arange(len(centres)), per)


def _probs(n: int, classes: int, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).random((n, classes)) ** 3
    return p / p.sum(axis=1, keepdims=True)


def test_uncertainty_scores_when_certain_or_uniform() -> None:
    certain, uniform = [1.0, 0.0, 0.0], [1 / 3] * 3
    p = np.array([certain, uniform, [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(margin_scores(p), [0.0, 1.0, 1.0])
    np.testing.assert_allclose(entropy_scores(p), [0.0, 1.0, np.log(2) / np.log(3)])
    np.testing.assert_allclose(least_confidence_scores(p), [0.0, 1.0, 0.75])


def test_uncertainty_scores_when_rows_are_unnormalised_or_bad() -> None:
    p = np.array([[2.0, 2.0], [0.0, 0.0], [np.nan, 1.0], [-1.0, 3.0]])
    np.testing.assert_allclose(margin_scores(p), [1.0, 1.0, 0.0, 0.0])


def test_margin_selection_takes_the_smallest_margins_first() -> None:
    p = np.array([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3], [0.5, 0.5]])
    assert select("margin", Pool(p), 2).tolist() == [3, 1]


def test_kcenter_when_pool_is_clusters_takes_one_per_cluster() -> None:
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [20, 20]], dtype=float)
    x, which = _blobs(centres, per=30, spread=0.3)
    picked = kcenter_greedy(x, 5)
    assert sorted(which[picked].tolist()) == [0, 1, 2, 3, 4]


def test_kcenter_covers_the_pool_within_twice_the_optimal_radius() -> None:
    # Greedy k-centre is a 2-approximation; with k points on a grid the optimum is known.
    g = np.stack(np.meshgrid(np.arange(0, 40, 10.0), np.arange(0, 40, 10.0)), -1).reshape(-1, 2)
    x, _ = _blobs(g, per=20, spread=1.0, seed=3)
    picked = kcenter_greedy(x, len(g))
    radius = np.linalg.norm(x[:, None] - x[picked][None], axis=2).min(axis=1).max()
    optimal_at_most = np.linalg.norm(x[:, None] - g[None], axis=2).min(axis=1).max()
    assert radius <= 2 * optimal_at_most


def test_kcenter_when_labelled_avoids_what_is_covered() -> None:
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)
    x, which = _blobs(centres, per=20, spread=0.3)
    pool = Pool(_probs(len(x), 3), embeddings=x, labelled_embeddings=centres[:2])
    picked = select("kcenter", pool, 1)
    assert which[picked].tolist() == [2]


def test_kcenter_when_every_point_is_the_same_still_picks_distinct() -> None:
    x = np.zeros((6, 4))
    assert sorted(kcenter_greedy(x, 6).tolist()) == list(range(6))


def test_cluster_margin_spreads_over_clusters_where_margin_piles_up() -> None:
    # Cluster 0 holds the 30 most uncertain samples; clusters 1-4 are a little less uncertain,
    # their members interleaved in margin order.
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [20, 0]], dtype=float)
    x, which = _blobs(centres, per=30, spread=0.3)
    gap = np.where(which == 0, 0.01, 0.05) + 0.0001 * (np.arange(len(x)) % 30)
    probs = np.stack([0.5 + gap / 2, 0.5 - gap / 2], axis=1)
    pool = Pool(probs, embeddings=x)
    by_margin = select("margin", pool, 5)
    assert set(which[by_margin].tolist()) == {0}
    by_cluster = select("cluster_margin", pool, 5, candidates_factor=10)
    assert sorted(which[by_cluster].tolist()) == [0, 1, 2, 3, 4]


def test_cluster_margin_only_takes_uncertain_candidates() -> None:
    x, _ = _blobs(np.array([[0, 0], [10, 0]], dtype=float), per=50, spread=0.3)
    margin = margin_scores(p := _probs(len(x), 4, seed=2))
    picked = select("cluster_margin", Pool(p, embeddings=x), 4, candidates_factor=2)
    top8 = set(np.argsort(-margin, kind="stable")[:8].tolist())
    assert set(picked.tolist()) <= top8


def test_balance_when_one_class_dominates_the_uncertain_deals_over_classes() -> None:
    n = 90
    probs = np.zeros((n, 3))
    probs[:60] = [0.51, 0.49, 0.0]  # class 0 predicted, all very uncertain
    probs[60:75] = [0.1, 0.8, 0.1]
    probs[75:] = [0.1, 0.1, 0.8]
    pool = Pool(probs, labelled_classes=[1, 1, 1])  # class 1 has labels already
    picked = select("margin", pool, 8, balance=True)
    predicted = probs[picked].argmax(axis=1)
    # classes 0 and 2 catch up with class 1's three labels first, then all take turns
    assert predicted.tolist() == [0, 2, 0, 2, 0, 2, 0, 1]
    assert select("margin", pool, 8).tolist() == list(range(8))


def test_balance_when_a_class_runs_out_fills_from_the_others() -> None:
    probs = np.array([[0.9, 0.1]] * 5 + [[0.2, 0.8]])
    picked = select("entropy", Pool(probs), 4, balance=True)
    assert len(set(picked.tolist())) == 4 and 5 in picked


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("balance", [False, True])
def test_every_strategy_is_deterministic_and_returns_k_distinct(
    strategy: str, balance: bool
) -> None:
    x, _ = _blobs(np.eye(4) * 5, per=25, spread=1.0)
    pool = Pool(_probs(len(x), 4, seed=1), embeddings=x, labelled_embeddings=x[:3])
    a = select(strategy, pool, 12, seed=5, balance=balance)
    b = select(strategy, pool, 12, seed=5, balance=balance)
    assert a.tolist() == b.tolist()
    assert len(set(a.tolist())) == 12 and a.min() >= 0 and a.max() < len(x)


def test_random_depends_on_the_seed() -> None:
    pool = Pool(_probs(200, 3))
    assert (
        select("random", pool, 10, seed=1).tolist() != select("random", pool, 10, seed=2).tolist()
    )


def test_k_beyond_the_pool_returns_all_and_zero_returns_none() -> None:
    pool = Pool(_probs(5, 3))
    assert sorted(select("margin", pool, 50).tolist()) == [0, 1, 2, 3, 4]
    assert select("margin", pool, 0).tolist() == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: select("nope", Pool(_probs(4, 2)), 1), "unknown selection strategy"),
        (lambda: select("kcenter", Pool(_probs(4, 2)), 1), "needs embeddings"),
        (lambda: select("margin", Pool(_probs(4, 2)), -1), "k must be"),
        (lambda: Pool(_probs(4, 2), embeddings=np.zeros((3, 2))), "one row per pool sample"),
        (lambda: Pool(np.zeros(4)), "probs must be"),
        (
            lambda: Pool(
                _probs(4, 2), embeddings=np.zeros((4, 2)), labelled_embeddings=np.zeros((1, 3))
            ),
            "labelled_embeddings",
        ),
    ],
)
def test_bad_requests_raise_selection_error(call: object, message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        call()  # type: ignore[operator]


def test_labels_to_reach_interpolates_between_rounds() -> None:
    curve = [(20, 0.5), (60, 0.7), (100, 0.9)]
    assert labels_to_reach(curve, 0.8) == pytest.approx(80.0)
    assert labels_to_reach(curve, 0.4) == 20.0
    assert labels_to_reach(curve, 0.95) is None


def test_label_ratio_against_random_final_accuracy() -> None:
    rnd = [(20, 0.5), (220, 0.8), (420, 0.9)]
    fast = [(20, 0.5), (120, 0.85), (220, 0.95)]
    assert label_ratio(fast, rnd) == pytest.approx(170 / 420)
    assert label_ratio(fast, rnd, start=20) == pytest.approx(150 / 400)
    assert label_ratio([(20, 0.5), (420, 0.6)], rnd) is None
    with pytest.raises(SelectionError, match="no labels"):
        label_ratio(fast, [(20, 0.5)], start=20)
