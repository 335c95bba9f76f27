"""FeedbackOutbox: the device remembers what it uploaded, and queues feedback on it for the hub."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.errors import StoreError
from runtime.outbox import FeedbackOutbox
from runtime.store.record import Feedback, SampleRecord, new_sample_id

_ids = itertools.count(1_700_000_000_000_000_000, 1000)


def record(labels: list[str], feedback: Feedback | None = None) -> SampleRecord:
    return SampleRecord(
        id=new_sample_id(next(_ids)),
        device_id="dev",
        created=1.0,
        frame_id="f",
        bundle="digits",
        bundle_version=3,
        ontology_version=1,
        image=b"\xff\xd8" + b"x" * 100,
        image_format="jpeg",
        prediction={
            "frame_id": "f",
            "stages": {
                "det": {"kind": "detection", "items": [{"label": "digit"}]},
                "clf": {"kind": "classification", "items": [{"label": x} for x in labels]},
            },
        },
        scores={},
        priority=0.5,
        feedback=feedback,
    )


def fb(label: str | None, who: str = "ana", item: int | None = None) -> Feedback:
    kind = "correct" if label is not None else "confirm"
    return Feedback(kind=kind, label=label, who=who, when=2.0, bundle_version=3, item=item)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[FeedbackOutbox]:
    b = FeedbackOutbox(tmp_path / "sent", keep=5)
    yield b
    b.close()


def test_outbox_remembers_the_final_labels_of_an_uploaded_sample(box: FeedbackOutbox) -> None:
    r = record(["3", "7"], feedback=fb("8"))
    box.remember(r)
    got = box.sent(r.id)
    assert got is not None
    assert got.labels == ("3", "7") and got.bundle_version == 3
    assert got.predicted(None) == "3" and got.predicted(1) == "7" and got.predicted(5) == "?"
    assert got.feedback == fb("8").to_dict()
    assert box.sent("nope") is None


def test_outbox_queues_feedback_and_returns_what_it_replaces(box: FeedbackOutbox) -> None:
    r = record(["3"])
    box.remember(r)
    before = box.enqueue(r.id, fb("8"))
    assert before.feedback is None
    again = box.enqueue(r.id, fb("9", who="bo"))  # a second word replaces the first
    assert again.feedback == fb("8").to_dict()
    assert box.pending(10) == [(r.id, fb("9", who="bo").to_dict())]
    assert box.stats() == {"queued": 1, "remembered": 1}


def test_outbox_refuses_feedback_on_a_sample_it_never_sent(box: FeedbackOutbox) -> None:
    with pytest.raises(StoreError, match="no sample x-1"):
        box.enqueue("x-1", fb("8"))
    assert box.pending(10) == []


def test_outbox_deletes_only_the_acknowledged_feedback(box: FeedbackOutbox) -> None:
    r = record(["3"])
    box.remember(r)
    box.enqueue(r.id, fb("8"))
    [(sid, sent)] = box.pending(10)
    box.enqueue(r.id, fb("9"))  # replaced while the first was in flight
    assert box.done(sid, sent) is False  # the newer one stays queued
    [(_, newer)] = box.pending(10)
    assert newer["label"] == "9"
    assert box.done(sid, newer) is True
    assert box.pending(10) == []
    box.enqueue(r.id, fb(None))
    box.drop(r.id)
    assert box.pending(10) == []


def test_outbox_forgets_the_oldest_sent_but_keeps_their_queued_feedback(
    box: FeedbackOutbox,
) -> None:
    recs = [record([str(i)]) for i in range(8)]
    box.remember(recs[0])
    box.enqueue(recs[0].id, fb("5"))
    for r in recs[1:]:
        box.remember(r)
    assert box.stats() == {"queued": 1, "remembered": 5}
    assert box.ids() == [r.id for r in recs[3:]]
    assert box.sent(recs[0].id) is None and box.sent(recs[7].id) is not None
    assert [sid for sid, _ in box.pending(10)] == [recs[0].id]  # still goes to the hub
    box.remember(recs[7])  # remembered again (a duplicate ack): not counted twice
    assert box.ids() == [r.id for r in recs[3:]]


def test_outbox_keeps_everything_across_a_reopen(tmp_path: Path) -> None:
    r = record(["4"])
    with FeedbackOutbox(tmp_path / "sent") as b:
        b.remember(r)
        b.enqueue(r.id, fb("1"))
    with FeedbackOutbox(tmp_path / "sent") as b:
        assert b.sent(r.id) is not None and b.pending(5) == [(r.id, fb("1").to_dict())]
    b.close()
    with pytest.raises(StoreError, match="after close"):
        b.pending(5)


def test_outbox_sets_a_corrupt_environment_aside_and_starts_empty(tmp_path: Path) -> None:
    sent = tmp_path / "sent"
    sent.mkdir()
    (sent / "data.mdb").write_bytes(b"not an lmdb file" * 512)
    with FeedbackOutbox(sent) as b:  # the device keeps running
        assert b.stats() == {"queued": 0, "remembered": 0}
        r = record(["1"])
        b.remember(r)
        assert b.sent(r.id) is not None
    [aside] = tmp_path.glob("sent.corrupt-*")
    assert (aside / "data.mdb").read_bytes().startswith(b"not an lmdb file")  # kept for a look


def test_outbox_skips_an_unreadable_entry_and_sends_the_rest(box: FeedbackOutbox) -> None:
    r = record(["3"])
    box.remember(r)
    box.enqueue(r.id, fb("8"))
    with box._env.begin(write=True) as txn:  # a torn value, as a bad sector would leave it
        txn.put(b"0000-torn", b"{not json", db=box._queue)
        txn.put(b"0001-torn", b"x" * 20_000, db=box._sent)
    assert box.pending(10) == [(r.id, fb("8").to_dict())]
    assert box.sent("0001-torn") is None
    with pytest.raises(StoreError, match="no sample 0001-torn"):
        box.enqueue("0001-torn", fb("8"))
