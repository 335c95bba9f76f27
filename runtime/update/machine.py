"""The install state machine: every update step is a persisted state, entered only once stored.

An update walks ``idle → downloading → verifying → loading → health_check → staged → swapping →
trial → committing → committed``; a failure before the swap ends in ``failed`` (the active slot
was never touched), a failure after it goes through ``rolling_back`` to ``rolled_back``. The
operator's rollback enters ``rolling_back`` from any state at rest or from ``trial``.

This module has two layers, like Mender's client (``app/state.go``, ``datastore/statedata.go``):

- a **pure core** — :class:`InstallState` (stable persisted names: devices in the field read
  files written by older releases, so a name is never renamed or reused), :class:`Event`, the
  ``(state, event) → state`` table :data:`TRANSITIONS` (an unknown pair is an error, never a
  silent no-op), the start-up :data:`RECOVERY` map and the crash-loop rule; no I/O at all;
- a **thin shell** — :class:`InstallMachine`, which stores the next state in ``slots.json``
  *before* the work of that state starts (so a process killed anywhere restarts in a state that
  says what was in progress) and, at start-up, applies the recovery map once.

Recovery after a crash (the last persisted state decides):

- ``downloading``/``verifying``/``loading``/``health_check``/``staged``: the inactive slot may be
  half-written: it is wiped, the active slot keeps serving, the update is retried;
- ``swapping``/``trial``: the new bundle may be what killed the process: back to the previous
  committed slot (``trial``: the version is marked bad; ``swapping`` before the switch was
  stored: only the staged slot is discarded);
- ``committing``: the trial had passed: the commit is finished;
- ``rolling_back``: the rollback is finished;
- states at rest (``idle``, ``committed``, ``rolled_back``, ``failed``, ``shadow_staged``):
  nothing to do (a candidate staged for shadow mode stays staged for the shadow to reuse).

A shadow candidate is staged by the same machine (:mod:`runtime.update.installer`):
``downloading → verifying → shadow_staged``; the shadow worker loads it in its own process.
A promotion then walks the ordinary chain from ``downloading`` (each step already done) to
``swapping`` and the trial.

Loop counter: each recovery of the same update increments ``crashes``; past
``update.max_crash_restarts`` the version is marked bad and no longer retried (a bundle that
kills the process while staging would otherwise crash it forever).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from runtime.errors import UpdateError
from runtime.update import _testhooks

if TYPE_CHECKING:
    from runtime.update.slots import SlotName, Slots

__all__ = [
    "AT_REST",
    "RECOVERY",
    "STAGING",
    "TRANSITIONS",
    "Event",
    "InstallMachine",
    "InstallRecord",
    "InstallState",
    "Recovered",
    "Recovery",
    "crash_loop_exceeded",
    "transition",
]

log = logging.getLogger("leanloop.update")


class InstallState(enum.StrEnum):
    """Persisted install states. The values are stored on devices: never rename or reuse one."""

    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    LOADING = "loading"
    HEALTH_CHECK = "health_check"
    STAGED = "staged"
    SWAPPING = "swapping"
    TRIAL = "trial"
    COMMITTING = "committing"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    SHADOW_STAGED = "shadow_staged"  # a shadow candidate waits, verified, in the inactive slot


class Event(enum.StrEnum):
    """What happened; the table says where it leads from each state."""

    START = "start"  # a new update (bundle, version) begins
    FETCHED = "fetched"  # every file is in the inactive slot
    VERIFIED = "verified"  # every file hashes as the signed manifest says, and is fsynced
    LOADED = "loaded"  # the models loaded in the background
    HEALTHY = "healthy"  # the golden-input check passed
    HANDED_OVER = "handed_over"  # the switch is stored; the frame loop swaps at the next frame
    SWAPPED = "swapped"  # the frame loop serves the new bundle
    TRIAL_PASSED = "trial_passed"
    COMMIT_DONE = "commit_done"
    FAIL = "fail"  # a step failed (reason attached)
    TRIAL_FAILED = "trial_failed"
    ROLLBACK = "rollback"  # the operator (or start-up) asks for the previous committed bundle
    ROLLED_BACK = "rolled_back"  # the previous committed slot is active again
    PARKED = "parked"  # a shadow candidate is verified in the inactive slot; nothing switched


S, E = InstallState, Event

AT_REST = frozenset({S.IDLE, S.COMMITTED, S.ROLLED_BACK, S.FAILED, S.SHADOW_STAGED})
"""States in which no update is in progress: a new one may start, a rollback may be asked."""

STAGING = frozenset({S.DOWNLOADING, S.VERIFYING, S.LOADING, S.HEALTH_CHECK, S.STAGED})
"""States in which only the inactive slot is being written or checked."""


def _table() -> dict[tuple[InstallState, Event], InstallState]:
    t: dict[tuple[InstallState, Event], InstallState] = {}
    for s in AT_REST:
        t[s, E.START] = S.DOWNLOADING
        t[s, E.ROLLBACK] = S.ROLLING_BACK
    chain = [
        (S.DOWNLOADING, E.FETCHED, S.VERIFYING),
        (S.VERIFYING, E.VERIFIED, S.LOADING),
        (S.VERIFYING, E.PARKED, S.SHADOW_STAGED),  # a candidate: the shadow worker loads it
        (S.LOADING, E.LOADED, S.HEALTH_CHECK),
        (S.HEALTH_CHECK, E.HEALTHY, S.STAGED),
        (S.STAGED, E.HANDED_OVER, S.SWAPPING),
        (S.SWAPPING, E.SWAPPED, S.TRIAL),
        (S.TRIAL, E.TRIAL_PASSED, S.COMMITTING),
        (S.COMMITTING, E.COMMIT_DONE, S.COMMITTED),
        (S.TRIAL, E.TRIAL_FAILED, S.ROLLING_BACK),
        (S.TRIAL, E.ROLLBACK, S.ROLLING_BACK),
        (S.SWAPPING, E.FAIL, S.ROLLING_BACK),
        (S.ROLLING_BACK, E.ROLLED_BACK, S.ROLLED_BACK),
        (S.ROLLING_BACK, E.FAIL, S.FAILED),  # nothing committed to return to
    ]
    for a, ev, b in chain:
        t[a, ev] = b
    for s in STAGING:
        t[s, E.FAIL] = S.FAILED
    return t


TRANSITIONS: dict[tuple[InstallState, Event], InstallState] = _table()
"""The whole machine. A pair that is not here is a programming error."""


def transition(state: InstallState, event: Event) -> InstallState:
    """The state ``event`` leads to from ``state``. Raises UpdateError for an unknown pair."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise UpdateError(
            f"install state machine: event {event.value!r} is not allowed in state {state.value!r}"
        ) from None


