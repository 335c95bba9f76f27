"""Rare-class boost: frames showing classes the device has rarely seen so far.

A fleet's data is long-tailed: the common classes arrive by the thousand, and the model is
weakest on the rest. Per item, with ``c`` the count of the item's label and ``top`` the count of
the most common label, the rarity is ``1 - (c + 1) / (top + 1)``: 0 for the most common class
(and for everything on the very first frame), close to 1 for a class never seen next to one
seen thousands of times. Items are combined by the configured reducer (``max``: the rarest
class on the frame); a frame with no items scores 0, one with an error
:data:`~runtime.sampling.base.ERROR_SCORE`.

The counts are the strategy's own running counts of the labels it has scored (updated after
scoring each frame), unless the context carries ``class_counts`` (e.g. from the store), which
are then used as they are. Running counts are bounded: at most ``max_classes`` labels are
tracked (later new labels count as never seen), and when the most common label passes
``window`` every count is halved — which also lets the counts follow a drifting scene.
"""

from __future__ import annotations

from collections.abc import Mapping

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

__all__ = ["NAME", "RareClassOptions", "RareClassStrategy", "create", "rarity"]

NAME = "rare_class"


class RareClassOptions(BaseModel):
    """``sampling.rare_class``."""

    model_config = ConfigDict(extra="forbid")

    stage: str | None = Field(default=None, description="stage read; none: the final stage")
    window: int = Field(
        default=10_000, ge=2, description="halve every count when the top one passes this"
    )
    max_classes: int = Field(default=4096, ge=1, description="labels tracked at most")


def rarity(count: int, top: int) -> float:
    """``1 - (count + 1) / (top + 1)``, in ``[0, 1)``."""
    return clamp01(1.0 - (count + 1) / (max(top, count) + 1))


class RareClassStrategy:
    """How rarely the frame's classes have been seen, reduced over its items."""

    name = NAME

    def __init__(self, options: RareClassOptions, reducer: Reducer = "max") -> None:
        self.options = options
        self.reducer: Reducer = reducer
        self.counts: dict[str, int] = {}

    def score(self, prediction: Prediction, context: SampleContext | None = None) -> float:
        if prediction.error is not None:
            return ERROR_SCORE
        labels = [it.label for it in stage_items(prediction, self.options.stage)]
        external = context.class_counts if context is not None else None
        counts: Mapping[str, int] = external if external is not None else self.counts
        top = max(counts.values(), default=0)
        value = (
            reduce([rarity(counts.get(lbl, 0), top) for lbl in labels], self.reducer)
            if labels
            else 0.0
        )
        if external is None:
            self._count(labels)
        return value

    def _count(self, labels: list[str]) -> None:
        counts = self.counts
        for lbl in labels:
            if lbl in counts:
                counts[lbl] += 1
            elif len(counts) < self.options.max_classes:
                counts[lbl] = 1
        if counts and max(counts.values()) > self.options.window:
            for k in list(counts):
                counts[k] //= 2


def create(options: StrategyOptions) -> RareClassStrategy:
    return RareClassStrategy(parse_params(RareClassOptions, NAME, options), options.reducer)
