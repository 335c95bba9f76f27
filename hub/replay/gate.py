"""The gate: judge a candidate against the blessed baseline on history, slice by slice.

:func:`judge` takes the frames, both bundles' outcomes (paired: the same frames, in the same
order) and a :class:`~hub.replay.spec.GateSpec`. For ``all`` frames and every slice the spec
asks for, and every watched metric, it computes both values, the paired bootstrap interval of
the difference (oriented so that positive is better), and one status:

- ``insufficient_data`` — the slice has fewer than ``min_size`` frames (never ``pass``);
- ``not_applicable`` — the metric is undefined on the slice (e.g. no true events);
- ``below_floor`` — the candidate's value is on the wrong side of the floor;
- ``regression`` — the interval lies wholly below zero *and* the drop is larger than allowed;
- ``pass`` — none of the above.

The decision is ``blocked`` when any judgement is a regression or below its floor (or has
insufficient data, if the spec says so), and names those slices; otherwise ``pass``. Resampling
is seeded per slice from the spec's seed and the slice's name, so a decision repeats exactly.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from hub.replay.frames import HistoryFrame, Outcome
from hub.replay.metrics import CountTable, build_counts, resample_weights
from hub.replay.spec import GateSpec, metric_direction
from runtime.errors import ConfigError

__all__ = ["GateDecision", "Judgement", "judge", "slice_members", "time_of_day_label"]

Status = Literal["pass", "regression", "below_floor", "insufficient_data", "not_applicable"]
_MAX_CELLS = 4_000_000  # resample weights held at once (resamples x frames)


@dataclass(frozen=True)
class Judgement:
    """One metric on one slice."""

    slice: str
    metric: str
    n: int
    baseline: float | None
    candidate: float | None
    delta: float | None  # candidate - baseline, oriented: positive is better
    ci_low: float | None
    ci_high: float | None
    allowed_drop: float
    floor: float | None
    status: Status
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    """The gate's answer: pass or blocked, with every judgement behind it."""

    passed: bool
    judgements: list[Judgement]
    blocked_by: list[Judgement]

    @property
    def decision(self) -> str:
        return "pass" if self.passed else "blocked"

    def summary(self) -> str:
        """One line for people: what passed or which slices blocked it."""
        if self.passed:
            insufficient = sorted(
                {j.slice for j in self.judgements if j.status == "insufficient_data"}
            )
            extra = f" ({len(insufficient)} slices with insufficient data)" if insufficient else ""
            return f"pass: {len(self.judgements)} judgements{extra}"
        parts = [f"{j.slice} {j.metric} {j.status}" for j in self.blocked_by[:5]]
        more = len(self.blocked_by) - len(parts)
        return "blocked: " + "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "summary": self.summary(),
            "blocked_by": [f"{j.slice} {j.metric}" for j in self.blocked_by],
            "judgements": [j.to_dict() for j in self.judgements],
        }


def time_of_day_label(t: float, hours: Sequence[int]) -> str:
    """The time-of-day bin of a unix time, e.g. ``06-12`` (UTC)."""
    h = datetime.fromtimestamp(t, UTC).hour
    start = max(x for x in hours if x <= h)
    k = list(hours).index(start)
    end = hours[k + 1] if k + 1 < len(hours) else 24
    return f"{start:02d}-{end:02d}"


