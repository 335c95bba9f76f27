"""Disagreement sampling: frames where the production model and the shadow candidate differ.

When a candidate bundle runs in shadow, the shadow worker compares its output with
production's on the same frame and sets ``Prediction.shadow`` (``shadow["disagreement"]`` in
``[0, 1]``) on the frames it compared. Those frames are the evidence the replay gate and the
annotators need most: one of the two models is wrong there. The score is that disagreement,
clamped to ``[0, 1]``; a frame the shadow did not compare (no shadow info, or an unreadable
value) scores 0, a frame with an error :data:`~runtime.sampling.base.ERROR_SCORE`.
"""

from __future__ import annotations

import math

from runtime.pipeline.prediction import Prediction
from runtime.sampling.base import ERROR_SCORE, SampleContext, StrategyOptions, no_params

__all__ = ["NAME", "DisagreementStrategy", "create"]

NAME = "disagreement"


class DisagreementStrategy:
    """The shadow comparison's disagreement, or 0 when the frame was not compared."""

    name = NAME

    def score(self, prediction: Prediction, context: SampleContext | None = None) -> float:
        if prediction.error is not None:
            return ERROR_SCORE
        if not prediction.shadow:
            return 0.0
        raw = prediction.shadow.get("disagreement")
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return 0.0
        v = float(raw)
        return min(1.0, max(0.0, v)) if math.isfinite(v) else 0.0


def create(options: StrategyOptions) -> DisagreementStrategy:
    no_params(NAME, options)
    return DisagreementStrategy()
