"""The install state machine: the pure table (every pair), the recovery map, and the shell's
"stored before entered" and start-up recovery over a real slots folder."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from runtime.errors import UpdateError
from runtime.update.machine import (
    AT_REST,
    RECOVERY,
    STAGING,
    TRANSITIONS,
    Event,
    InstallMachine,
    InstallState,
    Recovery,
    crash_loop_exceeded,
    transition,
)
from runtime.update.slots import Slots

S, E = InstallState, Event

# The whole table, written out once more by hand: a change to the machine must change this too.
EXPECTED: dict[tuple[InstallState, Event], InstallState] = {
    **{(s, E.START): S.DOWNLOADING for s in AT_REST},
    **{(s, E.ROLLBACK): S.ROLLING_BACK for s in AT_REST},
    **{(s, E.FAIL): S.FAILED for s in STAGING},
    (S.DOWNLOADING, E.FETCHED): S.VERIFYING,
    (S.VERIFYING, E.VERIFIED): S.LOADING,
    (S.VERIFYING, E.PARKED): S.SHADOW_STAGED,
    (S.LOADING, E.LOADED): S.HEALTH_CHECK,
    (S.HEALTH_CHECK, E.HEALTHY): S.STAGED,
    (S.STAGED, E.HANDED_OVER): S.SWAPPING,
    (S.SWAPPING, E.SWAPPED): S.TRIAL,
    (S.SWAPPING, E.FAIL): S.ROLLING_BACK,
    (S.TRIAL, E.TRIAL_PASSED): S.COMMITTING,
    (S.TRIAL, E.TRIAL_FAILED): S.ROLLING_BACK,
    (S.TRIAL, E.ROLLBACK): S.ROLLING_BACK,
    (S.COMMITTING, E.COMMIT_DONE): S.COMMITTED,
    (S.ROLLING_BACK, E.ROLLED_BACK): S.ROLLED_BACK,
    (S.ROLLING_BACK, E.FAIL): S.FAILED,
}

# Persisted names are a file format: these strings must never change.
STORED_NAMES = [
    "idle",
    "downloading",
    "verifying",
    "loading",
    "health_check",
    "staged",
    "swapping",
    "trial",
    "committing",
    "committed",
    "rolling_back",
    "rolled_back",
    "failed",
    "shadow_staged",
]


@pytest.mark.parametrize(
    ("state", "event"), list(itertools.product(InstallState, Event)), ids=lambda x: x.value
)
def test_transition_matches_table_when_any_state_meets_any_event(
    state: InstallState, event: Event
) -> None:
    want = EXPECTED.get((state, event))
    if want is None:
        with pytest.raises(UpdateError, match="not allowed in state"):
            transition(state, event)
    else:
        assert transition(state, event) is want


def test_table_has_no_pair_the_spec_lacks_when_compared_whole() -> None:
    assert TRANSITIONS == EXPECTED


def test_state_names_never_change_when_stored() -> None:
    assert [s.value for s in InstallState] == STORED_NAMES


def test_recovery_map_is_total_when_every_state_is_listed() -> None:
    assert set(RECOVERY) == set(InstallState)
    assert {s for s, r in RECOVERY.items() if r is Recovery.NOTHING} == set(AT_REST)
    assert {s for s, r in RECOVERY.items() if r is Recovery.DISCARD_STAGING} == set(STAGING)
    assert RECOVERY[S.SWAPPING] is RECOVERY[S.TRIAL] is Recovery.ROLL_BACK
    assert RECOVERY[S.COMMITTING] is Recovery.FINISH_COMMIT
    assert RECOVERY[S.ROLLING_BACK] is Recovery.FINISH_ROLLBACK


def test_every_state_is_reachable_and_can_reach_rest_when_walking_the_table() -> None:
    seen, todo = {S.IDLE}, [S.IDLE]
    while todo:
        cur = todo.pop()
        for (a, _), b in TRANSITIONS.items():
            if a is cur and b not in seen:
                seen.add(b)
                todo.append(b)
    assert seen == set(InstallState)
    for s in InstallState:  # no state is a dead end
        assert s in AT_REST or any(a is s for a, _ in TRANSITIONS)


@pytest.mark.parametrize(("crashes", "limit", "loop"), [(0, 3, False), (3, 3, False), (4, 3, True)])
def test_crash_loop_is_detected_when_count_exceeds_limit(
    crashes: int, limit: int, loop: bool
) -> None:
    assert crash_loop_exceeded(crashes, limit) is loop


# ---- the shell over a real slots folder ---------------------------------------------------


def _committed(tmp_path: Path, version: int = 1) -> tuple[Slots, InstallMachine]:
    slots = Slots(tmp_path)
    m = InstallMachine(slots, max_crash_restarts=2)
    _update(m, version, until=S.COMMITTED)
    return slots, m


def _update(m: InstallMachine, version: int, until: InstallState) -> str:
    """Walk an update from rest up to ``until`` (each state stored), as the service does."""
    slots = m.slots
    slot = slots.inactive()
    m.start("digits", version, slot, lambda: slots.begin_staging_nosave("digits", version))
    (slots.prepare_dir(slot) / "manifest.json").write_text("{}")
    steps = [
        (E.FETCHED, None),
        (E.VERIFIED, None),
        (E.LOADED, None),
        (E.HEALTHY, lambda: slots.mark_staged_nosave(slot)),
        (E.HANDED_OVER, lambda: slots.activate_nosave(slot)),
        (E.SWAPPED, None),
        (E.TRIAL_PASSED, None),
        (E.COMMIT_DONE, slots.commit_nosave),
    ]
    for ev, apply in steps:
        if m.state is until:
            break
        m.fire(ev, apply)
    assert m.state is until
    return slot


def _restart(tmp_path: Path) -> tuple[Slots, InstallMachine]:
    slots = Slots(tmp_path)
    return slots, InstallMachine(slots, max_crash_restarts=2)


def test_state_is_stored_before_the_step_when_fired(tmp_path: Path) -> None:
    slots, m = _committed(tmp_path)
    m.start("digits", 2, "b", lambda: slots.begin_staging_nosave("digits", 2))
    stored = json.loads((tmp_path / "slots.json").read_text())
    assert stored["install"]["state"] == "downloading"
    assert stored["slots"]["b"]["status"] == "staging"  # slot change in the same write


def test_nothing_is_stored_when_event_is_not_allowed(tmp_path: Path) -> None:
    slots, m = _committed(tmp_path)
    before = (tmp_path / "slots.json").read_bytes()
    with pytest.raises(UpdateError, match="not allowed"):
        m.fire(E.SWAPPED, apply=lambda: slots.fail_trial_nosave())
    assert (tmp_path / "slots.json").read_bytes() == before
    assert slots.state.active == "a"


# (killed in, state after recovery, active version after, v2 marked bad)
KILLED_IN = [
    (S.DOWNLOADING, S.FAILED, 1, False),
    (S.VERIFYING, S.FAILED, 1, False),
    (S.LOADING, S.FAILED, 1, False),
    (S.HEALTH_CHECK, S.FAILED, 1, False),
    (S.STAGED, S.FAILED, 1, False),
    (S.SWAPPING, S.ROLLED_BACK, 1, False),
    (S.TRIAL, S.ROLLED_BACK, 1, True),
    (S.COMMITTING, S.COMMITTED, 2, False),
    (S.COMMITTED, S.COMMITTED, 2, False),
]


@pytest.mark.parametrize(("killed", "after", "version", "bad"), KILLED_IN, ids=lambda x: str(x))
def test_recovery_reaches_a_safe_state_when_killed_in_state(
    tmp_path: Path, killed: InstallState, after: InstallState, version: int, bad: bool
) -> None:
    slots, m = _committed(tmp_path)
    slot = _update(m, 2, until=killed)
    slots, m = _restart(tmp_path)  # the process died right after storing ``killed``
    got = m.recover()
    assert m.state is after
    assert (got is None) == (killed is S.COMMITTED)
    active = slots.info(slots.state.active)  # type: ignore[arg-type]
    assert active.version == version and active.status == "committed"
    assert (2 in slots.state.bad_versions.get("digits", [])) is bad
    if version == 1:
        assert not slots.dir(slot).exists() or slots.info(slot).status == "bad"
        assert slots.info(slot).status in ("empty", "bad")
    assert _restart(tmp_path)[1].recover() is None  # recovery is done once
    assert slots.recover() == []  # and leaves nothing for the safety net


def test_retry_succeeds_when_interrupted_update_starts_again(tmp_path: Path) -> None:
    slots, m = _committed(tmp_path)
    _update(m, 2, until=S.LOADING)
    slots, m = _restart(tmp_path)
    m.recover()
    _update(m, 2, until=S.COMMITTED)
    assert slots.info(slots.state.active).version == 2  # type: ignore[arg-type]
    assert slots.state.previous is not None and slots.info(slots.state.previous).version == 1


def test_update_is_marked_bad_when_restarts_loop_past_the_limit(tmp_path: Path) -> None:
    slots, m = _committed(tmp_path)
    for n in range(1, 4):
        _update(m, 2, until=S.HEALTH_CHECK)
        slots, m = _restart(tmp_path)
        got = m.recover()
        assert got is not None and m.record.crashes == n
        assert got.crash_loop is (n == 3)  # limit 2: the third crash is one too many
    assert "crash loop" in (m.record.reason or "")
    with pytest.raises(UpdateError, match="failed on this device"):
        slots.check_version("digits", 2)


def test_crash_count_resets_when_a_different_update_starts(tmp_path: Path) -> None:
    _, m = _committed(tmp_path)
    _update(m, 2, until=S.DOWNLOADING)
    _, m = _restart(tmp_path)
    m.recover()
    _update(m, 3, until=S.DOWNLOADING)
    assert m.record.crashes == 0


def test_operator_rollback_returns_to_previous_when_finished_after_a_crash(tmp_path: Path) -> None:
    slots, m = _committed(tmp_path)
    _update(m, 2, until=S.COMMITTED)
    assert m.begin_rollback("operator rollback") == "a"
    slots, m = _restart(tmp_path)  # killed in rolling_back
    got = m.recover()
    assert got is not None and got.rolled_back
    assert m.state is S.ROLLED_BACK and slots.state.active == "a"
    assert 2 in slots.state.bad_versions["digits"]


def test_operator_rollback_holds_the_version_back_until_marked_good(tmp_path: Path) -> None:
    slots, m = _committed(tmp_path)
    _update(m, 2, until=S.COMMITTED)
    m.begin_rollback("operator rollback", by_operator=True)
    slots, m = _restart(tmp_path)  # killed in rolling_back: who asked was stored with it
    m.recover()
    assert m.state is S.ROLLED_BACK and m.record.by_operator
    assert slots.state.active == "a" and "digits" not in slots.state.bad_versions
    assert slots.is_held("digits", 2)
    with pytest.raises(UpdateError, match="held back: an operator rolled back from it"):
        slots.check_version("digits", 2)
    slots.check_version("digits", 3)  # a newer version goes as usual
    assert slots.mark_good_nosave("digits", 2)
    slots.check_version("digits", 2)
    assert not slots.mark_good_nosave("digits", 2)  # nothing left to lift


def test_rollback_is_refused_when_no_previous_or_update_in_progress(tmp_path: Path) -> None:
    _, m = _committed(tmp_path)
    with pytest.raises(UpdateError, match="no previous committed"):
        m.begin_rollback("operator rollback")
    _update(m, 2, until=S.COMMITTED)
    _update(m, 3, until=S.VERIFYING)
    with pytest.raises(UpdateError, match="update is in progress"):
        m.begin_rollback("operator rollback")


def test_start_is_refused_when_an_update_is_in_progress(tmp_path: Path) -> None:
    _, m = _committed(tmp_path)
    _update(m, 2, until=S.TRIAL)
    with pytest.raises(UpdateError, match="not allowed in state 'trial'"):
        m.start("digits", 3, "a", lambda: None)
    assert m.record.version == 2
