"""What a sampling strategy is, and the rules every uncertainty strategy shares.

A device sees far more frames than it can keep or upload, so each frame gets a *value*: a score
in ``[0, 1]`` per strategy, higher meaning "more worth a human's time". A strategy scores one
:class:`~runtime.pipeline.prediction.Prediction` plus an optional :class:`SampleContext` — what
the caller knows beyond the prediction: the frame's time, a perceptual hash of its pixels, class
statistics. A strategy never reads a clock, a disk, the network or the pixels themselves, so
every one is tested exhaustively with constructed inputs. A few strategies keep bounded state
(novelty remembers recently kept hashes, rare-class keeps running class counts): they update it
in ``score`` (what was *seen*) or in the optional ``kept`` hook the writer calls once the store
accepted the sample (what was *kept*). One scorer serves one thread.

The uncertainty strategies (margin, entropy, least confidence) look at the **final stage's
items** — what the pipeline concludes, e.g. the digit classes of a ``for_each`` classifier —
and share these rules, implemented once here:

- **Per item**, the probability vector is the item's full ``scores`` vector when the head kept
  one (negative or non-finite values count as 0, then it is normalised to sum 1; an all-zero
  vector is treated as uniform, i.e. maximally uncertain). An item without a vector (e.g. a
  detector's sigmoid score) is read as the binary decision ``[score, 1 - score]``.
- **Per frame**, the item uncertainties are combined by a reducer: ``max`` (default — one
  confusing object makes the frame valuable), ``mean`` or ``min`` (every object must be
  confusing).
- **No items** scores :data:`NO_ITEMS_SCORE` (0.5): a frame where the model found nothing is
  exactly where a missed object hides, so it must not sink below every frame that has a
  detection; neither is it more urgent than a genuinely confused one.
- **A frame with an error** scores :data:`ERROR_SCORE` (0.0): the model said nothing one could
  correct, and bad frames are a health matter reported through counters, not training data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, get_args, runtime_checkable

from pydantic import BaseModel, ValidationError

from runtime.errors import ConfigError
from runtime.pipeline.prediction import Item, Prediction

__all__ = [
    "ERROR_SCORE",
    "NO_ITEMS_SCORE",
    "REDUCERS",
    "KeepsState",
    "Reducer",
    "SampleContext",
    "Strategy",
    "StrategyOptions",
    "clamp01",
    "frame_uncertainty",
    "item_probabilities",
    "no_params",
    "parse_params",
    "reduce",
    "stage_items",
]

Reducer = Literal["min", "mean", "max"]
REDUCERS: tuple[str, ...] = get_args(Reducer)

NO_ITEMS_SCORE = 0.5
"""Score of an ``ok`` frame whose final stage has no items (see the module story)."""

ERROR_SCORE = 0.0
"""Score of a frame whose prediction carries an ``error``."""


@dataclass(frozen=True)
class SampleContext:
    """What the caller knows about a frame beyond its prediction (every field optional).

    The store writer fills it in its own thread: ``timestamp`` is when the frame was offered
    (unix seconds), ``image_hash`` the 64-bit dHash of the pixels
    (:func:`runtime.sampling.novelty.dhash`, computed only when a strategy needs it), and
    ``class_counts`` optional class statistics from elsewhere (e.g. the store) that
    rare-class uses instead of its own running counts.
    """

    timestamp: float | None = None
    image_hash: int | None = None
    class_counts: Mapping[str, int] | None = None


@runtime_checkable
class Strategy(Protocol):
    """One way to value a frame. ``score`` returns a float in ``[0, 1]``."""

    name: str

    def score(self, prediction: Prediction, context: SampleContext | None = None) -> float:
        """How valuable this frame is for the next model: 0 = worthless, 1 = most valuable."""
        ...


@runtime_checkable
class KeepsState(Protocol):
    """A strategy that wants to know which scored frames the store actually kept."""

    def kept(self, prediction: Prediction, context: SampleContext | None) -> None: ...


@dataclass(frozen=True)
class StrategyOptions:
    """What a strategy factory may use; each strategy reads only what it needs.

    ``params`` is the strategy's own config section (``sampling.<name>``), validated by the
    strategy's pydantic model: unknown keys are a ConfigError.
    """

    reducer: Reducer = "max"
    seed: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)


StrategyFactory = Callable[[StrategyOptions], Strategy]


M = TypeVar("M", bound=BaseModel)


def parse_params(model: type[M], name: str, options: StrategyOptions) -> M:
    """Validate ``options.params`` with ``model``; ConfigError naming ``sampling.<name>.<key>``."""
    try:
        return model.model_validate(dict(options.params))
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in (name, *first["loc"]))
        raise ConfigError(f"sampling.{loc}: {first['msg']}") from e


def no_params(name: str, options: StrategyOptions) -> None:
    """For strategies without options: any ``params`` is a ConfigError."""
    if options.params:
        keys = ", ".join(sorted(options.params))
        raise ConfigError(f"sampling.{name}: takes no options, got {keys}")


def stage_items(prediction: Prediction, stage: str | None) -> list[Item]:
    """Items of the named stage (none: the final stage); [] for an unknown stage."""
    if stage is None:
        return prediction.final_items()
    result = prediction.stages.get(stage)
    return list(result.items) if result is not None else []


def item_probabilities(item: Item) -> list[float]:
    """The item's class distribution, normalised to sum 1 (rules in the module story)."""
    if item.scores is not None and len(item.scores) >= 1:
        raw = [v if math.isfinite(v) and v > 0.0 else 0.0 for v in item.scores]
    else:
        s = item.score if math.isfinite(item.score) else 0.0
        s = min(1.0, max(0.0, s))
        raw = [s, 1.0 - s]
    total = sum(raw)
    if total <= 0.0:
        return [1.0 / len(raw)] * len(raw)
    return [v / total for v in raw]


def reduce(values: Sequence[float], reducer: Reducer) -> float:
    """Combine per-item values into one per-frame value. ``values`` must not be empty."""
    if reducer == "max":
        return max(values)
    if reducer == "min":
        return min(values)
    if reducer == "mean":
        return sum(values) / len(values)
    raise ValueError(f"unknown reducer {reducer!r}; expected one of {', '.join(REDUCERS)}")


def frame_uncertainty(
    prediction: Prediction, per_item: Callable[[list[float]], float], reducer: Reducer
) -> float:
    """Apply the shared frame rules around a per-item uncertainty of a probability vector."""
    if prediction.error is not None:
        return ERROR_SCORE
    items = prediction.final_items()
    if not items:
        return NO_ITEMS_SCORE
    values = [_clamp01(per_item(item_probabilities(it))) for it in items]
    return _clamp01(reduce(values, reducer))


def clamp01(v: float) -> float:
    """``v`` clamped to ``[0, 1]``; non-finite values read as 0 (nothing to rank on)."""
    return min(1.0, max(0.0, v)) if math.isfinite(v) else 0.0


def _clamp01(v: float) -> float:
    if not math.isfinite(v):
        return 1.0  # a vector we cannot read is one a human should look at
    return min(1.0, max(0.0, v))
