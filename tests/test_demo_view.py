"""leanloop/demo_view.py: the demo's phase times, live job lines and the loop-parts table."""

from __future__ import annotations

import pytest

from leanloop.demo import Row
from leanloop.demo_view import (
    Phases,
    export_seconds,
    job_line,
    label_efficiency,
    markdown,
    ontology_cell,
    parts_lines,
    rollout_cell,
)


def test_phases_when_timed_twice_sum_and_count() -> None:
    p = Phases()
    p.add("training", 1.25)
    with p.time("training"):
        pass
    d = p.to_dict()
    assert d["training"]["n"] == 2 and 1.25 <= d["training"]["s"] < 1.5


def test_job_line_when_running_shows_last_progress_else_state() -> None:
    tail = (
        "loaded 9 frames\nprogress detector 12/120 loss=2.603\nprogress classifier 3/30 loss=1.5\n"
    )
    assert job_line({"state": "running", "log_tail": tail}) == "classifier 3/30 (loss 1.5)"
    assert job_line({"state": "queued", "log_tail": ""}) == "queued"
    assert job_line({"state": "running", "log_tail": "loaded 9 frames\n"}) == "running"
    assert export_seconds({"log_tail": tail + "export_s = 2.4 (onnx + [])\n"}) == 2.4
    assert export_seconds({"log_tail": tail}) is None


def test_parts_lines_when_gate_rollout_and_correction_ran_has_one_line_each() -> None:
    # As the hub counts them: target = devices reached so far, succeeded = this wave's own.
    waves = [{"target": 1, "succeeded": 1, "failed": 0}, {"target": 2, "succeeded": 1, "failed": 0}]
    rollout = {"id": 3, "status": "done", "waves": waves}
    fix = {"device": "unc-1", "said": "3", "label": "8", "sample": "s1", "item": 0}
    rows = [
        Row(0, "unc", 1, 0.5, 0.6, 10, 1, 1.0, {"gate": {"decision": "forced"}, "correction": fix}),
        Row(
            1,
            "unc",
            2,
            0.6,
            0.7,
            20,
            2,
            2.0,
            {"gate": {"decision": "pass", "frames": 40}, "rollout": rollout},
        ),
    ]
    lines = dict(parts_lines(rows))
    assert lines["replay gate (per candidate)"] == "unc v2: pass"
    assert lines["staged rollout (canary first)"] == "unc v2: canary 1/1 → 2/2 done"
    assert "3 → 8" in lines["operator correction → hub"]
    assert rollout_cell(None) == "-"


def test_ontology_line_and_markdown_when_a_change_reached_the_devices() -> None:
    onto = {"version": 2, "hub_remapped": 120, "bundles": {"unc": 4, "rnd": 4}, "devices": 4,
            "device_records": 3, "device_uploads": 57}  # fmt: skip
    rows = [
        Row(0, "unc", 1, 0.46, 0.7, 304, 10, 1.0, {"ontology_served": {1: 300}}),
        Row(0, "rnd", 1, 0.46, 0.7, 304, 10, 1.0, {"ontology_served": {1: 300}}),
        Row(1, "unc", 4, 0.65, 0.9, 404, 20, 2.0, {"ontology_served": {1: 10, 2: 290}}),
        Row(1, "rnd", 4, 0.6, 0.9, 404, 20, 2.0,
            {"ontology_served": {2: 300}, "ontology": onto}),
    ]  # fmt: skip
    line = ontology_cell(onto, rows, 1)
    assert "digits v1 → v2" in line and "120 hub samples remapped" in line
    assert "4 devices serve v2 (590/600 frames" in line and "3 stored and 57 uploaded" in line
    md = markdown(rows, {"training v1": {"s": 30.0, "n": 1}, "  of which": {"s": 2.0, "n": 1}}, 99)
    assert "| 0 (v1: seed batch only) | 304 | 46.0% | 46.0% | 10 |" in md
    assert "| 1 | 404 | 65.0% | 60.0% | 20 |" in md
    assert "label efficiency: uncertainty reached random's final 60.0% with" in md
    assert f"| ontology change | {line} |" in md
    assert "| training v1 | 1 | 30.0 |" in md and "| – of which | 1 | 2.0 |" in md


def test_label_efficiency_when_uncertainty_gets_there_first() -> None:
    def row(it: int, arm: str, acc: float, labels: int) -> Row:
        return Row(it, arm, it + 1, acc, acc, labels, 0, 0.0)

    rows = [
        row(0, "unc", 0.40, 300), row(0, "rnd", 0.40, 300),
        row(1, "unc", 0.70, 400), row(1, "rnd", 0.55, 400),
        row(2, "unc", 0.80, 500), row(2, "rnd", 0.60, 500),
    ]  # fmt: skip
    eff = label_efficiency(rows)
    assert eff is not None and eff["target"] == 0.60 and eff["random_labels"] == 200
    # unc crosses 0.60 two thirds of the way from 0.40 (300) to 0.70 (400): 66.7 labels
    assert eff["ratio"] == pytest.approx((200 / 3) / 200)
    worse = [r if r.arm == "rnd" else row(r.iteration, "unc", 0.5, r.labels) for r in rows]
    assert label_efficiency(worse) == {"ratio": None, "target": 0.60, "random_labels": 200}
    assert label_efficiency(rows[:2]) is None
