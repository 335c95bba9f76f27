"""Comparative metrics (pure): groups, this window beside the previous, and the Prometheus view."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from hub.replay.fleet_metrics import compare, prometheus_collector

NOW = 10_000.0


def p(t: float, cohort: str, version: int, label: str, error: bool = False) -> dict[str, object]:
    return {"time": t, "device_id": f"{cohort}-1", "cohort": cohort, "bundle": "fruit",
            "version": version, "label": label, "latency_ms": 10.0 + t % 7,
            "error": 1 if error else 0}  # fmt: skip


def f(t: float, cohort: str, version: int, kind: str) -> dict[str, object]:
    return {"time": t, "device_id": f"{cohort}-1", "cohort": cohort, "bundle": "fruit",
            "version": version, "kind": kind}  # fmt: skip


PREDS = (
    [p(9_500 + k, "north", 2, "banana" if k % 4 == 0 else "apple") for k in range(40)]
    + [p(8_500 + k, "north", 2, "apple", error=k < 5) for k in range(10)]
    + [p(9_900, "south", 1, "apple"), p(1_000, "south", 1, "apple")]  # the last is too old
)
FEEDBACK = [f(9_600, "north", 2, "correct"), f(9_700, "north", 2, "confirm"),
            f(9_800, "north", 2, "confirm"), f(8_600, "north", 2, "correct")]  # fmt: skip


def test_compare_puts_the_previous_window_beside_the_current() -> None:
    rows = compare(PREDS, FEEDBACK, ["cohort", "version"], 1_000, NOW, ["banana"],
                   [{"cohort": "north", "agreement": 0.9, "frames": 30},
                    {"cohort": "north", "agreement": 0.6, "frames": 10}])  # fmt: skip
    assert [r["group"] for r in rows] == [
        {"cohort": "north", "version": "2"}, {"cohort": "south", "version": "1"},
    ]  # fmt: skip
    north = rows[0]
    assert north["current"]["frames"] == 40 and north["previous"]["frames"] == 10
    assert north["current"]["event_rate"] == pytest.approx(10 / 40)
    assert north["current"]["error_rate"] == 0 and north["previous"]["error_rate"] == 0.5
    assert north["current"]["correction_rate"] == pytest.approx(1 / 3)
    assert north["current"]["accuracy_where_corrected"] == pytest.approx(2 / 3)
    assert north["previous"]["correction_rate"] == 1.0
    assert north["shadow_agreement"] == pytest.approx((0.9 * 30 + 0.6 * 10) / 40)
    assert rows[1]["current"]["frames"] == 1 and rows[1]["previous"]["frames"] == 0
    with pytest.raises(ValueError, match="group by"):
        compare(PREDS, FEEDBACK, ["colour"], 1_000, NOW)


def test_prometheus_collector_exposes_each_metric_per_group_and_period() -> None:
    registry = CollectorRegistry()
    registry.register(
        prometheus_collector(lambda: compare(PREDS, FEEDBACK, ["cohort"], 1_000, NOW))
    )
    text = generate_latest(registry).decode()
    assert 'leanloop_frames{cohort="north",period="current"} 40.0' in text
    assert 'leanloop_frames{cohort="north",period="previous"} 10.0' in text
    assert 'leanloop_error_rate{cohort="north",period="previous"} 0.5' in text
