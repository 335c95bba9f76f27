"""The I/O shell around the rollout engine: read each running rollout and what its devices
report, call :func:`hub.rollouts.engine.tick`, store the outcome.

The hub runs :func:`tick_all` every ``rollout_tick_s`` (on one replica only: the leader, see
:mod:`hub.leader`), and once right after a rollout is created or resumed, so its canary is ordered
at once.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from hub.rollouts.engine import tick, wave_counts

if TYPE_CHECKING:
    from hub.fastpath import FastPath
    from hub.storage import HubDB, Rollout

__all__ = ["rollout_json", "tick_all", "tick_one"]

log = logging.getLogger("leanloop.hub.rollouts.ticker")


async def tick_one(db: HubDB, rollout: Rollout, now: float | None = None) -> Rollout:
    """One engine step of one rollout, stored; returns the rollout as it is now."""
    views = await db.call(db.rollout_views, rollout.spec)
    res = tick(
        str(rollout.id), rollout.spec, rollout.state, views, time.time() if now is None else now
    )
    if res.state == rollout.state and not res.order:
        return rollout
    await db.call(db.save_rollout, rollout.id, rollout.spec, res.state, res.order)
    if res.order:
        log.info(
            "rollout %s: wave %s orders %d device(s) to %s v%s",
            rollout.id, res.state.wave, len(res.order), rollout.spec.bundle, rollout.spec.version,
        )  # fmt: skip
    if res.state.status != rollout.state.status:
        log.warning("rollout %s is %s: %s", rollout.id, res.state.status, res.state.reason or "")
    return await db.call(db.rollout, rollout.id)


async def tick_all(db: HubDB, now: float | None = None, fast: FastPath | None = None) -> int:
    """Step every running rollout; return how many there were. With the hub's ``fast`` path,
    the heartbeats it holds are written first (the halt rules read them) and its caches learn
    of the orders at once."""
    if fast is not None:
        await fast.flush()
    running = await db.call(db.rollouts, True)
    for r in running:
        await tick_one(db, r, now)
    if fast is not None:
        await fast.refresh()
    return len(running)


async def rollout_json(db: HubDB, rollout: Rollout) -> dict[str, Any]:
    """What ``GET /admin/rollouts/{id}`` answers: spec, status, per-wave counts."""
    views = await db.call(db.rollout_views, rollout.spec)
    spec, state = rollout.spec, rollout.state
    pinned = set(spec.pinned)
    return {
        "id": rollout.id,
        "bundle": spec.bundle,
        "version": spec.version,
        "cohort": spec.cohort,
        "kind": spec.kind,
        "rollback_of": spec.rollback_of,
        "status": state.status,
        "reason": state.reason,
        "wave": state.wave,
        "targeted": sum(1 for v in views if v.id not in pinned),
        "waves": [
            {
                "wave": c.wave,
                "target": c.target,
                "ordered": c.ordered,
                "succeeded": c.succeeded,
                "failed": c.failed,
                "pending": c.pending,
            }
            for c in wave_counts(spec, state, views)
        ],
        "spec": spec.model_dump(mode="json"),
        "created": rollout.created,
        "updated": rollout.updated,
    }