class Recovery(enum.StrEnum):
    """What start-up does about the last persisted state."""

    NOTHING = "nothing"
    DISCARD_STAGING = "discard_staging"  # wipe the inactive slot, keep serving, retry
    ROLL_BACK = "roll_back"  # return to the previous committed slot
    FINISH_COMMIT = "finish_commit"
    FINISH_ROLLBACK = "finish_rollback"


RECOVERY: dict[InstallState, Recovery] = {
    S.IDLE: Recovery.NOTHING,
    S.COMMITTED: Recovery.NOTHING,
    S.ROLLED_BACK: Recovery.NOTHING,
    S.FAILED: Recovery.NOTHING,
    S.SHADOW_STAGED: Recovery.NOTHING,  # the staged candidate is kept for the shadow to reuse
    S.DOWNLOADING: Recovery.DISCARD_STAGING,
    S.VERIFYING: Recovery.DISCARD_STAGING,
    S.LOADING: Recovery.DISCARD_STAGING,
    S.HEALTH_CHECK: Recovery.DISCARD_STAGING,
    S.STAGED: Recovery.DISCARD_STAGING,
    S.SWAPPING: Recovery.ROLL_BACK,
    S.TRIAL: Recovery.ROLL_BACK,
    S.COMMITTING: Recovery.FINISH_COMMIT,
    S.ROLLING_BACK: Recovery.FINISH_ROLLBACK,
}
"""One entry per state (a test checks it is total): the start-up switch after a crash."""


