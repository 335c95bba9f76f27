"""Class quotas, the random slice and the disk cap of the sample store, on real LMDB."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.store.lmdb_store import ClassQuota, SampleStore, record_footprint
from runtime.store.record import Feedback, SampleRecord

Opener = Callable[..., SampleStore]
RecordFactory = Callable[..., SampleRecord]
Capper = Callable[..., int]


def labelled(make_record: RecordFactory, label: str, priority: float, **kw: Any) -> SampleRecord:
    item = {"class_id": 0, "label": label, "score": 0.9}
    stages = {"cls": {"kind": "classification", "items": [item], "latency_ms": 1.0}}
    return make_record(priority, prediction={"frame_id": "f", "stages": stages}, **kw)


@pytest.mark.parametrize(
    ("labels", "feedback", "expected"),
    [
        ([], None, ""),
        (["7"], None, "7"),
        (["1", "7", "7"], None, "7"),
        (["1", "7"], None, "1"),  # tie: equal scores, then the name
        (["7"], Feedback("correct", "1", "ops", 1.0, 3), "1"),
        (["7", "7", "2"], Feedback("correct", "2", "ops", 1.0, 3, item=0), "2"),
        (["7"], Feedback("confirm", None, "ops", 1.0, 3), "7"),
    ],
)
def test_record_final_class_follows_majority_and_correction_when_asked(
    make_record: RecordFactory, labels: list[str], feedback: Feedback | None, expected: str
) -> None:
    items = [{"class_id": 0, "label": lbl, "score": 0.9} for lbl in labels]
    stages = {"cls": {"kind": "classification", "items": items, "latency_ms": 1.0}}
    rec = make_record(0.5, prediction={"frame_id": "f", "stages": stages}, feedback=feedback)
    assert rec.final_class() == expected


def test_store_evicts_lowest_of_class_when_count_quota_is_reached(
    open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store(quotas={"7": ClassQuota(max_count=2)})
    low_other = labelled(make_record, "1", 0.1)
    sevens = [labelled(make_record, "7", p) for p in (0.5, 0.6)]
    for r in (low_other, *sevens):
        assert store.put(r)
    newcomer = labelled(make_record, "7", 0.55)
    assert store.put(newcomer)
    ids = {r.id for r in store.top(10)}
    assert ids == {low_other.id, sevens[1].id, newcomer.id}  # the lowest 7 went, not the 1
    assert store.put(labelled(make_record, "7", 0.2)) is False  # below every 7 kept
    assert store.class_stats()["7"]["count"] == 2
    assert store.stats()["evicted"] == 1
    assert store.check() == []


def test_store_applies_default_quota_when_class_is_not_named(
    open_store: Opener, make_record: RecordFactory, cap_for: Capper
) -> None:
    cap = cap_for(10)
    share = 3.5 * record_footprint(labelled(make_record, "x", 0.5)) / cap
    store = open_store(max_bytes=cap, quotas={"*": ClassQuota(max_share=share)})
    rng = random.Random(3)
    for _ in range(40):
        store.put(labelled(make_record, rng.choice("abc"), rng.random()))
    counts = {k: v["count"] for k, v in store.class_stats().items()}
    assert counts == {"a": 3, "b": 3, "c": 3}
    for label in "abc":  # each class kept its best three
        kept = [r.priority for r in store.top(100) if r.final_class() == label]
        assert len(kept) == 3
    assert store.check() == []


def test_store_keeps_corrected_record_when_its_class_is_over_quota(
    open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store(quotas={"7": ClassQuota(max_count=1)})
    first = labelled(make_record, "7", 0.3)
    store.put(first)
    store.set_feedback(first.id, Feedback("confirm", None, "ops", 1.0, 3))
    for p in (0.9, 0.95):
        assert store.put(labelled(make_record, "7", p)) is False  # only a protected 7 to evict
    got = store.get(first.id)
    assert got is not None and got.feedback is not None
    # A correction moves the record to its new class.
    store.set_feedback(first.id, Feedback("correct", "1", "ops", 2.0, 3))
    assert set(store.class_stats()) == {"1"}
    assert store.put(labelled(make_record, "7", 0.9))
    assert store.check() == []


def test_store_keeps_random_slice_when_higher_priority_samples_flood_in(
    open_store: Opener, make_record: RecordFactory, cap_for: Capper
) -> None:
    cap = cap_for(10)
    one = record_footprint(make_record(0.5))
    store = open_store(max_bytes=cap, random_share=3.5 * one / cap)
    slice_ = [make_record(0.0, random_slice=True) for _ in range(3)]
    for r in slice_:
        assert store.put(r)
    for i in range(30):
        store.put(make_record(0.5 + i * 0.01))
    kept = store.top(100)
    assert {r.id for r in kept if r.random_slice} == {r.id for r in slice_}
    assert sum(not r.random_slice for r in kept) == 7
    # Over its share, the slice drops its *oldest* record, whatever the priorities.
    newest = make_record(0.0, random_slice=True)
    assert store.put(newest)
    now = {r.id for r in store.top(100) if r.random_slice}
    assert now == {slice_[1].id, slice_[2].id, newest.id}
    assert store.stats()["random"] == 3
    assert store.check() == []


def test_store_random_slice_claims_its_share_when_ranked_records_fill_the_store(
    open_store: Opener, make_record: RecordFactory, cap_for: Capper
) -> None:
    cap = cap_for(6)
    one = record_footprint(make_record(0.5))
    store = open_store(max_bytes=cap, random_share=2.5 * one / cap)
    ranked = [make_record(0.5 + i * 0.01) for i in range(6)]
    for r in ranked:
        assert store.put(r)
    assert store.put(make_record(0.0, random_slice=True))  # evicts the lowest ranked one
    ids = {r.id for r in store.top(100)}
    assert ranked[0].id not in ids and ranked[1].id in ids
    assert store.check() == []


def test_store_disk_use_stays_within_one_percent_of_cap_when_churned_with_jpeg_sized_samples(
    tmp_path: Path, make_record: RecordFactory
) -> None:
    cap = 12 << 20
    rng = random.Random(5)
    store = SampleStore(tmp_path / "s", max_bytes=cap, random_share=0.05)
    fb = Feedback("correct", "3", "ops", 1.0, 3)
    try:
        for i in range(400):
            batch = [
                make_record(
                    rng.random(),
                    size=rng.randint(15_000, 25_000),
                    random_slice=rng.random() < 0.03,
                )
                for _ in range(3)
            ]
            store.put_many(batch)
            if i % 50 == 0:
                store.set_feedback(store.top(1)[0].id, fb)
            if i % 70 == 0:
                store.release([r.id for r in store.top(5)])
        st = store.stats()
        disk = (tmp_path / "s" / "data.mdb").stat().st_size
        assert st["evicted"] > 300
        assert disk <= 1.01 * cap, (disk, cap)
        assert st["bytes"] >= 0.9 * cap  # and the cap is actually used
        assert store.check() == []
    finally:
        store.close()


@pytest.mark.parametrize("batch", [1, 4])
def test_store_put_many_ranks_like_single_puts_when_batched(
    open_store: Opener, make_record: RecordFactory, cap_for: Capper, batch: int
) -> None:
    store = open_store(max_bytes=cap_for(8 + 2 * batch))
    rng = random.Random(9)
    prios = [rng.random() for _ in range(40)]
    for i in range(0, len(prios), batch):
        store.put_many([make_record(p) for p in prios[i : i + batch]])
    kept = [r.priority for r in store.top(100)]
    assert kept == sorted(prios, reverse=True)[: len(kept)]
    assert store.check() == []


def test_store_floor_and_ranked_read_the_index_when_store_is_full(
    open_store: Opener, make_record: RecordFactory, cap_for: Capper
) -> None:
    cap = cap_for(5)
    one = record_footprint(make_record(0.5))
    store = open_store(max_bytes=cap, random_share=1.5 * one / cap)
    assert store.floor() is None  # nothing written yet: room
    recs = [make_record(p) for p in (0.2, 0.4, 0.6)]
    for r in recs:
        store.put(r)
    assert store.floor() is None  # still room for one more of the largest
    store.put(make_record(0.05, random_slice=True))  # random slice: not a floor
    store.put(make_record(0.9))
    store.set_feedback(recs[0].id, Feedback("confirm", None, "ops", 1.0, 3))  # protected
    assert store.floor() == 0.4
    assert store.put(make_record(0.3)) is False  # below the floor: refused
    ranked = store.ranked(3)
    assert [p for _, p in ranked] == [1.2, 0.9, 0.6]
    assert [r.id for r in store.top(3, with_image=False)] == [i for i, _ in ranked]
    assert all(r.image == b"" for r in store.top(3, with_image=False))
    assert store.ranked(10, state="uploaded") == []
    assert store.check() == []
