"""The rollout engine: which devices get the order next, and when a rollout halts. Pure.

The hub's rollout ticker (:mod:`hub.rollouts.ticker`) reads a rollout's state and what the
devices reported, calls :func:`tick`, and stores what it returns: the new state and the devices
to order now. Nothing here touches a clock, a database or the network, so every rule is tested
as a plain function (tests/hub/test_rollout_engine.py).

Device choice is deterministic and spread over cohorts: within each cohort the devices are
ranked by a hash of (rollout id, device id), and the cohorts are interleaved by each device's
relative rank, so a 10% wave takes about 10% of every cohort. Waves are prefixes of that one
order: a later wave never skips a device an earlier one would have taken.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from hub.rollouts.spec import RolloutSpec, Wave, Window

__all__ = [
    "Action",
    "DeviceView",
    "RolloutState",
    "RolloutStatus",
    "TickResult",
    "WaveCounts",
    "control",
    "in_window",
    "order_devices",
    "tick",
    "wave_counts",
    "wave_size",
]

RolloutStatus = Literal["running", "paused", "halted", "aborted", "done"]
ACTIVE: frozenset[str] = frozenset({"running"})


@dataclass(frozen=True)
class DeviceView:
    """A targeted device as the rollout sees it."""

    id: str
    cohort: str | None
    runs_target: bool  # its committed active bundle is the rollout's version
    failed_target: bool  # it reported a failed install or a rollback of that version


@dataclass(frozen=True)
class RolloutState:
    """What the hub stores of a rollout between ticks."""

    status: RolloutStatus = "running"
    wave: int = -1  # index of the wave running now (-1: none started yet)
    wave_started: float | None = None
    reason: str | None = None  # why it halted (or was aborted)
    ordered: dict[str, int] = field(default_factory=dict)  # device id -> wave that ordered it


@dataclass(frozen=True)
class WaveCounts:
    """Per wave: devices ordered, running the version, failed, still pending."""

    wave: int
    target: int  # devices in all once this wave is ordered
    ordered: int
    succeeded: int
    failed: int

    @property
    def pending(self) -> int:
        return self.ordered - self.succeeded - self.failed


@dataclass(frozen=True)
class TickResult:
    state: RolloutState
    order: list[str]  # devices to order now (their desired bundle becomes the rollout's)


def _rank_key(rollout_id: str, device_id: str) -> bytes:
    return hashlib.sha256(f"{rollout_id}\0{device_id}".encode()).digest()


def order_devices(rollout_id: str, devices: Iterable[tuple[str, str | None]]) -> list[str]:
    """The order in which a rollout reaches ``(device id, cohort)`` pairs (see module doc)."""
    by_cohort: dict[str | None, list[str]] = {}
    for device_id, cohort in devices:
        by_cohort.setdefault(cohort, []).append(device_id)
    keyed: list[tuple[float, bytes, str]] = []
    for ids in by_cohort.values():
        ranked = sorted(ids, key=lambda d: _rank_key(rollout_id, d))
        n = len(ranked)
        for i, device_id in enumerate(ranked):
            # Relative rank in the cohort (middle of its slot), then the hash as a tie-break.
            keyed.append(((i + 0.5) / n, _rank_key(rollout_id, device_id), device_id))
    keyed.sort()
    return [device_id for _, _, device_id in keyed]


def wave_size(wave: Wave, targeted: int) -> int:
    """How many devices in all a wave reaches when ``targeted`` devices are in the rollout."""
    if targeted <= 0:
        return 0
    if wave.count is not None:
        return min(wave.count, targeted)
    assert wave.percent is not None
    return max(1, min(targeted, math.ceil(wave.percent * targeted / 100 - 1e-9)))


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def in_window(windows: Sequence[Window], now: float) -> bool:
    """True when ``now`` (unix time) is inside one of the windows (always, with none)."""
    if not windows:
        return True
    t = datetime.fromtimestamp(now, UTC)
    minute, day = t.hour * 60 + t.minute, t.weekday()
    for w in windows:
        start, end = _minutes(w.start), _minutes(w.end)
        if start <= end:
            if day in w.days and start <= minute < end:
                return True
        elif (day in w.days and minute >= start) or ((day - 1) % 7 in w.days and minute < end):
            return True  # a window past midnight belongs to the day it started
    return False


def wave_counts(
    spec: RolloutSpec, state: RolloutState, devices: Sequence[DeviceView]
) -> list[WaveCounts]:
    """Per-wave counts of a rollout, for ``rollout status``."""
    view = {d.id: d for d in devices if d.id not in set(spec.pinned)}
    out = []
    for i, wave in enumerate(spec.waves):
        ids = [d for d, w in state.ordered.items() if w == i]
        succ = sum(1 for d in ids if d in view and view[d].runs_target)
        fail = sum(
            1 for d in ids if d in view and view[d].failed_target and not view[d].runs_target
        )
        out.append(WaveCounts(i, wave_size(wave, len(view)), len(ids), succ, fail))
    return out


def tick(
    rollout_id: str,
    spec: RolloutSpec,
    state: RolloutState,
    devices: Sequence[DeviceView],
    now: float,
) -> TickResult:
    """One step of a rollout: halt it, finish it, or order the next wave (or do nothing).

    ``devices`` are the devices the rollout targets now (its cohort or the fleet), pinned ones
    included (they are left out here). Halting wins over advancing: a failure seen in the same
    tick that would open the next wave stops the rollout before any device of that wave is
    ordered.
    """
    if state.status not in ACTIVE:
        return TickResult(state, [])
    pinned = set(spec.pinned)
    targeted = [d for d in devices if d.id not in pinned]
    view = {d.id: d for d in targeted}
    ordered = state.ordered
    succeeded = sum(1 for d in ordered if d in view and view[d].runs_target)
    failed = sum(
        1 for d in ordered if d in view and view[d].failed_target and not view[d].runs_target
    )
    executed = succeeded + failed
    if executed >= spec.min_executed and failed > spec.error_threshold * executed:
        reason = (
            f"{failed} of {executed} devices that finished failed "
            f"({failed / executed:.0%} > {spec.error_threshold:.0%}) in wave {state.wave}"
        )
        return TickResult(replace(state, status="halted", reason=reason), [])
    if state.wave >= 0:
        alive = [d for d in ordered if d in view]
        share = succeeded / len(alive) if alive else 1.0
        soaked = state.wave_started is not None and now - state.wave_started >= spec.soak_s
        if share < spec.success_threshold or not soaked:
            return TickResult(state, [])
        if state.wave == len(spec.waves) - 1:
            return TickResult(replace(state, status="done"), [])
    if not in_window(spec.windows, now):
        return TickResult(state, [])
    nxt = state.wave + 1
    want = wave_size(spec.waves[nxt], len(targeted))
    order: list[str] = []
    total = sum(1 for d in ordered if d in view)
    for device_id in order_devices(rollout_id, ((d.id, d.cohort) for d in targeted)):
        if total >= want:
            break
        if device_id not in ordered:
            order.append(device_id)
            total += 1
    new_ordered = {**ordered, **dict.fromkeys(order, nxt)}
    return TickResult(replace(state, wave=nxt, wave_started=now, ordered=new_ordered), order)


Action = Literal["pause", "resume", "abort"]
_ALLOWED: dict[str, frozenset[str]] = {
    "pause": frozenset({"running"}),
    "resume": frozenset({"paused", "halted"}),  # resuming a halt is the admin's call
    "abort": frozenset({"running", "paused", "halted"}),
}
_AFTER: dict[str, RolloutStatus] = {"pause": "paused", "resume": "running", "abort": "aborted"}


def control(state: RolloutState, action: Action, reason: str | None = None) -> RolloutState:
    """An admin's pause / resume / abort. Raises ValueError when the status does not allow it."""
    if state.status not in _ALLOWED[action]:
        raise ValueError(f"cannot {action} a rollout that is {state.status}")
    return replace(
        state,
        status=_AFTER[action],
        reason=reason if action == "abort" else None if action == "resume" else state.reason,
    )
