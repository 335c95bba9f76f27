"""Business KPIs of a bundle on history, under a model of the people in the loop.

Summed over frames from each frame's expected :class:`~hub.replay.behaviour.FrameEffect`:

- ``events_missed_pct``: % of true events that nobody catches (system and people together);
- ``events_people_miss_caught_pct``: % of the events people miss on their own
  (``events.people_miss_rate`` of them, spread evenly) that the system flags;
- ``actions_per_100_frames``: human actions (picks, corrections, reviews) per 100 frames;
- ``errors_left_pct``: % of true objects still wrong after the people acted;
- ``cost_per_day``: (action costs + missed events × ``costs.missed_event``) per frame, times
  frames per day (``costs.frames_per_day``, else the history's frames over its span in days,
  at least one day).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub.replay.behaviour import BehaviourModel
from hub.replay.frames import HistoryFrame, Outcome
from hub.replay.spec import GateSpec

__all__ = ["frames_per_day", "kpis"]

_DAY = 86400.0


def frames_per_day(frames: Sequence[HistoryFrame], spec: GateSpec) -> float:
    """The spec's frames/day, else the history's rate (over at least one day)."""
    if spec.costs.frames_per_day is not None:
        return spec.costs.frames_per_day
    if not frames:
        return 0.0
    times = [f.time for f in frames]
    return len(frames) / max(1.0, (max(times) - min(times)) / _DAY)


def _pct(num: float, den: float) -> float | None:
    return 100.0 * num / den if den > 0 else None


def kpis(
    frames: Sequence[HistoryFrame],
    outcomes: Sequence[Outcome],
    model: BehaviourModel,
    spec: GateSpec,
    per_day: float | None = None,
) -> dict[str, Any]:
    """The KPIs of one bundle's outcomes on ``frames`` under ``model`` (JSON-ready)."""
    actions = cost = objects = right = events = caught = system = 0.0
    for frame, out in zip(frames, outcomes, strict=True):
        e = model.effect(frame, out, spec.costs, spec.events, spec.iou)
        actions += e.actions
        cost += e.cost
        objects += e.objects
        right += e.right
        if e.event:
            events += 1
            caught += e.caught
            system += e.system_caught
    n = len(frames)
    missed = events - caught
    rate = frames_per_day(frames, spec) if per_day is None else per_day
    total = cost + missed * spec.costs.missed_event
    return {
        "frames": n,
        "events": int(events),
        "events_missed_pct": _pct(missed, events),
        "events_people_miss_caught_pct": _pct(
            system * spec.events.people_miss_rate, events * spec.events.people_miss_rate
        ),
        "actions_per_100_frames": _pct(actions, n),
        "errors_left_pct": _pct(objects - right, objects),
        "cost_per_day": (total / n) * rate if n else None,
        "frames_per_day": rate,
    }
