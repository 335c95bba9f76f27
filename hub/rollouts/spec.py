"""What an admin asks for when rolling a bundle version out: waves, thresholds, windows, pins.

A rollout targets the devices of one cohort, or of the whole fleet, except pinned ones. It walks
its waves in order: the first wave is the canary (``count`` devices or a ``percent``), each next
wave raises the share of devices that got the order to its ``percent`` (cumulative). A wave
advances once ``success_threshold`` of the devices ordered so far run the new version, the soak
time has passed since the wave started, and the clock is inside a maintenance window (when any
are listed). ``error_threshold`` with ``min_executed`` halts it (AWS IoT Jobs' abort criteria).
"""

from __future__ import annotations

import itertools
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["NAME_PATTERN", "RolloutSpec", "Wave", "Window"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Wave(_Strict):
    """One wave: a device count (a canary) or a cumulative percentage of the targeted devices."""

    count: int | None = Field(default=None, ge=1, description="this many devices in all so far")
    percent: float | None = Field(
        default=None, gt=0, le=100, description="this share of the targeted devices in all so far"
    )

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.count is None) == (self.percent is None):
            raise ValueError("a wave has either 'count' or 'percent'")
        return self


class Window(_Strict):
    """A maintenance window in UTC: on these weekdays (0 = Monday), from ``start`` to ``end``
    (``HH:MM``; an end before the start runs past midnight)."""

    days: list[int] = Field(default=[0, 1, 2, 3, 4, 5, 6], min_length=1, max_length=7)
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")

    @model_validator(mode="after")
    def _days(self) -> Self:
        if any(d < 0 or d > 6 for d in self.days):
            raise ValueError("days are 0 (Monday) to 6 (Sunday)")
        return self


class RolloutSpec(_Strict):
    """``POST /admin/rollouts/staged`` and ``leanloop rollout create``."""

    bundle: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    cohort: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="the cohort it targets (none: the fleet)"
    )
    waves: list[Wave] = Field(
        default_factory=lambda: [Wave(percent=10), Wave(percent=50), Wave(percent=100)],
        min_length=1,
        max_length=20,
        description="the canary first, then cumulative percentages; the last reaches 100%",
    )
    soak_s: float = Field(default=600, ge=0, description="least time a wave runs before the next")
    success_threshold: float = Field(
        default=0.9, ge=0, le=1, description="share of ordered devices that must run it to advance"
    )
    error_threshold: float = Field(
        default=0.05, ge=0, le=1, description="failed / executed above this halts the rollout"
    )
    min_executed: int = Field(
        default=1, ge=1, description="devices done (succeeded or failed) before a halt can fire"
    )
    windows: list[Window] = Field(
        default_factory=list,
        max_length=20,
        description="waves start only inside one (none: any time)",
    )
    pinned: list[str] = Field(
        default_factory=list, max_length=100_000, description="devices the rollout never orders"
    )
    kind: Literal["update", "rollback"] = Field(
        default="update", description="rollback: an ordered return to earlier content"
    )
    rollback_of: int | None = Field(
        default=None,
        ge=1,
        description="for a rollback: the earlier version whose content it carries",
    )

    @model_validator(mode="after")
    def _waves_grow(self) -> Self:
        last = self.waves[-1]
        if last.percent != 100:
            raise ValueError("the last wave must be percent: 100")
        pcts = [w.percent for w in self.waves if w.percent is not None]
        if any(b <= a for a, b in itertools.pairwise(pcts)):
            raise ValueError("wave percentages must grow")
        if any(w.count is not None for w in self.waves[1:]):
            raise ValueError("only the first wave (the canary) may be a count")
        if (self.kind == "rollback") != (self.rollback_of is not None):
            raise ValueError("rollback_of is given exactly for a rollback")
        return self