def crash_loop_exceeded(crashes: int, max_crash_restarts: int) -> bool:
    """True when an update has been interrupted by crashes more often than allowed."""
    return crashes > max_crash_restarts


class InstallRecord(BaseModel):
    """The persisted install state (inside ``slots.json``; field names never change)."""

    model_config = ConfigDict(extra="forbid")
    state: InstallState = Field(default=InstallState.IDLE, description="current install state")
    bundle: str | None = Field(default=None, description="bundle of the update in progress/last")
    version: int | None = Field(default=None, description="its version")
    slot: Literal["a", "b"] | None = Field(default=None, description="the slot it is staged in")
    crashes: int = Field(default=0, ge=0, description="restarts that found it in progress")
    reason: str | None = Field(default=None, description="why it failed or rolled back")
    since: float = Field(default=0.0, description="when the state was entered (unix time)")
    entered: int = Field(default=0, ge=0, description="states stored so far (all updates)")
    by_operator: bool = Field(
        default=False, description="the rollback in progress or last was the operator's"
    )


@dataclass(frozen=True)
class Recovered:
    """What start-up recovery did, for the log and the report to the hub."""

    recovery: Recovery
    interrupted: InstallState
    state: InstallState
    message: str
    bundle: str | None
    version: int | None
    rolled_back: bool
    crash_loop: bool


