"""The rollout engine without I/O: wave sizes, device order, halts, windows, controls."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from hub.rollouts import (
    DeviceView,
    RolloutSpec,
    RolloutState,
    Wave,
    Window,
    control,
    in_window,
    order_devices,
    tick,
    wave_counts,
    wave_size,
)


def fleet(n: int, cohorts: int = 1) -> list[DeviceView]:
    return [DeviceView(f"d{i:04d}", f"c{i % cohorts}", False, False) for i in range(n)]


def report(devices: list[DeviceView], ok: set[str], bad: set[str]) -> list[DeviceView]:
    return [DeviceView(d.id, d.cohort, d.id in ok, d.id in bad) for d in devices]


SPEC = RolloutSpec(
    bundle="digits",
    version=2,
    waves=[Wave(percent=20), Wave(percent=50), Wave(percent=100)],
    soak_s=60,
    success_threshold=0.9,
    error_threshold=0.05,
    min_executed=5,
)


@pytest.mark.parametrize(
    ("wave", "n", "size"),
    [
        (Wave(count=3), 100, 3),
        (Wave(count=3), 2, 2),
        (Wave(percent=10), 100, 10),
        (Wave(percent=10), 5, 1),  # a wave never rounds to nothing
        (Wave(percent=33), 10, 4),
        (Wave(percent=100), 7, 7),
        (Wave(percent=50), 0, 0),
    ],
)
def test_wave_size_when_count_or_percent(wave: Wave, n: int, size: int) -> None:
    assert wave_size(wave, n) == size


def test_order_is_deterministic_and_spread_over_cohorts() -> None:
    devs = [(d.id, d.cohort) for d in fleet(300, cohorts=3)]
    a = order_devices("r1", devs)
    assert a == order_devices("r1", list(reversed(devs)))
    assert a != order_devices("r2", devs)  # another rollout, another canary
    first = Counter(dict(devs)[d] for d in a[:30])
    assert all(9 <= first[c] <= 11 for c in ("c0", "c1", "c2")), first


def test_order_spreads_a_small_cohort_too() -> None:
    devs = [(f"big{i}", "big") for i in range(90)] + [(f"small{i}", "small") for i in range(10)]
    head = order_devices("r", devs)[:10]
    assert sum(d.startswith("small") for d in head) == 1


def test_good_rollout_walks_every_wave() -> None:
    devs = fleet(50)
    state, now = RolloutState(), 1000.0
    ok: set[str] = set()
    seen_waves = []
    for _ in range(20):
        res = tick("r", SPEC, state, report(devs, ok, set()), now)
        state = res.state
        if res.order:
            seen_waves.append((state.wave, len(state.ordered)))
        ok |= set(res.order)  # every ordered device installs at once
        if state.status == "done":
            break
        now += 61
    assert state.status == "done"
    assert seen_waves == [(0, 10), (1, 25), (2, 50)]


def test_wave_waits_for_its_soak_time() -> None:
    devs = fleet(10)
    res = tick("r", SPEC, RolloutState(), devs, 0.0)
    ok = set(res.order)
    assert tick("r", SPEC, res.state, report(devs, ok, set()), 59.0).order == []
    assert len(tick("r", SPEC, res.state, report(devs, ok, set()), 60.0).order) == 3


def test_wave_waits_for_its_success_threshold() -> None:
    devs = fleet(100)
    res = tick("r", SPEC, RolloutState(), devs, 0.0)
    ordered = sorted(res.state.ordered)
    ok = set(ordered[:17])  # 85% < 90%
    assert tick("r", SPEC, res.state, report(devs, ok, set()), 1e6).order == []
    ok = set(ordered[:18])
    assert len(tick("r", SPEC, res.state, report(devs, ok, set()), 1e6).order) == 30


def test_canary_with_6_percent_failures_halts_before_the_next_wave() -> None:
    devs = fleet(100)
    res = tick("r", SPEC, RolloutState(), devs, 0.0)
    canary = sorted(res.state.ordered)
    assert len(canary) == 20
    # 6 of the 100 devices fail: at most 6% of the fleet, and all in the canary.
    bad = set(canary[:6])
    ok = set(canary[6:])
    res2 = tick("r", SPEC, res.state, report(devs, ok, bad), 1e6)
    assert res2.state.status == "halted"
    assert res2.order == []
    assert "6 of 20" in (res2.state.reason or "")
    # A halted rollout stays put, whatever the devices report later.
    assert tick("r", SPEC, res2.state, report(devs, ok | bad, set()), 2e6).order == []


def test_halt_waits_for_the_minimum_executed() -> None:
    devs = fleet(100)
    res = tick("r", SPEC, RolloutState(), devs, 0.0)
    canary = sorted(res.state.ordered)
    early = tick("r", SPEC, res.state, report(devs, set(canary[:3]), {canary[3]}), 1.0)
    assert early.state.status == "running"  # 4 executed < min_executed 5
    late = tick("r", SPEC, res.state, report(devs, set(canary[:4]), {canary[4]}), 1.0)
    assert late.state.status == "halted"


def test_pinned_devices_are_never_ordered() -> None:
    devs = fleet(20)
    spec = SPEC.model_copy(update={"pinned": ["d0003", "d0007"], "soak_s": 0})
    state, ok = RolloutState(), set[str]()
    for _ in range(5):
        res = tick("r", spec, state, report(devs, ok, set()), 0.0)
        state, ok = res.state, ok | set(res.order)
    assert state.status == "done"
    assert {"d0003", "d0007"}.isdisjoint(state.ordered)
    assert len(state.ordered) == 18


def test_paused_rollout_orders_nothing_and_resumes() -> None:
    devs = fleet(10)
    spec = SPEC.model_copy(update={"soak_s": 0})
    res = tick("r", spec, RolloutState(), devs, 0.0)
    paused = control(res.state, "pause")
    ok = set(res.state.ordered)
    assert tick("r", spec, paused, report(devs, ok, set()), 1.0).order == []
    resumed = control(paused, "resume")
    assert len(tick("r", spec, resumed, report(devs, ok, set()), 1.0).order) == 3
    with pytest.raises(ValueError, match="cannot pause a rollout that is paused"):
        control(paused, "pause")
    aborted = control(resumed, "abort", "admin said so")
    assert aborted.status == "aborted" and aborted.reason == "admin said so"
    with pytest.raises(ValueError):
        control(aborted, "resume")


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("when", "inside"),
    [
        ("2026-12-07T02:30", True),  # Monday inside 02:00-04:00
        ("2026-12-07T04:00", False),
        ("2026-12-08T02:30", False),  # Tuesday: not a listed day
        ("2026-12-06T23:30", True),  # Sunday 23:30 in the Sunday 23:00-01:00 window
        ("2026-12-07T00:30", True),  # ... which runs into Monday
        ("2026-12-07T01:30", False),
    ],
)
def test_maintenance_windows(when: str, inside: bool) -> None:
    windows = [
        Window(days=[0], start="02:00", end="04:00"),
        Window(days=[6], start="23:00", end="01:00"),
    ]
    assert in_window(windows, _at(when)) is inside


def test_next_wave_waits_for_a_window() -> None:
    spec = SPEC.model_copy(update={"windows": [Window(start="02:00", end="03:00")]})
    assert tick("r", spec, RolloutState(), fleet(10), _at("2026-12-07T05:00")).order == []
    assert len(tick("r", spec, RolloutState(), fleet(10), _at("2026-12-07T02:10")).order) == 2


def test_wave_counts_per_wave() -> None:
    devs = fleet(10)
    res = tick("r", SPEC, RolloutState(), devs, 0.0)
    first = sorted(res.state.ordered)
    counts = wave_counts(SPEC, res.state, report(devs, {first[0]}, {first[1]}))
    assert [(c.target, c.ordered, c.succeeded, c.failed, c.pending) for c in counts] == [
        (2, 2, 1, 1, 0),
        (5, 0, 0, 0, 0),
        (10, 0, 0, 0, 0),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"waves": [{"percent": 50}]},
        {"waves": [{"percent": 50}, {"percent": 40}, {"percent": 100}]},
        {"waves": [{"percent": 10}, {"count": 5}, {"percent": 100}]},
        {"waves": [{"count": 1, "percent": 5}, {"percent": 100}]},
        {"kind": "rollback"},
        {"surprise": 1},
    ],
)
def test_spec_refuses_bad_waves(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RolloutSpec.model_validate({"bundle": "b", "version": 1, **bad})
