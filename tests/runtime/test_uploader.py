"""Uploader: best first, released only after the hub's acknowledgement, nothing lost."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import HubError
from runtime.store.lmdb_store import SampleStore
from runtime.store.record import Feedback, SampleRecord, new_sample_id
from runtime.uploader import SampleSink, Uploader

_clock = itertools.count(1_700_000_000_000_000_000, 1000)


def record(priority: float, size: int = 500) -> SampleRecord:
    return SampleRecord(
        id=new_sample_id(next(_clock)),
        device_id="dev",
        created=1.0,
        frame_id="f",
        bundle="digits",
        bundle_version=1,
        ontology_version=1,
        image=b"\xff" * size,
        image_format="jpeg",
        prediction={"frame_id": "f", "stages": {}},
        scores={"margin": priority},
        priority=priority,
    )


def wire_size(r: SampleRecord) -> int:
    return len(r.image) + len(json.dumps(r.to_meta()).encode())


class SpyStore(SampleStore):
    """The real store, recording every id it was asked to release."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(path, max_bytes)
        self.released: list[str] = []

    def release(
        self, ids: Iterable[str], *, expected_priority: Mapping[str, float] | None = None
    ) -> int:
        ids = list(ids)
        n = super().release(ids, expected_priority=expected_priority)
        if n:
            self.released.extend(ids)
        return n


class FakeHub:
    """Implements SampleSink like the hub: idempotent by id, and can fail on chosen calls."""

    def __init__(self, store: SampleStore, fail_on: Iterable[int] = ()) -> None:
        self.store = store
        self.fail_on = set(fail_on)
        self.calls = 0
        self.samples: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []

    def put_sample(self, meta: dict[str, Any], image: bytes) -> str:
        self.calls += 1
        # Not released before the acknowledgement: the record is still in the store now.
        assert self.store.get(meta["id"]) is not None
        if self.calls in self.fail_on:
            raise HubError(f"sample {meta['id']}: hub answered 503")
        assert len(image) == meta["image_size"]
        self.order.append(meta["id"])
        if meta["id"] in self.samples:
            return "duplicate"
        self.samples[meta["id"]] = meta
        return "stored"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SpyStore]:
    s = SpyStore(tmp_path / "samples", max_bytes=8 << 20)
    yield s
    s.close()


def test_fake_hub_implements_sample_sink_protocol(store: SpyStore) -> None:
    sink: SampleSink = FakeHub(store)
    assert callable(sink.put_sample)


def test_uploader_loses_nothing_when_sink_fails_on_third_call(store: SpyStore) -> None:
    recs = [record(p) for p in (0.1, 0.9, 0.5, 0.7, 0.3, 0.8)]
    for r in recs:
        store.put(r)
    hub = FakeHub(store, fail_on={3})
    up = Uploader(store, hub, batch=10)

    first = up.run_once()
    assert (first.sent, first.failed) == (2, 1)
    assert first.bytes == sum(wire_size(r) for r in recs if r.priority in (0.9, 0.8))
    assert hub.order == [recs[1].id, recs[5].id]  # best first
    assert store.released == hub.order  # released exactly what was acknowledged
    left = {r.id for r in store.top(100)}
    assert left == {r.id for r in recs} - set(hub.order)  # the failed one stayed

    second = up.run_once()
    assert (second.sent, second.failed, second.duplicates) == (4, 0, 0)
    assert set(hub.samples) == {r.id for r in recs}
    assert Counter(store.released) == Counter({r.id: 1 for r in recs})  # none twice
    assert store.top(100) == [] and store.check() == []
    assert up.run_once().sent == 0


def test_uploader_stops_at_byte_budget_when_cycle_is_full(store: SpyStore) -> None:
    recs = [record(p, size=1000) for p in (0.9, 0.8, 0.7, 0.6)]
    for r in recs:
        store.put(r)
    budget = wire_size(recs[0]) * 2 + 10
    hub = FakeHub(store)
    up = Uploader(store, hub, batch=10, byte_budget_per_cycle=budget)
    res = up.run_once()
    assert (res.sent, res.failed) == (2, 0) and res.bytes <= budget
    assert hub.order == [recs[0].id, recs[1].id]
    assert up.run_once().sent == 2
    assert hub.order == [r.id for r in recs]


def test_uploader_passes_over_sample_when_it_exceeds_whole_budget(store: SpyStore) -> None:
    big, small = record(0.9, size=50_000), record(0.5, size=200)
    store.put(big)
    store.put(small)
    hub = FakeHub(store)
    up = Uploader(store, hub, batch=1, byte_budget_per_cycle=10_000)
    res = up.run_once()
    assert (res.sent, res.oversize) == (0, 1)  # batch 1 was eaten by the oversize one ...
    res = up.run_once()
    assert (res.sent, res.oversize) == (1, 1)  # ... so the next cycle looks further
    assert hub.order == [small.id]
    assert store.get(big.id) is not None


def test_uploader_respects_batch_when_many_are_pending(store: SpyStore) -> None:
    for i in range(7):
        store.put(record(i / 10))
    hub = FakeHub(store)
    assert Uploader(store, hub, batch=3).run_once().sent == 3
    assert store.stats()["count"] == 4


def test_uploader_does_nothing_when_gate_is_closed(store: SpyStore) -> None:
    store.put(record(0.5))
    hub = FakeHub(store)
    open_ = False
    up = Uploader(store, hub, batch=5, gate=lambda: open_)
    res = up.run_once()
    assert res.gated and res.sent == 0 and hub.calls == 0
    open_ = True
    assert up.run_once().sent == 1


def test_uploader_releases_when_hub_answers_duplicate(store: SpyStore) -> None:
    r = record(0.5)
    store.put(r)
    hub = FakeHub(store)
    hub.samples[r.id] = r.to_meta()  # e.g. acked before a crash, release never happened
    res = Uploader(store, hub, batch=5).run_once()
    assert (res.sent, res.duplicates) == (1, 1)
    assert store.get(r.id) is None


def test_uploader_keeps_record_when_feedback_arrives_in_flight(store: SpyStore) -> None:
    r = record(0.5)
    store.put(r)

    class FeedbackMidFlight(FakeHub):
        def put_sample(self, meta: dict[str, Any], image: bytes) -> str:
            if self.calls == 0:
                self.store.set_feedback(meta["id"], Feedback("correct", "4", "op", 1.0, 1))
            return super().put_sample(meta, image)

    hub = FeedbackMidFlight(store)
    up = Uploader(store, hub, batch=5)
    assert up.run_once().sent == 1
    kept = store.get(r.id)
    assert kept is not None and kept.feedback is not None  # not lost by the release
    assert store.released == []


def test_uploader_stops_when_sink_answers_nonsense(store: SpyStore) -> None:
    store.put(record(0.5))

    class Weird(FakeHub):
        def put_sample(self, meta: dict[str, Any], image: bytes) -> str:
            return "maybe"

    res = Uploader(store, Weird(store), batch=5).run_once()
    assert (res.sent, res.failed) == (0, 1)
    assert store.stats()["count"] == 1