class InstallMachine:
    """The I/O shell over :class:`~runtime.update.slots.Slots`: store first, then enter.

    ``fire(event, apply=...)``: ``apply`` changes the slot state in memory only; the new install
    state and that slot change are then written in one atomic save of ``slots.json``, so the
    two never disagree on disk. After the save, the test hook may kill the process (the kill
    matrix uses it to stop the device right after each state is stored).
    """

    def __init__(self, slots: Slots, max_crash_restarts: int = 3) -> None:
        self.slots = slots
        self.max_crash_restarts = max_crash_restarts

    @property
    def record(self) -> InstallRecord:
        return self.slots.state.install

    @property
    def state(self) -> InstallState:
        return self.record.state

    def fire(
        self, event: Event, apply: Callable[[], object] | None = None, reason: str | None = None
    ) -> InstallState:
        """Apply the slot change, store it with the next state, then run the test hook.

        Raises UpdateError if ``event`` is not allowed now (nothing is changed or stored then).
        """
        rec = self.record
        nxt = transition(rec.state, event)
        if apply is not None:
            apply()
        rec.state = nxt
        rec.since = time.time()
        rec.entered += 1
        if reason is not None:
            rec.reason = reason
        self.slots.save(f"{event.value} -> {nxt.value}" + (f": {reason}" if reason else ""))
        _testhooks.on_state(nxt.value)
        return nxt

    def start(self, bundle: str, version: int, slot: SlotName, apply: Callable[[], object]) -> None:
        """Begin the update to ``bundle`` ``version`` in ``slot``.

        The crash count is kept when the same update starts again (the loop counter) and reset
        for a different one. Raises UpdateError if an update is already in progress.
        """
        rec = self.record
        transition(rec.state, E.START)  # refuse before touching the record
        if (rec.bundle, rec.version) != (bundle, version):
            rec.crashes = 0
        rec.bundle, rec.version, rec.slot, rec.reason = bundle, version, slot, None
        rec.by_operator = False
        self.fire(E.START, apply)

    def begin_rollback(
        self, reason: str, require_previous: bool = True, by_operator: bool = False
    ) -> SlotName | None:
        """Store ``rolling_back`` for a return to the previous committed slot; returns it.

        ``by_operator``: the operator asked (the version left is then held back, not marked
        bad). Raises UpdateError when there is none (unless ``require_previous`` is false: the
        active bundle is then abandoned with nothing to serve) or when an update is being
        staged.
        """
        if self.state not in AT_REST and self.state is not S.TRIAL:
            raise UpdateError(
                f"an update is in progress ({self.state.value}); try again when it is done"
            )
        prev = self.slots.state.previous
        if prev is not None and self.slots.info(prev).status != "committed":
            prev = None
        if prev is None and require_previous:
            raise UpdateError("no previous committed bundle to roll back to")
        act = self.slots.state.active
        rec = self.record
        if act is not None:
            info = self.slots.info(act)
            rec.bundle, rec.version, rec.slot = info.bundle, info.version, act
        rec.by_operator = by_operator
        self.fire(E.ROLLBACK, reason=reason)
        return prev

    def finish_rollback(self) -> SlotName | None:
        """From ``rolling_back``: make the previous committed slot active; store the result.

        A bundle on trial is marked bad (its trial failed); one the operator left (the record's
        ``by_operator``) is held back: the device does not reinstall it by itself until the
        operator marks it good. Returns the active slot.
        """
        rec = self.record
        slots = self.slots
        act = slots.state.active
        prev = slots.state.previous
        can = prev is not None and slots.info(prev).status == "committed"
        hold = rec.by_operator
        if act is not None and act == rec.slot:
            if not can:
                self.fire(E.FAIL, apply=lambda: slots.fail_trial_nosave(hold), reason=rec.reason)
                return slots.state.active
            self.fire(E.ROLLED_BACK, apply=lambda: slots.fail_trial_nosave(hold))
        else:
            self.fire(E.ROLLED_BACK)
        return slots.state.active

    def recover(self) -> Recovered | None:
        """Start-up: apply :data:`RECOVERY` to the last stored state. None: nothing to do."""
        rec = self.record
        was = rec.state
        action = RECOVERY[was]
        slots = self.slots
        if action is Recovery.NOTHING:
            return None
        who = f"{rec.bundle} v{rec.version}"
        crash_loop = False
        rolled_back = False
        if action is Recovery.DISCARD_STAGING:
            rec.crashes += 1
            crash_loop = crash_loop_exceeded(rec.crashes, self.max_crash_restarts)
            slot = rec.slot
            if crash_loop:
                reason = (
                    f"{who}: interrupted {rec.crashes} times (in {was.value}); crash loop, "
                    "marked bad, not retried"
                )
            else:
                reason = f"{who}: interrupted in {was.value} by a restart; will retry"

            def discard() -> None:
                if slot is not None and slot != slots.state.active:
                    slots.discard_nosave(slot, bad=crash_loop)

            self.fire(E.FAIL, apply=discard, reason=reason)
        elif action is Recovery.ROLL_BACK:
            rec.crashes += 1
            crash_loop = crash_loop_exceeded(rec.crashes, self.max_crash_restarts)
            slot = rec.slot
            activated = slot is not None and slots.state.active == slot
            if was is S.TRIAL:
                reason = f"{who}: the process died during its trial; rolled back"
                self.fire(E.TRIAL_FAILED, reason=reason)
                self.finish_rollback()
            else:  # swapping: the switch may or may not be stored; the bundle is not blamed
                reason = f"{who}: interrupted while swapping; rolled back, will retry"
                if crash_loop:
                    reason = f"{who}: interrupted {rec.crashes} times while swapping; marked bad"
                self.fire(E.FAIL, reason=reason)

                def undo() -> None:
                    if slot is None:
                        return
                    if activated:
                        slots.undo_activation_nosave(slot, bad=crash_loop)
                    elif slots.state.active != slot:
                        slots.discard_nosave(slot, bad=crash_loop)

                self.fire(E.ROLLED_BACK, apply=undo)
            rolled_back = activated or was is S.TRIAL
        elif action is Recovery.FINISH_COMMIT:
            self.fire(E.COMMIT_DONE, apply=slots.commit_nosave)
        else:  # FINISH_ROLLBACK
            self.finish_rollback()
            rolled_back = True
        msg = f"restarted in {was.value}: {RECOVERY[was].value} -> {self.state.value}"
        if rec.reason and action is not Recovery.FINISH_COMMIT:
            msg += f" ({rec.reason})"
        log.warning("recovery: %s", msg)
        return Recovered(
            action, was, self.state, msg, rec.bundle, rec.version, rolled_back, crash_loop
        )
