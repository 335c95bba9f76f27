"""The replay tables on each backend (SQLite, PostgreSQL): blessings, reports, the audit log,
the prediction stream with its retention, and the one release check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub.errors import BadRequest, Conflict
from hub.replay.blessing import blessing_from_report, check_release
from hub.storage import HubDB, open_database

DIGEST = "c" * 64


def report(decision: str = "pass") -> dict[str, Any]:
    return {
        "candidate": {"name": "fruit", "version": 2, "digest": DIGEST},
        "baseline": {"name": "fruit", "version": 1, "digest": "b" * 64},
        "spec_digest": "s" * 64,
        "decision": {"decision": decision, "summary": f"{decision}: x"},
    }


def event(n: int, t: float) -> dict[str, Any]:
    return {"id": f"{n:016x}-1", "time": t, "bundle": "fruit", "version": 2, "label": "apple",
            "score": 0.9, "latency_ms": 1.5, "error": None}  # fmt: skip


def test_replay_tables_when_run_on_each_backend(
    hub_backend: dict[str, Any], tmp_path: Path
) -> None:
    db = HubDB(open_database(hub_backend.get("database_url"), tmp_path))
    try:
        db.enroll_device("cam-1", "north", "h1")
        db.add_report("r" * 64, "fruit", 2, DIGEST, "pass", "j" * 64, None)
        db.add_report("r" * 64, "fruit", 2, DIGEST, "pass", "j" * 64, None)  # again: no-op
        assert [r["digest"] for r in db.reports()] == ["r" * 64]
        with pytest.raises(Conflict, match="fruit version 2 is not blessed"):
            check_release(db, True, [("fruit", 2, DIGEST)], "publish")
        check_release(db, False, [("fruit", 2, DIGEST)], "publish")  # setting off: allowed
        with pytest.raises(BadRequest, match="needs a --reason"):
            check_release(db, True, [("fruit", 2, DIGEST)], "publish", "  ")
        check_release(db, True, [("fruit", 2, DIGEST)], "publish", "hotfix", "bob")
        assert db.audit_log()[0]["reason"] == "hotfix"

        b = blessing_from_report(report(), "r" * 64, "alice", now=1700000000.5)
        db.add_blessing(b)
        assert db.blessing(DIGEST) == b
        assert db.blessed_version("fruit", 2) == b
        check_release(db, True, [("fruit", 2, DIGEST)], "publish")
        check_release(db, True, [("fruit", 2, None)], "roll out")
        with pytest.raises(Conflict, match="not blessed"):  # same version, other content
            check_release(db, True, [("fruit", 2, "d" * 64)], "publish")
        with pytest.raises(Conflict, match="did not pass"):
            blessing_from_report(report("blocked"), "r" * 64, "alice")

        assert db.add_predictions("cam-1", [event(1, 100.0), event(2, 200.0)]) == 2
        assert db.add_predictions("cam-1", [event(2, 200.0)]) == 0  # a resent batch
        rows = db.predictions(150.0, 300.0)
        assert [(r["cohort"], r["time"], r["error"]) for r in rows] == [("north", 200.0, 0)]
        assert db.prune_predictions(150.0) == 1
        assert len(db.predictions()) == 1
    finally:
        db.close()
