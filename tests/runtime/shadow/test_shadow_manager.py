"""The manager's pure-ish parts with real state: feedback from a real LMDB sample store,
the candidate field of a desired answer, and the atomic ``shadow.json``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from runtime.config import DeviceConfig
from runtime.protocol import Desired, ShadowTelemetry
from runtime.shadow.manager import ShadowManager
from runtime.shadow.promotion import FeedbackScore, PromotionRule, judge
from runtime.shadow.report import BundleRef, ShadowReport, load_report, save_report
from runtime.store.lmdb_store import SampleStore
from runtime.store.record import Feedback, SampleRecord, new_sample_id
from runtime.update.installer import Installer


def _record(
    frame_id: str,
    labels: list[str],
    version: int = 1,
    shadow: dict[str, Any] | None = None,
    feedback: Feedback | None = None,
) -> SampleRecord:
    items = [{"class_id": 0, "label": lbl, "score": 0.9} for lbl in labels]
    pred: dict[str, Any] = {
        "frame_id": frame_id,
        "stages": {"classifier": {"kind": "classification", "items": items, "latency_ms": 1.0}},
    }
    if shadow is not None:
        pred["shadow"] = shadow
    return SampleRecord(
        id=new_sample_id(),
        device_id="cam",
        created=0.0,
        frame_id=frame_id,
        bundle="digits",
        bundle_version=version,
        ontology_version=1,
        image=b"jpeg",
        image_format="jpeg",
        prediction=pred,
        scores={},
        priority=1.0 + (0.1 if feedback else 0.0),
        feedback=feedback,
    )


def _fb(label: str | None, item: int | None) -> Feedback:
    return Feedback(
        kind="correct" if label else "confirm",
        label=label,
        who="op",
        when=0.0,
        bundle_version=1,
        item=item,
    )


@pytest.fixture
def manager(tmp_path: Path) -> Any:
    cfg = DeviceConfig(state_dir=tmp_path / "state")
    cfg.state_dir.mkdir()
    store = SampleStore(tmp_path / "samples", max_bytes=8 << 20)
    m = ShadowManager(cfg, Installer(cfg), None, store)
    m.report.candidate = BundleRef(bundle="digits", version=2, slot="b")
    m.report.production = BundleRef(bundle="digits", version=1, slot="a")
    yield m
    store.close()


def test_feedback_score_when_store_holds_corrections_on_frames_both_models_saw(
    manager: Any,
) -> None:
    store: SampleStore = manager.store
    cand = {"disagreement": 1.0, "candidate": "digits", "candidate_version": 2}
    # Disagreement copy: production said 2, the candidate 7, a human says 2.
    store.put(_record("f1", ["2", "7"], shadow={**cand, "candidate_labels": ["7", "2"]},
                      feedback=_fb("2", 0)))  # fmt: skip
    # Agreed frame (no shadow on the record, but the candidate's labels are remembered):
    # a human confirms item 1.
    manager.report.note_seen("f2", ["2", "7"])
    store.put(_record("f2", ["2", "7"], feedback=_fb(None, 1)))
    # Not counted: a frame the candidate never saw, another production version, no feedback,
    # a shadow copy from another candidate.
    store.put(_record("f3", ["2"], feedback=_fb("3", None)))
    store.put(_record("f2", ["2", "7"], version=9, feedback=_fb("1", 0)))
    store.put(_record("f4", ["2"]))
    other = {**cand, "candidate_version": 5, "candidate_labels": ["5"]}
    store.put(_record("f5", ["2"], shadow=other, feedback=_fb("5", 0)))
    score = manager._feedback_score()
    assert score == FeedbackScore(2, 1.0, 0.5)
    rule = PromotionRule(min_frames=1, min_agreement=0.0, max_accuracy_drop=0.1, min_corrected=2)
    v = judge(rule, 10, 10, score)
    assert v.outcome == "reject" and "accuracy on 2 corrected frames 50.00%" in v.reason


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (None, None),
        ({"bundle": "digits", "version": 2}, ("digits", 2, PromotionRule())),
        ({"bundle": "digits", "version": 2, "rule": {"min_frames": 7}}, ("digits", 2, None)),
        ({"bundle": "digits", "version": "2"}, None),
        ({"bundle": "digits", "version": True}, None),
        ({"bundle": "digits", "version": 2, "rule": {"min_frames": -1}}, None),
        ({"bundle": "digits", "version": 2, "rule": {"nope": 1}}, None),
    ],
)
def test_desired_candidate_when_answer_varies_is_parsed_or_dropped_alone(
    data: Any, want: Any
) -> None:
    desired = Desired.model_validate({"bundle": "digits", "version": 1, "candidate": data})
    assert desired.target == ("digits", 1)  # a bad candidate never costs the production answer
    c = desired.candidate
    got = None if c is None else (c.bundle, c.version, c.rule)
    if want is None or want[2] is not None:
        assert got == want
    else:
        assert got is not None and got[2].min_frames == 7


def test_save_report_when_replace_fails_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rep = ShadowReport(status="running")
    save_report(tmp_path, rep)
    before = (tmp_path / "shadow.json").read_bytes()

    def boom(*a: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    rep.status = "rejected"
    with pytest.raises(OSError):
        save_report(tmp_path, rep)
    assert (tmp_path / "shadow.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shadow.json"]
    monkeypatch.undo()
    assert load_report(tmp_path).status == "running"
    (tmp_path / "shadow.json").write_text("{not json")
    assert load_report(tmp_path).status == "idle"  # unreadable: start fresh, say so in the log


class _Hub:
    """The two members of the device's HubClient the manager uses (answers as the hub does)."""

    def __init__(self, desired: dict[str, Any]) -> None:
        self.last_desired = Desired.model_validate(desired)
        self.sent: list[dict[str, Any]] = []

    def shadow_report(self, summary: ShadowTelemetry) -> None:
        self.sent.append(summary.model_dump())


class _NoFetch:
    def fetch(self, *a: Any, **kw: Any) -> Any:
        raise AssertionError("nothing may be fetched")


@pytest.mark.parametrize(
    ("candidate", "busy", "status", "words"),
    [
        ({"bundle": "digits", "version": 2}, False, "refused", "not newer than the active v3"),
        ({"bundle": "digits", "version": 3}, False, "refused", "not newer than the active v3"),
        ({"bundle": "digits", "version": 4}, True, "idle", None),  # update in flight: wait
        (None, False, "idle", None),
    ],
)
def test_poll_when_candidate_cannot_or_must_not_start_yet(
    manager: Any, candidate: Any, busy: bool, status: str, words: str | None
) -> None:
    slots = manager.slots
    slots.state.active = "a"
    slots.state.slots["a"] = slots.state.slots["a"].model_copy(
        update={"status": "committed", "bundle": "digits", "version": 3}
    )
    manager.report = ShadowReport()
    desired: dict[str, Any] = {"bundle": "digits", "version": 3}
    if candidate is not None:
        desired["candidate"] = candidate
    hub = _Hub(desired)
    manager.poll(hub, _NoFetch(), busy)
    rep = load_report(manager.state_dir)
    assert rep.status == status
    if words is not None:
        assert words in (rep.reason or "")
        assert rep.history[-1].outcome == "refused"
        assert [s["status"] for s in hub.sent] == ["refused"]
        manager.poll(hub, _NoFetch(), busy)  # judged: not tried again, nothing new to send
        assert len(hub.sent) == 1
    else:
        assert hub.sent == []
