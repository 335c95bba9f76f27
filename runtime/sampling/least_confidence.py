"""Least-confidence sampling: how little the model believes its own answer.

Per item, ``1 - p1`` with ``p1`` the largest class probability. Its range is ``[0, 1 - 1/K]``
(a uniform ``K``-class vector cannot go higher), which is fine for ranking frames of one
bundle. Frame rules are those of :mod:`runtime.sampling.base`.
"""

from __future__ import annotations

from runtime.pipeline.prediction import Prediction
from runtime.sampling.base import (
    Reducer,
    SampleContext,
    StrategyOptions,
    frame_uncertainty,
    no_params,
)

__all__ = ["NAME", "LeastConfidenceStrategy", "create", "least_confidence"]

NAME = "least_confidence"


def least_confidence(probs: list[float]) -> float:
    """``1 - max(p)`` of a normalised probability vector."""
    return 1.0 - max(probs)


class LeastConfidenceStrategy:
    """One minus the top class probability of each item, reduced over the frame."""

    name = NAME

    def __init__(self, reducer: Reducer = "max") -> None:
        self.reducer: Reducer = reducer

    def score(self, prediction: Prediction, context: SampleContext | None = None) -> float:
        return frame_uncertainty(prediction, least_confidence, self.reducer)


def create(options: StrategyOptions) -> LeastConfidenceStrategy:
    no_params(NAME, options)
    return LeastConfidenceStrategy(options.reducer)
