"""A shortened whole loop: real hub process, real device processes, real training, one iteration."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from leanloop.demo import DemoSettings, run_demo, score_frame
from leanloop.demo_view import parts_lines

FAST_TRAINING = {
    "detector_steps": 120,
    "classifier_steps": 120,
    "warm_detector_steps": 40,
    "warm_classifier_steps": 60,
    "max_synthetic": 120,
    "views_per_digit": 6,
}


def test_score_frame_reads_digits_left_to_right_when_boxes_overlap_truth() -> None:
    pred = {
        "stages": {
            "classifier": {
                "items": [
                    {"label": "7", "box": [50, 10, 70, 40], "score": 0.9},
                    {"label": "1", "box": [10, 10, 30, 40], "score": 0.8},
                ]
            }
        }
    }
    boxes = [[10.0, 10.0, 30.0, 40.0], [50.0, 10.0, 70.0, 40.0]]
    assert score_frame(pred, boxes, [1, 7]) == (True, 2)
    assert score_frame(pred, boxes, [1, 2]) == (False, 1)
    assert score_frame({"error": "corrupt", "stages": {}}, boxes, [1, 7]) == (False, 0)
    renamed = [str(d) for d in range(10)]
    renamed[7] = "seven"  # the prediction was made in an ontology version that renamed 7
    assert score_frame(pred, boxes, [1, 7], renamed) == (False, 1)


@pytest.mark.integration
def test_loop_publishes_updates_and_retrains_when_run_for_one_iteration(tmp_path: Path) -> None:
    s = DemoSettings(
        workdir=tmp_path / "demo",
        iterations=1,
        devices=1,
        frames=30,
        budget=8,
        seed_frames=60,
        json_report=True,
        quiet=True,
        timeout_s=180,
        train_params=FAST_TRAINING,
    )
    rows, out = run_demo(s)
    assert [(r.iteration, r.arm, r.version) for r in rows] == [
        (0, "unc", 1),
        (0, "rnd", 1),
        (1, "unc", 2),
        (1, "rnd", 2),
    ]
    first, later = rows[0], rows[2]
    assert later.labels > first.labels  # the oracle labelled uploaded samples
    assert first.bytes_per_device > 0 and later.bytes_per_device > first.bytes_per_device
    for r in rows:
        assert 0.0 <= r.frame_accuracy <= 1.0 and 0.0 <= r.digit_accuracy <= 1.0
    # The MVP actually reads digits (this is real training on real digits, not a stub).
    assert first.digit_accuracy > 0.3
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert len(report["rows"]) == 4 and report["total_s"] == out["total_s"] > 0
    # Where the time went: both arms' jobs ran at once, ONNX only (what the devices run).
    phases = report["phases"]
    for name in ("training v1", "training (wall, arms in parallel)", "replay gate",
                 "publish (sign, deltas) + rollout", "device catch-up"):  # fmt: skip
        assert phases[name]["s"] > 0, name
    assert phases["  of which export (onnx)"]["n"] == 3  # v1 + one job per arm
    notes = json.loads((tmp_path / "demo" / "sources" / "unc-v2" / "notes.json").read_text())
    assert not any(k.startswith(("max_diff.", "export_skipped.")) for k in notes)
    # One gate decision per iteration and arm: v2 replayed against v1 on the labelled history
    # (blessed when it passed; the hub requires a blessing or an audited --force).
    for r in rows[2:]:
        gate = r.extra["gate"]
        assert gate["decision"] in ("pass", "blocked") and gate["frames"] > 0
    assert report["rows"][2]["extra"]["gate"] == rows[2].extra["gate"]
    # v2 went out as a staged rollout: a one-device canary, then the rest of the cohort.
    for r in rows[2:]:
        waves = r.extra["rollout"]["waves"]
        assert waves[0]["target"] == 1 and waves[0]["succeeded"] == 1 and not waves[0]["failed"]
    assert rows[0].extra["rollout"] is None  # v1: the cohort's desired bundle before enrolment
    # An operator corrected a wrong digit with `leanloop feedback correct`; the hub counted it.
    fix = rows[0].extra["correction"]
    assert fix["device"] == "unc-1" and fix["said"] != fix["label"]
    # During the last segment the random arm's model ran as a shadow candidate on the
    # uncertainty devices (never promoted): the hub has their agreement on those frames.
    sh = rows[2].extra["shadow"]
    assert sh["version"] == 3 and sh["compared"] > 0 and 0.0 <= sh["agreement"] <= 1.0
    assert rows[2].version == 2  # production stayed on v2
    assert (tmp_path / "demo" / "replay" / "unc-v2" / "report" / "report.html").exists()
    # Before the last training the ontology changed through the hub's API (0 renamed "zero"):
    # the hub remapped its samples, v2 was trained and stamped in ontology v2, the devices
    # committed it, remapped their stores and answered the last segment in v2's names.
    onto = next(r.extra["ontology"] for r in rows if r.extra.get("ontology"))
    assert onto["version"] == 2 and onto["bundles"] == {"unc": 2, "rnd": 2}
    assert onto["hub_remapped"] > 0 and onto["devices"] == 2
    assert onto["device_records"] + onto["device_uploads"] > 0
    for r in rows[2:]:
        assert r.extra["ontology_served"] == {2: s.frames}, r.extra
    src = yaml.safe_load((tmp_path / "demo" / "sources" / "rnd-v2" / "ontology.yaml").read_text())
    assert src["version"] == 2 and src["previous_version"] == 1 and "zero" in src["classes"]
    assert src["mapping_from_previous"]["0"] == "zero"
    lines = dict(parts_lines(rows))
    assert "rename 0 → zero" in lines["ontology change"]
    assert f"2 devices serve v2 ({2 * s.frames}/{2 * s.frames} frames" in lines["ontology change"]
    # The README's tables, as the report (and `python -m bench --only demo`) give them.
    md = out["markdown"].splitlines()
    assert md[0].startswith("| iteration | labels | uncertainty | random |")
    assert md[2].startswith(f"| 0 (v1: seed batch only) | {first.labels} | ")
    assert f"| ontology change | {lines['ontology change']} |" in md
    assert any(line.startswith("| training v1 | 1 | ") for line in md)
    # Devices uploaded samples, and every sample the oracle labelled came from a device.
    hub_db = tmp_path / "demo" / "hub" / "hub.sqlite3"
    assert hub_db.exists()
    # Both arms trained on the whole seed batch plus their own labels (same budget).
    with sqlite3.connect(f"file:{hub_db}?mode=ro", uri=True) as db:
        per_arm = dict(db.execute(
            "SELECT bundle, count(*) FROM samples WHERE id LIKE 'seed-%' GROUP BY bundle"
        ).fetchall())  # fmt: skip
    assert per_arm == {"digits-unc": 60, "digits-rnd": 60}
