"""The replay on real bundles (ONNX Runtime, the device's pipeline) over a real history folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from replaykit import CLASSES, TRUE_CENTERS, make_bundle, make_history, spread

from hub.replay.evaluate import report_digest, run_replay
from hub.replay.frames import HistoryFrame, TruthObject
from hub.replay.history import HistoryDir, write_history
from hub.replay.report import write_report
from hub.replay.spec import parse_gate_spec

SPEC = parse_gate_spec(
    {
        "metrics": {"top1_accuracy": {"max_drop": 0.02}},
        "slices": {"by": ["cohort", "class"], "min_size": 20},
        "bootstrap": {"resamples": 200, "seed": 1},
        "costs": {"frames_per_day": 1000},
    }
)
# North has many cherries at levels 170-183, which a cherry center at 240 calls banana; south
# has many apples at 74-84, which an apple center at 20 calls banana.
NORTH = spread(0, 60, 30) + spread(100, 150, 30) + spread(171, 183, 60) + spread(200, 255, 20)
SOUTH = spread(0, 60, 20) + spread(75, 84, 40) + spread(100, 150, 20)
BASELINE = (42, 127, 240)
WORSE_SOUTH = (20, 127, 212)


@pytest.fixture
def history(tmp_path: Path) -> HistoryDir:
    make_history(tmp_path / "history", {"north": NORTH, "south": SOUTH})
    return HistoryDir(tmp_path / "history")


def test_replay_blocks_a_candidate_better_overall_but_worse_on_one_cohort(
    tmp_path: Path, history: HistoryDir
) -> None:
    base = make_bundle(tmp_path, 1, BASELINE)
    cand = make_bundle(tmp_path, 2, WORSE_SOUTH)
    report = run_replay(cand, base, history, SPEC, tmp_path / "work")
    m = report["metrics"]
    assert m["candidate"]["top1_accuracy"] > m["baseline"]["top1_accuracy"]
    assert report["decision"]["decision"] == "blocked"
    assert "cohort=south top1_accuracy" in report["decision"]["blocked_by"]
    assert "cohort=north top1_accuracy" not in report["decision"]["blocked_by"]
    assert report["counts"]["used"] == len(NORTH) + len(SOUTH)
    j, h = write_report(report, tmp_path / "out")
    assert report_digest(json.loads(j.read_bytes())) == report_digest(report)
    page = h.read_text()
    assert "BLOCKED" in page and "cohort=south" in page and "data:image/png;base64," in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")


def test_replay_passes_an_identical_candidate_and_resumes(
    tmp_path: Path, history: HistoryDir
) -> None:
    base = make_bundle(tmp_path, 1, BASELINE)
    cand = make_bundle(tmp_path, 2, BASELINE)
    work = tmp_path / "work"
    first = run_replay(cand, base, history, SPEC, work, workers=2)
    assert first["decision"]["decision"] == "pass"
    assert first["metrics"]["candidate"] == first["metrics"]["baseline"]
    # interrupted mid-write: a torn last line is redone, the rest is reused
    results = sorted(work.glob("fruit-v2-*.jsonl"))[0]
    lines = results.read_bytes().splitlines()
    results.write_bytes(b"\n".join(lines[:50]) + b"\n" + lines[50][:20])
    seen: list[int] = []
    again = run_replay(cand, base, history, SPEC, work, stage=lambda _l, _n: seen.append)
    assert again["decision"] == first["decision"]
    assert again["kpis"] == first["kpis"]
    assert seen[:2] == [len(NORTH) + len(SOUTH), 50]  # baseline all cached; candidate 50 of them


def test_replay_counts_corrupt_missing_and_old_ontology_frames(tmp_path: Path) -> None:
    folder = tmp_path / "history"
    frames = make_history(folder, {"north": spread(0, 255, 60)})
    (folder / "images" / ("0" * 64)).write_bytes(b"not an image at all")
    extra = [
        HistoryFrame(
            id="x-corrupt", truth=(TruthObject("apple"),), image_sha256="0" * 64, ontology_version=2
        ),
        HistoryFrame(
            id="x-missing", truth=(TruthObject("apple"),), image_sha256="1" * 64, ontology_version=2
        ),
        HistoryFrame(
            id="x-noimage", truth=(TruthObject("apple"),), image_sha256=None, ontology_version=2
        ),
        # the previous ontology called cherries "plum": remapped
        HistoryFrame(
            id="x-plum",
            truth=(TruthObject("plum"),),
            ontology_version=1,
            image_sha256=frames[-1].image_sha256,
        ),
        # a label the mapping does not know, and an ontology two versions back: excluded
        HistoryFrame(id="x-kiwi", truth=(TruthObject("kiwi"),), ontology_version=1),
        HistoryFrame(id="x-ancient", truth=(TruthObject("apple"),), ontology_version=0),
    ]
    current = [HistoryFrame(**{**f.__dict__, "ontology_version": 2}) for f in frames]
    write_history(folder, current + extra)
    base = make_bundle(tmp_path, 1, TRUE_CENTERS, ontology_version=2)
    cand = make_bundle(tmp_path, 2, TRUE_CENTERS, ontology_version=2, mapping={"plum": "cherry"})
    report = run_replay(cand, base, HistoryDir(folder), SPEC, tmp_path / "work")
    counts = report["counts"]
    assert counts == {
        "frames": 66,
        "used": 61,
        "ontology_remapped": 1,
        "ontology_excluded": 2,
        "missing_image": 2,
        "corrupt": {"baseline": 1, "candidate": 1},
    }
    assert report["decision"]["decision"] == "pass"
    assert report["metrics"]["candidate"]["top1_accuracy"] == 1.0
    assert set(report["confusion"]["candidate"][0]) and report["classes"] == CLASSES


def test_replay_reads_a_baseline_of_the_previous_ontology_in_the_candidates_names(
    tmp_path: Path,
) -> None:
    # v1 called cherries "plum"; v2 renamed the class. The same model under both names must
    # score the same against v2's truth (not lose every cherry for its old name).
    folder = tmp_path / "history"
    frames = make_history(folder, {"north": spread(0, 255, 40)})
    write_history(folder, [HistoryFrame(**{**f.__dict__, "ontology_version": 2}) for f in frames])
    old = ["plum" if c == "cherry" else c for c in CLASSES]
    base = make_bundle(tmp_path, 1, TRUE_CENTERS, ontology_version=1, classes=old)
    cand = make_bundle(tmp_path, 2, TRUE_CENTERS, ontology_version=2, mapping={"plum": "cherry"})
    report = run_replay(cand, base, HistoryDir(folder), SPEC, tmp_path / "work")
    m = report["metrics"]
    assert m["baseline"]["top1_accuracy"] == m["candidate"]["top1_accuracy"] == 1.0
    assert report["decision"]["decision"] == "pass"
