"""Margin sampling: how close the best class came to losing.

Per item, ``1 - (p1 - p2)`` where ``p1 >= p2`` are the two largest class probabilities: 1 when
the top two tie, 0 when the model is certain. Margin is the default strategy because it is
cheap, needs only the top two classes and is robust to long tails of tiny probabilities.
Frame rules (items, reducer, no items, errors) are those of :mod:`runtime.sampling.base`.
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

__all__ = ["NAME", "MarginStrategy", "create", "margin_uncertainty"]

NAME = "margin"


def margin_uncertainty(probs: list[float]) -> float:
    """``1 - (p1 - p2)`` of a normalised probability vector (``p2 = 0`` for one class)."""
    top = sorted(probs, reverse=True)
    p1 = top[0]
    p2 = top[1] if len(top) > 1 else 0.0
    return 1.0 - (p1 - p2)


class MarginStrategy:
    """Smallest margin between the two best classes, reduced over the frame's items."""

    name = NAME

    def __init__(self, reducer: Reducer = "max") -> None:
        self.reducer: Reducer = reducer

    def score(self, prediction: Prediction, context: SampleContext | None = None) -> float:
        return frame_uncertainty(prediction, margin_uncertainty, self.reducer)


def create(options: StrategyOptions) -> MarginStrategy:
    no_params(NAME, options)
    return MarginStrategy(options.reducer)
