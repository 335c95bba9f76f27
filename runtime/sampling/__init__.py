"""Sampling: turn a prediction into "how much would a human's label on this frame teach us".

Each strategy lives in its own module and is registered by name in :data:`REGISTRY`. The
device config names the strategies it wants with a weight each (``sampling.weights``, e.g.
``{"margin": 1.0, "random": 0.1}``); :func:`make_scorer` builds a :class:`Scorer` whose
``score(prediction)`` returns every strategy's score (kept in the sample record, so the hub can
re-rank later) and the **priority**: the weighted mean of those scores, in ``[0, 1]``. The store
ranks, evicts and uploads by that priority. Everything here is pure: no I/O, no clocks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import cast

from runtime.errors import ConfigError
from runtime.pipeline.prediction import Prediction
from runtime.sampling import entropy, least_confidence, margin
from runtime.sampling import random as random_strategy
from runtime.sampling.base import (
    ERROR_SCORE,
    NO_ITEMS_SCORE,
    REDUCERS,
    Reducer,
    Strategy,
    StrategyFactory,
    StrategyOptions,
)

__all__ = [
    "ERROR_SCORE",
    "NO_ITEMS_SCORE",
    "REDUCERS",
    "REGISTRY",
    "Reducer",
    "Scorer",
    "Strategy",
    "StrategyOptions",
    "make_scorer",
]

REGISTRY: dict[str, StrategyFactory] = {
    margin.NAME: margin.create,
    entropy.NAME: entropy.create,
    least_confidence.NAME: least_confidence.create,
    random_strategy.NAME: random_strategy.create,
}
"""Strategy name -> factory. The names are config vocabulary: never rename one."""


class Scorer:
    """Several weighted strategies scoring one prediction at a time."""

    def __init__(self, strategies: Mapping[str, Strategy], weights: Mapping[str, float]) -> None:
        if set(strategies) != set(weights):
            raise ConfigError("sampling: strategies and weights must name the same strategies")
        self.strategies = dict(strategies)
        self.weights = {k: float(v) for k, v in weights.items()}
        self._total = sum(self.weights.values())
        if not self._total > 0.0:
            raise ConfigError("sampling.weights: at least one weight must be above 0")

    def score(self, prediction: Prediction) -> tuple[dict[str, float], float]:
        """Per-strategy scores and the priority (their weighted mean), all in ``[0, 1]``."""
        scores: dict[str, float] = {}
        acc = 0.0
        for name, strategy in self.strategies.items():
            s = strategy.score(prediction)
            s = min(1.0, max(0.0, s)) if math.isfinite(s) else 0.0
            scores[name] = s
            acc += self.weights[name] * s
        return scores, min(1.0, max(0.0, acc / self._total))


def make_scorer(weights: Mapping[str, float], reducer: str = "max", seed: int = 0) -> Scorer:
    """Build a scorer from ``{strategy name: weight}``.

    Raises ConfigError for an unknown strategy or reducer, a negative or non-finite weight, or
    weights that are all zero.
    """
    if reducer not in REDUCERS:
        raise ConfigError(
            f"sampling.reducer: unknown {reducer!r}; expected one of {', '.join(REDUCERS)}"
        )
    if not weights:
        raise ConfigError("sampling.weights: name at least one strategy")
    options = StrategyOptions(reducer=cast(Reducer, reducer), seed=seed)
    strategies: dict[str, Strategy] = {}
    for name, w in weights.items():
        factory = REGISTRY.get(name)
        if factory is None:
            raise ConfigError(
                f"sampling.weights: unknown strategy {name!r}; known: {', '.join(sorted(REGISTRY))}"
            )
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"sampling.weights.{name}: weight must be a number >= 0, got {w!r}")
        strategies[name] = factory(options)
    return Scorer(strategies, weights)
