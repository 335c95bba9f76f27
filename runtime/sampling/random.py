"""Random sampling: an unbiased slice of what the device sees.

Uncertainty strategies only ever bring back what the model finds hard; a little uniform
sampling keeps the training set honest about the everyday distribution (and catches confident
mistakes, which no uncertainty measure can). The score is uniform in ``[0, 1)`` from a seeded
generator, so a run is reproducible. It ignores items — an empty frame is as likely as any —
but a frame with an error still scores :data:`~runtime.sampling.base.ERROR_SCORE`.
"""

from __future__ import annotations

import random as _random

from runtime.pipeline.prediction import Prediction
from runtime.sampling.base import ERROR_SCORE, SampleContext, StrategyOptions, no_params

__all__ = ["NAME", "RandomStrategy", "create"]

NAME = "random"


class RandomStrategy:
    """Uniform score from its own seeded generator (not thread-safe: one scorer per thread)."""

    name = NAME

    def __init__(self, seed: int = 0) -> None:
        self._rng = _random.Random(seed)

    def score(self, prediction: Prediction, context: SampleContext | None = None) -> float:
        if prediction.error is not None:
            return ERROR_SCORE
        return self._rng.random()


def create(options: StrategyOptions) -> RandomStrategy:
    no_params(NAME, options)
    return RandomStrategy(options.seed)