def slice_members(frames: Sequence[HistoryFrame], spec: GateSpec) -> dict[str, np.ndarray]:
    """``{"all": rows, "cohort=a": rows, ...}``: frame indices of every slice, in a stable order."""
    groups: dict[str, list[int]] = {}
    for n, f in enumerate(frames):
        keys: list[str] = []
        for dim in spec.slices.by:
            if dim == "cohort":
                keys.append(f"cohort={f.cohort or '-'}")
            elif dim == "device":
                keys.append(f"device={f.device or '-'}")
            elif dim == "time_of_day":
                keys.append(
                    f"time_of_day={time_of_day_label(f.time, spec.slices.time_of_day_hours)}"
                )
            elif dim == "selection":
                keys.append(f"selection={f.selection}")
            else:
                keys += sorted({f"class={t.label}" for t in f.truth})
        for key in keys:
            groups.setdefault(key, []).append(n)
    out = {"all": np.arange(len(frames))}
    for key in sorted(groups):
        out[key] = np.array(groups[key], np.int64)
    return out


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _judge_one(
    name: str,
    metric: str,
    base: CountTable,
    cand: CountTable,
    weights: list[np.ndarray],
    spec: GateSpec,
) -> Judgement:
    rule = spec.metrics[metric]
    sign = 1.0 if metric_direction(metric) == "higher" else -1.0
    b, c = base.value(metric), cand.value(metric)
    n = base.n
    common: dict[str, Any] = {"slice": name, "metric": metric, "n": n, "floor": rule.floor}
    if n < spec.slices.min_size:
        return Judgement(
            baseline=_finite(b), candidate=_finite(c), delta=None, ci_low=None, ci_high=None,
            allowed_drop=0.0, status="insufficient_data",
            reason=f"{n} frames < min_size {spec.slices.min_size}", **common,
        )  # fmt: skip
    if math.isnan(b) or math.isnan(c):
        return Judgement(
            baseline=_finite(b), candidate=_finite(c), delta=None, ci_low=None, ci_high=None,
            allowed_drop=0.0, status="not_applicable", reason="undefined on this slice",
            **common,
        )  # fmt: skip
    diffs = np.concatenate(
        [sign * (cand.values(metric, w) - base.values(metric, w)) for w in weights]
    )
    alpha = (1.0 - spec.bootstrap.level) / 2
    lo, hi = (float(v) for v in np.nanquantile(diffs, [alpha, 1 - alpha]))
    delta = sign * (c - b)
    allowed = rule.allowed_drop(b)
    status: Status = "pass"
    reason = f"delta {delta:+.4f}, CI [{lo:+.4f}, {hi:+.4f}]"
    if rule.floor is not None and sign * (c - rule.floor) < 0:
        status, reason = "below_floor", f"{c:.4f} is past the floor {rule.floor}"
    elif hi < 0 and -delta > allowed:
        status = "regression"
        reason = (
            f"drop {-delta:.4f} > allowed {allowed:.4f}, significant: CI [{lo:+.4f}, {hi:+.4f}]"
        )
    return Judgement(
        baseline=b, candidate=c, delta=delta, ci_low=lo, ci_high=hi, allowed_drop=allowed,
        status=status, reason=reason, **common,
    )  # fmt: skip


def judge(
    frames: Sequence[HistoryFrame],
    baseline: Sequence[Outcome],
    candidate: Sequence[Outcome],
    classes: Sequence[str],
    spec: GateSpec,
) -> GateDecision:
    """Judge the candidate against the baseline on paired outcomes of the same frames."""
    unknown = sorted(m for m in spec.metrics if ":" in m and m.split(":", 1)[1] not in set(classes))
    if unknown:
        raise ConfigError(f"gate spec watches {', '.join(unknown)}: not a class of the candidate")
    ev = spec.events
    base_all = build_counts(frames, baseline, classes, ev.classes, ev.alert_threshold, spec.iou)
    cand_all = build_counts(frames, candidate, classes, ev.classes, ev.alert_threshold, spec.iou)
    judgements: list[Judgement] = []
    for name, rows in slice_members(frames, spec).items():
        base, cand = base_all.subset(rows), cand_all.subset(rows)
        rng = np.random.default_rng([spec.bootstrap.seed & 0xFFFFFFFF, zlib.crc32(name.encode())])
        weights: list[np.ndarray] = []
        if len(rows) >= spec.slices.min_size:
            left = spec.bootstrap.resamples
            chunk = max(1, _MAX_CELLS // max(1, len(rows)))
            while left > 0:
                weights.append(resample_weights(rng, len(rows), min(chunk, left)))
                left -= chunk
        for metric in spec.metrics:
            judgements.append(_judge_one(name, metric, base, cand, weights, spec))
    bad = {"regression", "below_floor"} | (
        {"insufficient_data"} if spec.insufficient_blocks else set()
    )
    blocked_by = [j for j in judgements if j.status in bad]
    return GateDecision(passed=not blocked_by, judgements=judgements, blocked_by=blocked_by)
