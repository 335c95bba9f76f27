"""Sampling: turn a prediction into "how much would a human's label on this frame teach us".

Each strategy lives in its own module and is registered by name in :data:`REGISTRY`. The
device config names the strategies it wants with a weight each (``sampling.weights``, e.g.
``{"margin": 1.0, "random": 0.1}``); :func:`make_scorer` builds a :class:`Scorer` whose
``score(prediction)`` returns every strategy's score (kept in the sample record, so the hub can
re-rank later) and the **priority**: the weighted mean of those scores, in ``[0, 1]``. The store
ranks, evicts and uploads by that priority. Strategies with options read them from their own
section (``sampling.<name>``, validated, unknown keys rejected). Nothing here does I/O or reads
a clock: what a strategy needs beyond the prediction comes in a
:class:`~runtime.sampling.base.SampleContext` the caller builds.

Strategies: ``margin``, ``entropy``, ``least_confidence`` (uncertainty of the class vectors),
``random``, ``close_to_threshold`` (scores near a decision threshold), ``disagreement``
(production vs shadow candidate), ``rules`` (operator rules: class seen, more than N objects,
time of day), ``novelty`` (near-duplicate frames collapse, by perceptual hash) and
``rare_class`` (classes seldom seen so far).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

from runtime.errors import ConfigError
from runtime.pipeline.prediction import Prediction
from runtime.sampling import (
    close_to_threshold,
    disagreement,
    entropy,
    least_confidence,
    margin,
    novelty,
    rare_class,
    rules,
)
from runtime.sampling import random as random_strategy
from runtime.sampling.base import (
    ERROR_SCORE,
    NO_ITEMS_SCORE,
    REDUCERS,
    KeepsState,
    Reducer,
    SampleContext,
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
    "SampleContext",
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
    close_to_threshold.NAME: close_to_threshold.create,
    disagreement.NAME: disagreement.create,
    rules.NAME: rules.create,
    novelty.NAME: novelty.create,
    rare_class.NAME: rare_class.create,
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

    @property
    def needs_image_hash(self) -> bool:
        """Whether a strategy reads ``context.image_hash`` (so the caller must compute it)."""
        return any(getattr(s, "needs_image_hash", False) for s in self.strategies.values())

    def score(
        self, prediction: Prediction, context: SampleContext | None = None
    ) -> tuple[dict[str, float], float]:
        """Per-strategy scores and the priority (their weighted mean), all in ``[0, 1]``."""
        scores: dict[str, float] = {}
        acc = 0.0
        for name, strategy in self.strategies.items():
            s = strategy.score(prediction, context)
            s = min(1.0, max(0.0, s)) if math.isfinite(s) else 0.0
            scores[name] = s
            acc += self.weights[name] * s
        return scores, min(1.0, max(0.0, acc / self._total))

    def kept(self, prediction: Prediction, context: SampleContext | None = None) -> None:
        """Tell stateful strategies (e.g. novelty) that the store kept this frame."""
        for strategy in self.strategies.values():
            if isinstance(strategy, KeepsState):
                strategy.kept(prediction, context)


def make_scorer(
    weights: Mapping[str, float],
    reducer: str = "max",
    seed: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Scorer:
    """Build a scorer from ``{strategy name: weight}`` and per-strategy ``options``.

    ``options`` maps a strategy name to its section (e.g. ``{"novelty": {"radius": 4}}``); a
    section for a strategy without weight is validated but unused. Raises ConfigError for an
    unknown strategy or reducer, a negative or non-finite weight, weights that are all zero,
    or an invalid or unknown option.
    """
    options = dict(options or {})
    for name in options:
        if name not in REGISTRY:
            known = ", ".join(sorted(REGISTRY))
            raise ConfigError(f"sampling: options for unknown strategy {name!r}; known: {known}")
    if reducer not in REDUCERS:
        raise ConfigError(
            f"sampling.reducer: unknown {reducer!r}; expected one of {', '.join(REDUCERS)}"
        )
    if not weights:
        raise ConfigError("sampling.weights: name at least one strategy")
    base = StrategyOptions(reducer=cast(Reducer, reducer), seed=seed)
    for name, params in options.items():  # validate every section, used or not
        if name not in weights:
            REGISTRY[name](StrategyOptions(base.reducer, base.seed, dict(params)))
    strategies: dict[str, Strategy] = {}
    for name, w in weights.items():
        factory = REGISTRY.get(name)
        if factory is None:
            raise ConfigError(
                f"sampling.weights: unknown strategy {name!r}; known: {', '.join(sorted(REGISTRY))}"
            )
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"sampling.weights.{name}: weight must be a number >= 0, got {w!r}")
        strategies[name] = factory(
            StrategyOptions(base.reducer, base.seed, dict(options.get(name, {})))
        )
    return Scorer(strategies, weights)
