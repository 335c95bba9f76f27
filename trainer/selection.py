"""Which unlabelled samples should a person label next? Batch selection for active learning.

A pool of unlabelled samples comes with what the current model says about each one: its class
probabilities (``probs``, one row per sample) and, for the diversity-aware strategies, an
embedding (``embeddings``: the model's penultimate-layer features). :func:`select` returns the
indices of the ``k`` samples to label, for one of the strategies in :data:`STRATEGIES`:

- ``random`` — uniform, the baseline every figure is a ratio to.
- ``margin``, ``entropy``, ``least_confidence`` — the most uncertain first (smallest gap between
  the two top classes; highest entropy; lowest top probability). The scores are the same
  formulas as the device's :mod:`runtime.sampling` strategies, vectorised over the pool.
- ``kcenter`` — the greedy k-centre core-set (Sener & Savarese, ICLR 2018): repeatedly take the
  pool sample farthest (Euclidean, in embedding space) from everything labelled or already
  picked, so the batch covers the pool instead of piling up in one confusing corner.
- ``cluster_margin`` — Cluster-Margin (Citovsky et al., NeurIPS 2021): the ``candidates × k``
  lowest-margin samples are clustered (hierarchical, average linkage, on embeddings), then
  picked round-robin over the clusters, smallest cluster first, the lowest margin first inside a
  cluster: uncertain *and* diverse.

``balance=True`` adds **class balance** to any strategy: the picks are dealt round-robin over
the *predicted* classes (the true ones are unknown before labelling), the class with the fewest
labels so far (``labelled_classes``) served first, each class's best-ranked sample by the
strategy's own order. A class the model never predicts gets nothing: balance cannot invent one.

**Label efficiency** (:func:`label_ratio`, the figure the bench and the demo print): given
learning curves — ``(labels, accuracy)`` after each round — of a strategy and of random
selection on the same budget, the *target* is the accuracy random reaches with its whole budget;
the figure is the number of labels the strategy needed to first reach it (linearly interpolated
between the two rounds around the crossing) over random's budget. 0.5 means half the labels.

Everything is deterministic for a given ``seed`` (ties are broken by index; random draws come
from ``numpy.random.default_rng(seed)``). Only numpy and scikit-learn are imported, so the hub,
the demo and the benches can all use it without torch; the device keeps its own per-frame
scorers in :mod:`runtime.sampling` (a device has no scikit-learn).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trainer.errors import TrainerError

__all__ = [
    "DIVERSITY",
    "STRATEGIES",
    "Pool",
    "SelectionError",
    "entropy_scores",
    "kcenter_greedy",
    "label_ratio",
    "labels_to_reach",
    "least_confidence_scores",
    "margin_scores",
    "select",
]

STRATEGIES: tuple[str, ...] = (
    "random",
    "margin",
    "entropy",
    "least_confidence",
    "kcenter",
    "cluster_margin",
)
"""Strategy names :func:`select` accepts (``balance`` may be added to any of them)."""

DIVERSITY: frozenset[str] = frozenset({"kcenter", "cluster_margin"})
"""Strategies that need embeddings."""


class SelectionError(TrainerError):
    """A selection request that cannot be served (unknown strategy, shapes that disagree)."""


@dataclass(frozen=True)
class Pool:
    """What the current model says about the unlabelled pool (and about the labelled set).

    ``probs``: ``n × C`` class probabilities of the pool samples (rows need not sum to 1 exactly).
    ``embeddings``: ``n × d`` features of the pool samples (diversity strategies only).
    ``labelled_embeddings``: ``m × d`` features of the samples labelled so far (k-centre starts
    from them; none: it starts from the pool's first pick).
    ``labelled_classes``: the class of each labelled sample (class balance counts them).
    """

    probs: np.ndarray
    embeddings: np.ndarray | None = None
    labelled_embeddings: np.ndarray | None = None
    labelled_classes: Sequence[int] | np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.probs.ndim != 2 or self.probs.shape[1] < 1:
            raise SelectionError(f"probs must be n × classes, got shape {self.probs.shape}")
        n = self.probs.shape[0]
        if self.embeddings is not None and (
            self.embeddings.ndim != 2 or self.embeddings.shape[0] != n
        ):
            raise SelectionError(
                f"embeddings must be {n} × d (one row per pool sample), "
                f"got shape {self.embeddings.shape}"
            )
        le = self.labelled_embeddings
        if (
            le is not None
            and self.embeddings is not None
            and (le.ndim != 2 or le.shape[1] != self.embeddings.shape[1])
        ):
            raise SelectionError(
                f"labelled_embeddings must be m × {self.embeddings.shape[1]}, got {le.shape}"
            )

    @property
    def size(self) -> int:
        return int(self.probs.shape[0])


def _normalised(probs: np.ndarray) -> np.ndarray:
    p = np.where(np.isfinite(probs) & (probs > 0), probs, 0.0).astype(np.float64)
    total = p.sum(axis=1, keepdims=True)
    uniform = np.full_like(p, 1.0 / p.shape[1])
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), uniform)


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """``1 - (p1 - p2)`` per row: 1 when the two top classes tie, 0 when one class is certain."""
    p = _normalised(probs)
    if p.shape[1] == 1:
        return np.zeros(len(p))
    top2 = np.partition(p, -2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy per row over ``log(C)``: 1 for a uniform vector, 0 for a certain one."""
    p = _normalised(probs)
    if p.shape[1] == 1:
        return np.zeros(len(p))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return h / np.log(p.shape[1])


def least_confidence_scores(probs: np.ndarray) -> np.ndarray:
    """``(1 - p_max) · C / (C - 1)`` per row: 1 for a uniform vector, 0 for a certain one."""
    p = _normalised(probs)
    c = p.shape[1]
    if c == 1:
        return np.zeros(len(p))
    return (1.0 - p.max(axis=1)) * c / (c - 1)


_SCORES = {
    "margin": margin_scores,
    "entropy": entropy_scores,
    "least_confidence": least_confidence_scores,
}


def _rank(scores: np.ndarray) -> np.ndarray:
    """Indices by score, highest first; ties by index (stable)."""
    return np.argsort(-scores, kind="stable")


def kcenter_greedy(
    embeddings: np.ndarray,
    k: int,
    centres: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy k-centre: ``k`` indices of ``embeddings``, each the farthest from the centres so far.

    ``centres`` (``m × d``) are the points already covered (the labelled set). Without them the
    first pick is the point farthest from the pool's mean. ``candidates`` restricts the picks to
    those indices (distances still count every centre). Ties go to the lowest index.
    """
    from sklearn.metrics import pairwise_distances

    x = np.asarray(embeddings, dtype=np.float64)
    allowed = np.arange(len(x)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    k = min(k, len(allowed))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    sub = x[allowed]
    if centres is not None and len(centres):
        nearest = pairwise_distances(sub, np.asarray(centres, dtype=np.float64)).min(axis=1)
    else:
        nearest = pairwise_distances(sub, sub.mean(axis=0, keepdims=True))[:, 0]
    picked: list[int] = []
    for _ in range(k):
        j = int(np.argmax(nearest))  # first maximum: ties to the lowest index
        picked.append(j)
        nearest = np.minimum(nearest, np.linalg.norm(sub - sub[j], axis=1))
        nearest[j] = -1.0  # never twice, even when every distance is 0
    return allowed[np.array(picked, dtype=np.int64)]


def _cluster_margin_order(pool: Pool, k: int, candidates_factor: float) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    assert pool.embeddings is not None
    margins = margin_scores(pool.probs)
    m = min(pool.size, max(k, round(candidates_factor * k)))
    cand = _rank(margins)[:m]
    n_clusters = min(k, m)
    if n_clusters < 2:
        return cand
    labels = AgglomerativeClustering(n_clusters=n_clusters, linkage="average").fit_predict(
        np.asarray(pool.embeddings[cand], dtype=np.float64)
    )
    # Members of each cluster, most uncertain first (``cand`` is already in that order).
    clusters = [cand[labels == c] for c in range(n_clusters)]
    clusters.sort(key=lambda members: (len(members), int(members[0])))  # smallest first
    order: list[int] = []
    depth = 0
    while len(order) < m:
        for members in clusters:
            if depth < len(members):
                order.append(int(members[depth]))
        depth += 1
    return np.array(order, dtype=np.int64)


def _order(
    strategy: str, pool: Pool, k: int, seed: int, candidates_factor: float, depth: int
) -> np.ndarray:
    """Pool indices in the order the strategy prefers them: every index, or (k-centre, whose
    greedy steps cost a pass over the pool each) the first ``depth``."""
    if strategy == "random":
        return np.random.default_rng(seed).permutation(pool.size)
    if strategy in _SCORES:
        return _rank(_SCORES[strategy](pool.probs))
    if pool.embeddings is None:
        raise SelectionError(f"strategy {strategy!r} needs embeddings of the pool")
    if strategy == "kcenter":
        return kcenter_greedy(pool.embeddings, depth, pool.labelled_embeddings)
    if strategy == "cluster_margin":
        return _cluster_margin_order(pool, k, candidates_factor)
    raise SelectionError(f"unknown selection strategy {strategy!r}; known: {', '.join(STRATEGIES)}")


def _balanced(order: np.ndarray, pool: Pool, k: int) -> np.ndarray:
    """Deal ``k`` picks over the predicted classes, the least-labelled class first."""
    n_classes = pool.probs.shape[1]
    predicted = np.argmax(_normalised(pool.probs), axis=1)
    counts = np.zeros(n_classes, dtype=np.int64)
    if pool.labelled_classes is not None:
        lc = np.asarray(pool.labelled_classes, dtype=np.int64)
        lc = lc[(lc >= 0) & (lc < n_classes)]
        counts += np.bincount(lc, minlength=n_classes)
    queues = [[int(i) for i in order if predicted[i] == c] for c in range(n_classes)]
    heads = [0] * n_classes
    picked: list[int] = []
    while len(picked) < k:
        open_classes = [c for c in range(n_classes) if heads[c] < len(queues[c])]
        if not open_classes:
            break
        c = min(open_classes, key=lambda c: (counts[c], c))
        picked.append(queues[c][heads[c]])
        heads[c] += 1
        counts[c] += 1
    return np.array(picked, dtype=np.int64)


def select(
    strategy: str,
    pool: Pool,
    k: int,
    seed: int = 0,
    balance: bool = False,
    candidates_factor: float = 10.0,
) -> np.ndarray:
    """Indices (into the pool) of the ``k`` samples to label next, best first.

    ``k`` larger than the pool returns the whole pool (cluster-margin: its candidates).
    ``candidates_factor`` is cluster-margin's candidate set size over ``k`` (Citovsky et al.
    use a multiple of the batch; 10 by default). Raises SelectionError for an unknown strategy
    or a diversity strategy without embeddings.
    """
    if k < 0:
        raise SelectionError(f"k must be >= 0, got {k}")
    if strategy not in STRATEGIES:
        raise SelectionError(
            f"unknown selection strategy {strategy!r}; known: {', '.join(STRATEGIES)}"
        )
    k = min(k, pool.size)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    # Balance may skip picks of over-served classes: give it a deeper order to deal from.
    depth = min(pool.size, k * pool.probs.shape[1]) if balance else k
    order = _order(strategy, pool, k, seed, candidates_factor, depth)
    if balance:
        return _balanced(order, pool, k)
    return order[:k].astype(np.int64)


def labels_to_reach(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """Labels at which a ``(labels, accuracy)`` curve first reaches ``target``, linearly
    interpolated from the round before; None if it never does."""
    prev: tuple[float, float] | None = None
    for labels, acc in points:
        if acc >= target:
            if prev is None or acc <= prev[1]:
                return float(labels)
            frac = (target - prev[1]) / (acc - prev[1])
            return float(prev[0] + frac * (labels - prev[0]))
        prev = (labels, acc)
    return None


def label_ratio(
    strategy: Sequence[tuple[float, float]], random: Sequence[tuple[float, float]], start: float = 0
) -> float | None:
    """Labels ``strategy`` needs to reach random's final accuracy, over random's final labels.

    Both curves count labels the same way; ``start`` (e.g. a seed set both got for free) is
    taken off both before dividing. None when the strategy never reaches the target.
    Raises SelectionError for an empty random curve or one that spent no labels past ``start``.
    """
    if not random:
        raise SelectionError("label ratio: the random curve is empty")
    budget, target = random[-1]
    if budget - start <= 0:
        raise SelectionError("label ratio: random spent no labels beyond the start")
    need = labels_to_reach(strategy, target)
    return None if need is None else max(0.0, need - start) / (budget - start)
