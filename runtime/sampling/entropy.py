"""Entropy sampling: how spread the model's belief is over all classes.

Per item, the Shannon entropy of the class distribution divided by ``log(K)`` (``K`` classes),
so a uniform vector scores 1 and a one-hot vector 0 whatever the number of classes. Unlike
margin it also notices a long tail of mass spread over many classes. A one-class vector scores
0. Frame rules are those of :mod:`runtime.sampling.base`.
"""

from __future__ import annotations

import math

from runtime.pipeline.prediction import Prediction
from runtime.sampling.base import (
    Reducer,
    SampleContext,
    StrategyOptions,
    frame_uncertainty,
    no_params,
)

__all__ = ["NAME", "EntropyStrategy", "create", "normalised_entropy"]

NAME = "entropy"


def normalised_entropy(probs: list[float]) -> float:
    """``H(p) / log(K)`` of a normalised probability vector; 0 when ``K < 2``."""
    k = len(probs)
    if k < 2:
        return 0.0
    h = -sum(p * math.log(p) for p in probs if p > 0.0)
    return h / math.log(k)


class EntropyStrategy:
    """Normalised entropy of each item's class distribution, reduced over the frame."""

    name = NAME

    def __init__(self, reducer: Reducer = "max") -> None:
        self.reducer: Reducer = reducer

    def score(self, prediction: Prediction, context: SampleContext | None = None) -> float:
        return frame_uncertainty(prediction, normalised_entropy, self.reducer)


def create(options: StrategyOptions) -> EntropyStrategy:
    no_params(NAME, options)
    return EntropyStrategy(options.reducer)
