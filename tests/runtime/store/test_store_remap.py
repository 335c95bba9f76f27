"""Device store and outbox remap when a committed bundle brings a new ontology version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from runtime.bundle.manifest import Ontology
from runtime.ontology import Change
from runtime.outbox import FeedbackOutbox
from runtime.store.lmdb_store import SampleStore
from runtime.store.record import Feedback
from runtime.store.remap import remap_store
from tests.runtime.store.conftest import build_record

OLD = Ontology(id="things", version=1, classes=["cat", "dog", "car", "bike"])
RULE = {"by": "aspect", "threshold": 1.5, "above": "truck", "below": "sedan"}
NEW = Ontology(
    id="things",
    version=2,
    classes=["animal", "sedan", "truck", "van", "cycle"],
    previous_version=1,
    changes=TypeAdapter(list[Change]).validate_python(
        [
            {"op": "merge", "sources": ["cat", "dog"], "into": "animal"},
            {"op": "split", "source": "car", "into": ["sedan", "truck"], "rule": RULE},
            {"op": "create", "name": "van"},
            {"op": "rename", "old": "bike", "new": "cycle"},
        ]
    ),
)


def pred(*items: tuple[str, list[float] | None]) -> dict[str, Any]:
    return {
        "frame_id": "f",
        "stages": {
            "det": {
                "items": [
                    {"class_id": OLD.classes.index(lbl), "label": lbl, "score": 0.9, "box": box}
                    for lbl, box in items
                ]
            }
        },
    }


def fb(kind: str, label: str | None, item: int | None = None) -> Feedback:
    return Feedback(kind=kind, label=label, who="op", when=1.0, bundle_version=1, item=item)


def test_store_records_are_remapped_when_the_ontology_changes(
    open_store: Callable[..., SampleStore], tmp_path: Path
) -> None:
    store = open_store()
    wide, square = [0.0, 0.0, 40.0, 10.0], [0.0, 0.0, 10.0, 10.0]
    recs = {
        "merge": build_record(0.5, prediction=pred(("cat", square), ("dog", square))),
        "rule": build_record(0.4, prediction=pred(("car", wide), ("car", square))),
        "fb_ok": build_record(
            0.3, prediction=pred(("cat", square)), feedback=fb("correct", "bike")
        ),
        "fb_split": build_record(
            0.2, prediction=pred(("dog", None)), feedback=fb("correct", "car")
        ),
        "newer": build_record(0.1, prediction=pred(("cat", None)), ontology_version=2),
    }
    for r in recs.values():
        assert store.put(r)
    outbox = FeedbackOutbox(tmp_path / "sent")
    sent_ok = build_record(0.9, prediction=pred(("dog", None)))
    sent_bad = build_record(0.9, prediction=pred(("car", None)))
    for r in (sent_ok, sent_bad):
        outbox.remember(r)
    outbox.enqueue(sent_ok.id, fb("correct", "cat"))
    outbox.enqueue(sent_bad.id, fb("confirm", None))

    report = remap_store(store, outbox, OLD, NEW)
    assert report is not None

    def labels(key: str) -> list[str]:
        got = store.get(recs[key].id)
        assert got is not None
        return [i["label"] for i in got.prediction["stages"]["det"]["items"]]

    assert labels("merge") == ["animal", "animal"]
    assert labels("rule") == ["truck", "sedan"]
    ok = store.get(recs["fb_ok"].id)
    assert ok is not None and ok.feedback is not None and ok.feedback.label == "cycle"
    assert ok.ontology_version == 2 and ok.priority == recs["fb_ok"].priority
    bad = store.get(recs["fb_split"].id)
    assert bad is not None and bad.feedback is None and bad.extra["needs_review"] is True
    assert bad.extra["refused_feedback"]["label"] == "car"
    assert "split into 'sedan', 'truck'" in bad.extra["refused_feedback"]["reason"]
    assert labels("newer") == ["cat"]  # already under v2: untouched
    assert report.records == 4 and report.feedback_converted == 1
    assert [sid for sid, _ in report.feedback_refused] == [recs["fb_split"].id, sent_bad.id]
    # The outbox: the correction was converted, the confirmation of a split class dropped.
    assert outbox.pending(10) == [(sent_ok.id, {**fb("correct", "animal").to_dict()})]
    assert report.outbox_dropped == 1 and report.outbox_remapped == 1  # "car" awaits review
    s = outbox.sent(sent_ok.id)
    assert s is not None and s.labels == ("animal",)
    # A second call (a crash after the first) changes nothing more.
    again = remap_store(store, outbox, OLD, NEW)
    assert again is not None and again.records == 0 and again.outbox_dropped == 0
    assert again.outbox_remapped == 0
    outbox.close()


def test_remap_does_nothing_when_the_version_does_not_move(
    open_store: Callable[..., SampleStore],
) -> None:
    store = open_store()
    store.put(build_record(0.5, prediction=pred(("cat", None))))
    assert remap_store(store, None, OLD, OLD) is None
    other = Ontology(id="other", version=5, classes=["x"])
    assert remap_store(store, None, OLD, other) is None
