"""Close-to-threshold sampling: items whose score sits near a decision threshold.

A detector keeps a box when its score passes ``score_threshold``; the boxes just above it are
where the model hesitates between "object" and "background", and the ones a human should look
at first. Per item, ``1 - |score - threshold| / width``, floored at 0: 1 exactly at the
threshold, 0 at ``width`` away or further. ``stage`` picks the stage whose items are read (a
detector in front of a classifier, say); by default the final stage. Items are combined by the
configured reducer. A frame with no items in that stage scores 0 (nothing near the threshold is
visible: the boxes below it were dropped), a frame with an error scores
:data:`~runtime.sampling.base.ERROR_SCORE`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from runtime.pipeline.prediction import Prediction
from runtime.sampling.base import (
    ERROR_SCORE,
    Reducer,
    SampleContext,
    StrategyOptions,
    clamp01,
    parse_params,
    reduce,
    stage_items,
)

__all__ = ["NAME", "CloseToThresholdOptions", "CloseToThresholdStrategy", "create"]

NAME = "close_to_threshold"


class CloseToThresholdOptions(BaseModel):
    """``sampling.close_to_threshold``."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        default=0.5, ge=0, le=1, description="the decision threshold, e.g. the detector's"
    )
    width: float = Field(
        default=0.1, gt=0, le=1, description="score distance at which the value falls to 0"
    )
    stage: str | None = Field(
        default=None, description="stage whose item scores are read; none: the final stage"
    )


class CloseToThresholdStrategy:
    """Nearness of each item's score to the threshold, reduced over the frame."""

    name = NAME

    def __init__(self, options: CloseToThresholdOptions, reducer: Reducer = "max") -> None:
        self.options = options
        self.reducer: Reducer = reducer

    def score(self, prediction: Prediction, context: SampleContext | None = None) -> float:
        if prediction.error is not None:
            return ERROR_SCORE
        items = stage_items(prediction, self.options.stage)
        if not items:
            return 0.0
        t, w = self.options.threshold, self.options.width
        return clamp01(reduce([clamp01(1.0 - abs(it.score - t) / w) for it in items], self.reducer))


def create(options: StrategyOptions) -> CloseToThresholdStrategy:
    return CloseToThresholdStrategy(
        parse_params(CloseToThresholdOptions, NAME, options), options.reducer
    )
