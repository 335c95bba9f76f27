"""The gate spec (``gate.yaml``): what a candidate must show on history before it may serve.

A spec names the **metrics** the gate watches, each with its direction (``higher`` is better for
accuracy, ``lower`` for the false-alarm rate), an optional **floor** (the candidate's value must
reach it) and the **largest drop** allowed against the blessed baseline, absolute and/or
relative (when both are given the stricter one applies). Every metric is judged on the whole
history and on every **slice** (cohort, device, class, time of day) with at least
``min_size`` frames; a smaller slice says ``insufficient data``, never ``pass``.

A drop is a regression only when it is **significant**: the paired bootstrap confidence interval
of ``candidate - baseline`` (same resampled frames for both) lies wholly on the bad side of zero
*and* the observed drop is larger than allowed. ``bootstrap`` fixes the resamples, the level
and the seed, so the same history and bundles give the same decision.

``events`` says which classes are events (an alert is a final item of an event class scored at
or above ``alert_threshold``); ``behaviour`` names the model of the people in the loop and its
parameters; ``costs`` price their actions for the business KPIs (see :mod:`hub.replay.kpis`).

Example::

    format: leanloop.gate/1
    metrics:
      top1_accuracy: {max_drop: 0.02}
      recall:3: {floor: 0.8}
      false_alarm_rate: {max_drop_relative: 0.5}
    slices: {by: [cohort, device, class, time_of_day], min_size: 30}
    bootstrap: {resamples: 1000, level: 0.95, seed: 0}
    events: {classes: ["7"], alert_threshold: 0.5}
    behaviour: {model: top_k_chooser, params: {k: 2, p_pick_right: 0.9}}
    costs: {pick: 0.5, correction: 5.0, review: 1.0, missed_event: 50.0}
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runtime.errors import ConfigError

__all__ = [
    "GATE_FORMAT",
    "METRIC_DIRECTIONS",
    "BehaviourSpec",
    "BootstrapSpec",
    "Costs",
    "EventSpec",
    "GateSpec",
    "MetricRule",
    "SliceSpec",
    "load_gate_spec",
    "metric_direction",
    "parse_gate_spec",
    "spec_digest",
]

GATE_FORMAT = "leanloop.gate/1"

# Every metric the replay computes, and which way is better. ``precision:<class>`` and
# ``recall:<class>`` are per class (``<class>`` is a label of the candidate's ontology).
METRIC_DIRECTIONS: dict[str, Literal["higher", "lower"]] = {
    "top1_accuracy": "higher",
    "map50": "higher",
    "event_recall": "higher",
    "false_alarm_rate": "lower",
    "precision": "higher",
    "recall": "higher",
}
_METRIC_RE = re.compile(
    r"^(top1_accuracy|map50|event_recall|false_alarm_rate)$|^(precision|recall):.+$"
)

SliceBy = Literal["cohort", "device", "class", "time_of_day", "selection"]
_DEFAULT_SLICES: list[SliceBy] = ["cohort", "device", "class", "time_of_day", "selection"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def metric_direction(name: str) -> Literal["higher", "lower"]:
    """``higher`` or ``lower``: which way is better for a metric name."""
    return METRIC_DIRECTIONS[name.split(":", 1)[0]]


class MetricRule(_Strict):
    """What one metric must show."""

    floor: float | None = Field(
        default=None,
        description="the candidate's value must be at least this (at most, for a "
        "lower-is-better metric)",
    )
    max_drop: float | None = Field(
        default=None, ge=0, description="largest absolute worsening allowed against the baseline"
    )
    max_drop_relative: float | None = Field(
        default=None, ge=0, description="largest worsening allowed, as a fraction of the baseline"
    )

    def allowed_drop(self, baseline: float) -> float:
        """The largest worsening allowed from ``baseline`` (0 when no drop rule is given)."""
        allowed = [a for a in (self.max_drop,) if a is not None]
        if self.max_drop_relative is not None:
            allowed.append(self.max_drop_relative * abs(baseline))
        return min(allowed) if allowed else 0.0


class SliceSpec(_Strict):
    """Which slices every metric is judged on, and how many frames a slice needs."""

    by: list[SliceBy] = Field(
        default_factory=lambda: list(_DEFAULT_SLICES),
        description="slice dimensions; 'class' slices frames by their true class, "
        "'selection' into the random slice (unbiased) and strategy picks (hard cases)",
    )
    min_size: int = Field(default=30, ge=1, description="frames a slice needs to be judged")
    time_of_day_hours: list[int] = Field(
        default_factory=lambda: [0, 6, 12, 18],
        description="start hours (UTC) of the time-of-day bins, ascending",
    )

    @field_validator("time_of_day_hours")
    @classmethod
    def _hours(cls, v: list[int]) -> list[int]:
        if not v or v != sorted(set(v)) or v[0] != 0 or v[-1] > 23:
            raise ValueError("time_of_day_hours must ascend from 0 within 0..23")
        return v


class BootstrapSpec(_Strict):
    """The paired bootstrap that decides whether a drop is significant."""

    resamples: int = Field(default=1000, ge=50, le=100_000)
    level: float = Field(default=0.95, gt=0.5, lt=1.0, description="confidence level")
    seed: int = Field(default=0, description="seed of the resampling (decisions repeat)")


class EventSpec(_Strict):
    """Which classes are events, and when the system alerts on one."""

    classes: list[str] = Field(default_factory=list, description="event classes")
    alert_threshold: float = Field(default=0.5, ge=0, le=1, description="score that alerts")
    people_miss_rate: float = Field(
        default=0.3, gt=0, le=1, description="share of events people miss on their own"
    )


class BehaviourSpec(_Strict):
    """The model of the people in the loop (:mod:`hub.replay.behaviour`), by registered name."""

    model: str = Field(default="top_k_chooser")
    params: dict[str, Any] = Field(default_factory=dict)


class Costs(_Strict):
    """What each human action and each outcome costs, in one currency."""

    pick: float = Field(
        default=0.5, ge=0, description="the person picks one of the offered guesses"
    )
    correction: float = Field(default=5.0, ge=0, description="the person types a correction")
    review: float = Field(default=1.0, ge=0, description="the person reviews an alert")
    missed_event: float = Field(default=50.0, ge=0, description="an event nobody caught")
    frames_per_day: float | None = Field(
        default=None, gt=0, description="frames a day for cost/day (default: from the history)"
    )


class GateSpec(_Strict):
    """``gate.yaml``."""

    format: Literal["leanloop.gate/1"] = "leanloop.gate/1"
    metrics: dict[str, MetricRule] = Field(
        default_factory=lambda: {"top1_accuracy": MetricRule(max_drop=0.0)},
        description="metric name -> rule",
    )
    slices: SliceSpec = Field(default_factory=SliceSpec)
    bootstrap: BootstrapSpec = Field(default_factory=BootstrapSpec)
    events: EventSpec = Field(default_factory=EventSpec)
    behaviour: BehaviourSpec = Field(default_factory=BehaviourSpec)
    costs: Costs = Field(default_factory=Costs)
    iou: float = Field(default=0.5, gt=0, lt=1, description="IoU at which a box matches truth")
    insufficient_blocks: bool = Field(
        default=False, description="block when a watched slice has insufficient data"
    )

    @field_validator("metrics")
    @classmethod
    def _names(cls, v: dict[str, MetricRule]) -> dict[str, MetricRule]:
        for name in v:
            if not _METRIC_RE.match(name):
                raise ValueError(
                    f"unknown metric {name!r} (known: top1_accuracy, map50, event_recall, "
                    "false_alarm_rate, precision:<class>, recall:<class>)"
                )
        if not v:
            raise ValueError("a gate watches at least one metric")
        return v


def parse_gate_spec(data: Any, where: str = "gate spec") -> GateSpec:
    """Validate a parsed spec. Raises ConfigError with a one-line reason naming the key."""
    if data is None:
        data = {}
    try:
        return GateSpec.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "spec"
        raise ConfigError(f"{where}: {loc}: {first['msg']}") from e


def load_gate_spec(path: Path | None) -> GateSpec:
    """Read ``gate.yaml`` (None: the defaults). Raises ConfigError."""
    if path is None:
        return GateSpec()
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from e
    return parse_gate_spec(data, str(path))


def spec_digest(spec: GateSpec) -> str:
    """sha256 of the spec's canonical JSON (what a blessing names)."""
    canon = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()
