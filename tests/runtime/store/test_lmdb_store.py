"""SampleStore on real LMDB: ranking, the byte cap, eviction, protection, persistence."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import lmdb
import pytest

from runtime.errors import StoreError
from runtime.store.lmdb_store import SampleStore, decode_priority_key, priority_key
from runtime.store.record import Feedback, SampleRecord

Opener = Callable[..., SampleStore]
RecordFactory = Callable[..., SampleRecord]
Capper = Callable[..., int]

FEEDBACK = Feedback(kind="correct", label="7", who="ops", when=2.0, bundle_version=3)


def test_priority_key_sorts_like_numbers_when_values_span_signs() -> None:
    values = [-1e300, -2.5, -1e-300, 0.0, 1e-300, 0.25, 0.5, 1.0, 1.5, 1e300]
    keys = [priority_key(v) for v in values]
    assert keys == sorted(keys)
    assert [decode_priority_key(k) for k in keys] == values
    assert priority_key(-0.0) == priority_key(0.0)


def test_store_returns_equal_record_when_put_then_get(
    open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store()
    rec = make_record(
        0.4, shadow_prediction={"frame_id": "x"}, feedback=FEEDBACK, extra={"k": [1, 2]}
    )
    assert store.put(rec) is True
    assert store.get(rec.id) == rec
    assert store.get("0000000000000000-deadbeef") is None


def test_store_top_lists_highest_priority_first_when_many_stored(
    open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store()
    prios = [0.3, 0.9, 0.1, 0.5, 0.7, 0.5]
    recs = [make_record(p) for p in prios]
    for r in recs:
        store.put(r)
    top = store.top(10)
    assert [r.priority for r in top] == sorted(prios, reverse=True)
    assert [r.priority for r in store.top(2)] == [0.9, 0.7]
    # Equal priorities: the newer id first.
    fives = [r.id for r in top if r.priority == 0.5]
    assert fives == sorted(fives, reverse=True)
    assert store.top(0) == []


def test_store_top_filters_by_state_when_some_are_uploaded(
    open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store()
    pending, uploaded = make_record(0.2), make_record(0.8, upload_state="uploaded")
    store.put(pending)
    store.put(uploaded)
    assert [r.id for r in store.top(5)] == [pending.id]
    assert [r.id for r in store.top(5, state="uploaded")] == [uploaded.id]
    assert [r.id for r in store.top(5, state=None)] == [uploaded.id, pending.id]
    assert store.stats()["pending"] == 1


def test_store_evicts_lowest_priority_when_cap_is_reached(
    cap_for: Capper, open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store(max_bytes=cap_for(5.5))
    try:
        recs = [make_record(p) for p in (0.5, 0.1, 0.9, 0.3, 0.7)]
        for r in recs:
            assert store.put(r)
        newcomer = make_record(0.6)
        assert store.put(newcomer) is True
        kept = {r.priority for r in store.top(10)}
        assert kept == {0.3, 0.5, 0.6, 0.7, 0.9}
        st = store.stats()
        assert st["count"] == 5 and st["evicted"] == 1 and st["bytes"] <= st["max_bytes"]
        assert store.check() == []
    finally:
        store.close()


def test_store_rejects_newcomer_when_it_is_lower_than_everything_evictable(
    cap_for: Capper, open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store(max_bytes=cap_for(3))
    for p in (0.4, 0.5, 0.6):
        assert store.put(make_record(p))
    before = [r.id for r in store.top(10)]
    assert store.put(make_record(0.2)) is False
    assert [r.id for r in store.top(10)] == before
    st = store.stats()
    assert st["rejected"] == 1 and st["evicted"] == 0
    assert store.check() == []


def test_store_rejects_record_when_it_alone_exceeds_max_bytes(
    cap_for: Capper, open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store(max_bytes=cap_for(2))
    assert store.put(make_record(0.99, size=3 * cap_for(2))) is False
    assert store.stats()["count"] == 0


def test_store_keeps_feedback_records_when_higher_ones_flood_in(
    cap_for: Capper, open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store(max_bytes=cap_for(6.5))
    low = [make_record(0.01 * (i + 1)) for i in range(6)]
    for r in low:
        assert store.put(r)
    corrected = store.set_feedback(low[0].id, FEEDBACK)
    assert corrected.priority == pytest.approx(1.01)
    assert store.top(1)[0].id == low[0].id
    for i in range(40):
        store.put(make_record(0.5 + i * 0.01))
    ids = {r.id for r in store.top(100)}
    assert low[0].id in ids
    assert not ids & {r.id for r in low[1:]}
    got = store.get(low[0].id)
    assert got is not None and got.feedback == FEEDBACK
    assert store.stats()["bytes"] <= store.max_bytes
    assert store.check() == []


def test_store_keeps_priority_when_feedback_is_given_twice(
    open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store()
    r = make_record(0.3)
    store.put(r)
    store.set_feedback(r.id, FEEDBACK)
    again = store.set_feedback(r.id, Feedback("confirm", None, "ops", 3.0, 3))
    assert again.priority == pytest.approx(1.3)
    assert again.feedback is not None and again.feedback.kind == "confirm"
    assert store.check() == []


def test_store_raises_store_error_when_feedback_targets_unknown_id(open_store: Opener) -> None:
    store = open_store()
    with pytest.raises(StoreError, match="no sample"):
        store.set_feedback("0000000000000000-00000000", FEEDBACK)


def test_store_byte_use_stays_under_cap_when_loaded_randomly(
    cap_for: Capper, open_store: Opener, make_record: RecordFactory
) -> None:
    rng = random.Random(11)
    cap = cap_for(40, size=6000)
    store = open_store(max_bytes=cap)
    for i in range(300):
        rec = make_record(rng.random(), size=rng.randint(200, 12000))
        store.put(rec)
        if i % 37 == 0:
            top = store.top(1)
            if top:
                store.set_feedback(top[0].id, FEEDBACK)
        if i % 53 == 0:
            store.release([r.id for r in store.top(3)])
        assert store.stats()["bytes"] <= cap
    st = store.stats()
    assert st["evicted"] > 0 and st["rejected"] > 0
    assert store.check() == []


def test_store_keeps_everything_when_reopened_after_close(
    cap_for: Capper, store_path: Path, make_record: RecordFactory
) -> None:
    store = SampleStore(store_path, max_bytes=cap_for(5))
    recs = [make_record(p) for p in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)]
    for r in recs:
        store.put(r)
    store.set_feedback(store.top(1)[0].id, FEEDBACK)
    before_top = store.top(100)
    volatile = ("rejected", "corrupt", "reserve", "disk_bytes")
    before = {k: v for k, v in store.stats().items() if k not in volatile}
    store.close()
    store = SampleStore(store_path, max_bytes=cap_for(5))
    try:
        assert store.top(100) == before_top
        after = {k: v for k, v in store.stats().items() if k not in volatile}
        assert after == before
        assert store.check() == []
    finally:
        store.close()


def test_store_release_deletes_and_ignores_unknown_when_called_twice(
    open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store()
    a, b = make_record(0.2), make_record(0.4)
    store.put(a)
    store.put(b)
    assert store.release([a.id, "0000000000000000-00000000"]) == 1
    assert store.release([a.id]) == 0
    assert [r.id for r in store.top(10)] == [b.id]
    assert store.check() == []


def test_store_release_keeps_record_when_priority_changed_since_read(
    open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store()
    r = make_record(0.2)
    store.put(r)
    store.set_feedback(r.id, FEEDBACK)  # arrives while r is "in flight"
    assert store.release([r.id], expected_priority={r.id: 0.2}) == 0
    assert store.get(r.id) is not None
    assert store.release([r.id], expected_priority={r.id: 1.2}) == 1


def test_store_replaces_record_when_same_id_is_put_again(
    open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store()
    r = make_record(0.2)
    store.put(r)
    r.priority = 0.8
    r.scores = {"margin": 0.8}
    store.put(r)
    assert store.stats()["count"] == 1
    assert store.top(5)[0].priority == 0.8
    assert store.check() == []


def test_store_skips_and_counts_corrupt_record_when_walking(
    cap_for: Capper, store_path: Path, make_record: RecordFactory
) -> None:
    cap = cap_for(3)
    store = SampleStore(store_path, max_bytes=cap)
    good = [make_record(p) for p in (0.3, 0.6)]
    for r in good:
        store.put(r)
    store.close()
    bad_id = b"ffffffffffffffff-00000000"
    env = lmdb.open(str(store_path), subdir=True, max_dbs=6)
    with env.begin(write=True) as txn:
        garbage = b"LLS2 garbage that is not a record"
        txn.put(bad_id + b"\0\0", garbage, db=env.open_db(b"records", txn))
        # Its index entries survived (pending, one chunk, footprint 0): only the page rotted.
        entry = bytes([2, 0, 1, 0, 0, 0, 0])
        txn.put(priority_key(0.5) + bad_id, entry, db=env.open_db(b"prio", txn))
        txn.put(priority_key(0.5) + bad_id, b"", db=env.open_db(b"evict", txn))
        meta = env.open_db(b"meta", txn)  # and it was counted, as a record once was
        pending = int.from_bytes(txn.get(b"pending", db=meta), "big")
        txn.put(b"pending", (pending + 1).to_bytes(8, "big"), db=meta)
        count = int.from_bytes(txn.get(b"c:", db=meta)[:8], "big")
        txn.put(b"c:", (count + 1).to_bytes(8, "big") + txn.get(b"c:", db=meta)[8:], db=meta)
    env.close()

    store = SampleStore(store_path, max_bytes=cap)
    try:
        assert [r.id for r in store.top(10)] == [good[1].id, good[0].id]
        assert store.stats()["corrupt"] == 1
        with pytest.raises(StoreError, match="corrupt"):
            store.get(bad_id.decode())
        assert any("ffffffffffffffff" in p for p in store.check())
        # Eviction reclaims the unreadable record like any unprotected one.
        for p in (0.7, 0.8, 0.9, 0.95):
            store.put(make_record(p))
        assert store.stats()["bytes"] <= cap
        assert store.check() == []
    finally:
        store.close()


def test_store_raises_store_error_when_lmdb_map_is_full(
    open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store(max_bytes=10 << 20, map_size=256 * 1024)
    with pytest.raises(StoreError, match="map full"):
        for _ in range(100):
            store.put(make_record(0.5, size=20_000))
    assert store.check() == []  # the failed transaction left nothing half-done
    n = store.stats()["count"]
    assert n == len(store.top(1000)) and n > 0


def test_store_raises_store_error_when_used_after_close(
    open_store: Opener, make_record: RecordFactory
) -> None:
    store = open_store()
    store.close()
    store.close()
    with pytest.raises(StoreError, match="after close"):
        store.put(make_record(0.5))


def test_store_moves_old_layout_aside_when_opened(
    store_path: Path, make_record: RecordFactory
) -> None:
    env = lmdb.open(str(store_path), subdir=True, max_dbs=4)
    with env.begin(write=True) as txn:
        txn.put(b"17979cfe362fe7b8-d2d9c070", b"LLS1...", db=env.open_db(b"records", txn))
    env.close()
    store = SampleStore(store_path, max_bytes=1 << 20)
    try:
        aside = [p for p in store_path.parent.iterdir() if ".format1-" in p.name]
        assert len(aside) == 1 and (aside[0] / "data.mdb").exists()
        assert store.stats()["count"] == 0
        assert store.put(make_record(0.5)) and store.check() == []
    finally:
        store.close()
