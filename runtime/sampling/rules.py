"""Operational rules: keep frames an operator asked for, whatever the model thinks of them.

Uncertainty finds what confuses the model; an operator often knows other things worth a look:
"every frame with a forklift", "crowded scenes (more than 5 people)", "anything at night". A
rule is a set of conditions that must *all* hold; the strategy scores the highest ``score`` of
the rules that hit, 0 if none does. Conditions:

- ``labels``: an item of the rule's stage (by default the final stage) has one of these labels;
- ``more_than``: the stage has more than N items (only items with one of ``labels`` count when
  ``labels`` is given);
- ``between``: ``"HH:MM-HH:MM"``, the frame's time of day is in the window (``start``
  inclusive, ``end`` exclusive; ``22:00-06:00`` wraps midnight, equal ends mean all day), read
  in ``timezone`` (an IANA name; none: the device's local time).

The time is the frame's, from the :class:`~runtime.sampling.base.SampleContext` — never the
wall clock: a frame without a timestamp never matches a ``between`` condition. A frame with an
error scores :data:`~runtime.sampling.base.ERROR_SCORE`.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime.pipeline.prediction import Prediction
from runtime.sampling.base import (
    ERROR_SCORE,
    SampleContext,
    StrategyOptions,
    parse_params,
    stage_items,
)

__all__ = ["NAME", "Rule", "RulesOptions", "RulesStrategy", "create"]

NAME = "rules"

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class Rule(BaseModel):
    """One operational rule: every condition given must hold."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="for the operator's eyes only")
    labels: list[str] | None = Field(
        default=None, min_length=1, description="hit when an item has one of these labels"
    )
    more_than: int | None = Field(
        default=None, ge=0, description="hit when there are more than N items (of `labels`)"
    )
    between: str | None = Field(
        default=None, description='time-of-day window "HH:MM-HH:MM" (wraps midnight)'
    )
    stage: str | None = Field(default=None, description="stage read; none: the final stage")
    score: float = Field(default=1.0, ge=0, le=1, description="the strategy's score on a hit")

    @field_validator("between")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None and not _HHMM.match(v):
            raise ValueError(f'expected "HH:MM-HH:MM", got {v!r}')
        return v

    @model_validator(mode="after")
    def _some_condition(self) -> Rule:
        if self.labels is None and self.more_than is None and self.between is None:
            raise ValueError("a rule needs at least one of labels, more_than, between")
        return self

    def minutes(self) -> tuple[int, int] | None:
        """The window as (start, end) minutes after midnight, or None."""
        if self.between is None:
            return None
        m = _HHMM.match(self.between)
        assert m is not None  # validated above
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        return h1 * 60 + m1, h2 * 60 + m2


class RulesOptions(BaseModel):
    """``sampling.rules``."""

    model_config = ConfigDict(extra="forbid")

    when: list[Rule] = Field(default_factory=list, description="the rules; any hit scores")
    timezone: str | None = Field(
        default=None, description="IANA zone of `between` windows; none: the device's local time"
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            _zone_of(v)
        return v


def _zone_of(name: str) -> dt.tzinfo:
    if name.upper() == "UTC":
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {name!r}") from e


def in_window(minute: int, start: int, end: int) -> bool:
    """Whether ``minute`` (after midnight) is in ``[start, end)``, wrapping past midnight."""
    if start == end:
        return True
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


class RulesStrategy:
    """The best score among the operator's rules that hit this frame."""

    name = NAME

    def __init__(self, options: RulesOptions) -> None:
        self.rules = list(options.when)
        self._windows = [r.minutes() for r in self.rules]
        self._zone = _zone_of(options.timezone) if options.timezone else None

    def _minute(self, context: SampleContext | None) -> int | None:
        if context is None or context.timestamp is None:
            return None
        t = dt.datetime.fromtimestamp(context.timestamp, tz=self._zone)
        return t.hour * 60 + t.minute

    def hits(self, prediction: Prediction, context: SampleContext | None = None) -> list[int]:
        """Indices of the rules this frame satisfies."""
        if prediction.error is not None:
            return []
        minute = self._minute(context)
        out = []
        for i, (rule, window) in enumerate(zip(self.rules, self._windows, strict=True)):
            if window is not None and (minute is None or not in_window(minute, *window)):
                continue
            items = stage_items(prediction, rule.stage)
            if rule.labels is not None:
                wanted = set(rule.labels)
                items = [it for it in items if it.label in wanted]
                if not items:
                    continue
            if rule.more_than is not None and len(items) <= rule.more_than:
                continue
            out.append(i)
        return out

    def score(self, prediction: Prediction, context: SampleContext | None = None) -> float:
        if prediction.error is not None:
            return ERROR_SCORE
        return max((self.rules[i].score for i in self.hits(prediction, context)), default=0.0)


def create(options: StrategyOptions) -> RulesStrategy:
    return RulesStrategy(parse_params(RulesOptions, NAME, options))
