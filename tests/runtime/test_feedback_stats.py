"""Feedback metrics: per-class confirmations/corrections/accuracy and confusion, from the store
plus the ledger of feedback whose sample was uploaded."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from runtime.feedback_stats import (
    LEDGER_NAME,
    FeedbackLedger,
    feedback_summary,
    predicted_label,
    tally,
)
from runtime.store.lmdb_store import SampleStore
from runtime.store.record import Feedback, SampleRecord, new_sample_id

_ids = itertools.count(1_700_000_000_000_000_000, 1000)


def record(labels: list[str]) -> SampleRecord:
    items = [{"class_id": 0, "label": lbl, "score": 0.5} for lbl in labels]
    return SampleRecord(
        id=new_sample_id(next(_ids)),
        device_id="dev",
        created=1.0,
        frame_id="f",
        bundle="digits",
        bundle_version=1,
        ontology_version=1,
        image=b"\xff" * 100,
        image_format="jpeg",
        prediction={"stages": {"det": {"items": []}, "clf": {"kind": "c", "items": items}}},
        scores={},
        priority=0.5,
    )


@pytest.mark.parametrize(
    ("prediction", "item", "expected"),
    [
        (
            {"stages": {"a": {"items": [{"label": "x"}]}, "b": {"items": [{"label": "7"}]}}},
            None,
            "7",
        ),
        ({"stages": {"b": {"items": [{"label": "7"}, {"label": "1"}]}}}, 1, "1"),
        ({"stages": {"b": {"items": []}}}, None, "?"),
        ({"stages": {"b": {"items": [{"label": "7"}]}}}, 3, "?"),
        ({}, None, "?"),
    ],
)
def test_predicted_label_when_prediction_has_given_shape(
    prediction: dict[str, Any], item: int | None, expected: str
) -> None:
    assert predicted_label(prediction, item) == expected


def test_tally_when_feedback_is_mixed_counts_per_predicted_class() -> None:
    out = tally(
        [
            ("1", "confirm", None, 3),
            ("1", "correct", "7", 1),
            ("7", "correct", "1", 2),
            ("7", "correct", "7", 1),  # a "correction" to the predicted label agrees with it
        ]
    )
    assert out["classes"]["1"] == {"confirmations": 3, "corrections": 1, "accuracy": 0.75}
    assert out["classes"]["7"] == {"confirmations": 1, "corrections": 2, "accuracy": 0.3333}
    assert out["confusion"] == {"1": {"7": 1}, "7": {"1": 2}}
    assert (out["reviewed"], out["accuracy"]) == (7, round(4 / 7, 4))
    assert tally([])["accuracy"] is None


def test_feedback_summary_when_some_samples_were_uploaded_counts_store_and_ledger(
    tmp_path: Path,
) -> None:
    store = SampleStore(tmp_path / "samples", max_bytes=1 << 20)
    try:
        stored, uploaded, plain = record(["1"]), record(["7"]), record(["3"])
        for r in (stored, uploaded, plain):
            store.put(r)
        store.set_feedback(stored.id, Feedback("correct", "4", "op", 1.0, 1))
        rec = store.set_feedback(uploaded.id, Feedback("confirm", None, "op", 1.0, 1))
        FeedbackLedger(tmp_path / LEDGER_NAME).add(rec)  # what the uploader does on release
        store.release([uploaded.id])
        out = feedback_summary(store, tmp_path, max_age_s=0)
        assert out["classes"] == {
            "1": {"confirmations": 0, "corrections": 1, "accuracy": 0.0},
            "7": {"confirmations": 1, "corrections": 0, "accuracy": 1.0},
        }
        assert out["confusion"] == {"1": {"4": 1}}
        store.close()
        assert feedback_summary(store, tmp_path, max_age_s=0)["partial"] is True  # ledger only
    finally:
        store.close()


def test_ledger_when_file_is_unreadable_starts_again(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_NAME
    path.write_text("[broken")
    ledger = FeedbackLedger(path)
    assert ledger.entries() == []
    r = record(["2"])
    r.feedback = Feedback("correct", "5", "op", 1.0, 1)
    ledger.add(r)
    ledger.add(r)
    assert FeedbackLedger(path).entries() == [("2", "correct", "5", 2)]


def test_feedback_summary_when_many_classes_are_reviewed_stays_small(tmp_path: Path) -> None:
    ledger = FeedbackLedger(tmp_path / LEDGER_NAME)
    for i in range(120):
        r = record([f"c{i}"])
        r.feedback = Feedback("correct", f"d{i % 7}", "op", 1.0, 1)
        ledger.add(r)
    store = SampleStore(tmp_path / "samples", max_bytes=1 << 20)
    try:
        out = feedback_summary(store, tmp_path, max_age_s=0)
    finally:
        store.close()
    assert out["truncated"] is True and out["reviewed"] == 120  # totals stay exact
    assert len(out["classes"]) == 50
    assert sum(len(row) for row in out["confusion"].values()) == 50
