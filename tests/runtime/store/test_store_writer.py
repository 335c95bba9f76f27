"""StoreWriter: the frame path hands frames over without ever waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.pipeline.prediction import Item, Prediction, StageResult
from runtime.sampling import SampleContext, Scorer, make_scorer
from runtime.store.lmdb_store import SampleStore
from runtime.store.record import Feedback
from runtime.store.writer import StoreWriter


def prediction(vector: list[float], frame_id: str = "f.png") -> Prediction:
    it = Item(class_id=0, label="0", score=max(vector), scores=vector)
    return Prediction(
        frame_id=frame_id,
        stages={"digits": StageResult("digits", "classification", [it], 2.0)},
        bundle="digits",
        bundle_version=4,
        ontology_version=2,
        width=64,
        height=48,
    )


def frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)


class Blocking:
    """A strategy that parks the worker until released (to fill the queue on purpose)."""

    name = "blocking"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def score(self, prediction: Prediction, context: SampleContext | None = None) -> float:
        self.entered.set()
        self.release.wait(10)
        return 0.5


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SampleStore]:
    s = SampleStore(tmp_path / "samples", max_bytes=8 << 20)
    yield s
    s.close()


def test_writer_stores_scored_jpeg_record_when_frame_is_offered(store: SampleStore) -> None:
    w = StoreWriter(
        store, make_scorer({"margin": 1.0}), device_id="dev-9", jpeg_quality=80, camera="gate-2"
    )
    assert w.offer(frame(), prediction([0.55, 0.45], "a.png")) is True
    assert w.close(timeout=5) is True
    [rec] = store.top(5)
    assert rec.device_id == "dev-9" and rec.frame_id == "a.png"
    assert rec.extra == {"camera": "gate-2"}  # replay slices history by camera
    assert (rec.bundle, rec.bundle_version, rec.ontology_version) == ("digits", 4, 2)
    assert rec.scores == pytest.approx({"margin": 0.9})
    assert rec.priority == pytest.approx(0.9)
    assert rec.image_format == "jpeg" and rec.image[:2] == b"\xff\xd8"
    img = cv2.imdecode(np.frombuffer(rec.image, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (48, 64, 3)
    assert rec.prediction == prediction([0.55, 0.45], "a.png").to_dict()
    assert w.stats()["stored"] == 1


def test_writer_sheds_without_blocking_when_queue_is_full(store: SampleStore) -> None:
    slow = Blocking()
    w = StoreWriter(store, Scorer({"blocking": slow}, {"blocking": 1.0}), "dev", queue_size=2)
    try:
        assert w.offer(frame(), prediction([0.5, 0.5], "first"))
        assert slow.entered.wait(5)  # the worker is now stuck on the first frame
        results, worst = [], 0.0
        for i in range(10):
            t0 = time.perf_counter()
            results.append(w.offer(frame(), prediction([0.5, 0.5], f"f{i}")))
            worst = max(worst, time.perf_counter() - t0)
        assert results == [True, True] + [False] * 8
        assert worst < 0.05
        st = w.stats()
        assert (st["offered"], st["dropped"], st["queued"]) == (11, 8, 2)
    finally:
        slow.release.set()
        assert w.close(timeout=5)
    assert w.stats()["stored"] == 3
    assert store.stats()["count"] == 3


def test_writer_skips_frame_when_priority_is_below_minimum(store: SampleStore) -> None:
    w = StoreWriter(store, make_scorer({"margin": 1.0}), "dev", min_priority=0.5)
    w.offer(frame(), prediction([0.99, 0.01]))  # margin 0.02: skipped
    w.offer(frame(), prediction([0.5, 0.5]))  # margin 1.0: kept
    w.close(timeout=5)
    st = w.stats()
    assert (st["skipped"], st["stored"]) == (1, 1)
    assert [r.priority for r in store.top(5)] == [1.0]


def test_writer_refuses_frames_when_closed(store: SampleStore) -> None:
    w = StoreWriter(store, make_scorer({"margin": 1.0}), "dev")
    assert w.close(timeout=5)
    assert w.close(timeout=5)
    assert w.offer(frame(), prediction([0.5, 0.5])) is False
    assert w.stats()["dropped"] == 1


def test_writer_abandons_backlog_when_close_times_out(store: SampleStore) -> None:
    slow = Blocking()
    w = StoreWriter(store, Scorer({"blocking": slow}, {"blocking": 1.0}), "dev", queue_size=4)
    for i in range(4):
        w.offer(frame(), prediction([0.5, 0.5], f"f{i}"))
    assert slow.entered.wait(5)
    t0 = time.perf_counter()
    assert w.close(timeout=0.2) is False
    assert time.perf_counter() - t0 < 1.0
    slow.release.set()
    w._thread.join(5)
    assert not w._thread.is_alive()
    assert w.stats()["stored"] <= 1


def test_writer_counts_error_and_survives_when_frame_cannot_encode(store: SampleStore) -> None:
    w = StoreWriter(store, make_scorer({"margin": 1.0}), "dev")
    w.offer(np.zeros((0, 0, 3), np.uint8), prediction([0.5, 0.5]))
    w.offer(frame(), prediction([0.5, 0.5]))
    w.close(timeout=5)
    st = w.stats()
    assert st["errors"] == 1 and st["stored"] == 1


def scene(seed: int) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (64, 48), interpolation=cv2.INTER_CUBIC)


def test_writer_stores_png_when_encoding_is_png(store: SampleStore) -> None:
    w = StoreWriter(store, make_scorer({"margin": 1.0}), "dev", encoding="png")
    img = frame()
    w.offer(img, prediction([0.5, 0.5]))
    assert w.close(timeout=5)
    [rec] = store.top(5)
    assert rec.image_format == "png" and rec.image[:8] == b"\x89PNG\r\n\x1a\n"
    back = cv2.imdecode(np.frombuffer(rec.image, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(back, img)  # lossless


def test_writer_keeps_flagged_random_slice_when_priority_is_below_minimum(
    tmp_path: Path,
) -> None:
    store = SampleStore(tmp_path / "s", max_bytes=8 << 20, random_share=0.5)
    w = StoreWriter(
        store,
        make_scorer({"margin": 1.0}),
        "dev",
        min_priority=0.99,
        random_slice=0.25,
        seed=4,
        queue_size=256,
    )
    for i in range(200):
        w.offer(frame(), prediction([0.9, 0.1], f"f{i}"))  # margin 0.2: never kept on score
    assert w.close(timeout=10)
    st = w.stats()
    kept = store.top(1000)
    assert all(r.random_slice for r in kept)
    assert st["stored"] == st["stored_random"] == len(kept)
    assert 30 <= len(kept) <= 70  # ~25 % of 200, drawn uniformly
    assert st["skipped"] == 200 - len(kept)
    store.close()


def test_writer_collapses_near_duplicates_when_novelty_is_weighted(store: SampleStore) -> None:
    w = StoreWriter(store, make_scorer({"novelty": 1.0}), "dev", min_priority=0.5)
    w.offer(scene(1), prediction([0.5, 0.5], "a"), timestamp=100.0)
    time.sleep(0.3)  # let the first one be kept before the next is scored
    w.offer(
        np.clip(scene(1).astype(np.int16) + 4, 0, 255).astype(np.uint8),
        prediction([0.5, 0.5], "a2"),
    )
    time.sleep(0.3)
    w.offer(scene(2), prediction([0.5, 0.5], "b"))
    assert w.close(timeout=5)
    kept = {r.frame_id: r for r in store.top(10)}
    assert set(kept) == {"a", "b"}
    assert kept["a"].created == 100.0
    assert w.stats()["skipped"] == 1


def test_open_store_and_writer_follows_device_config_when_built(tmp_path: Path) -> None:
    from runtime.config import DeviceConfig
    from runtime.store.writer import open_store_and_writer

    cfg = DeviceConfig.model_validate(
        {
            "device_id": "cam-3",
            "store": {
                "max_bytes": 4 << 20,
                "encoding": "png",
                "quotas": {"*": {"max_count": 5}},
                "random_slice": 0.5,
                "random_slice_share": 0.1,
                "sync": "data",
                "max_rate": 0,
            },
            "sampling": {"weights": {"rules": 1.0}, "rules": {"when": [{"labels": ["0"]}]}},
        }
    )
    store, writer = open_store_and_writer(cfg, tmp_path / "samples")
    try:
        assert store.quotas and store.random_share == 0.1 and writer.encoding == "png"
        assert store.metasync is False
        assert writer.random_slice == 0.5 and writer.device_id == "cam-3"
        for i in range(20):
            writer.offer(frame(), prediction([0.9, 0.1], f"f{i}"))
        assert writer.close(timeout=10)
        assert store.class_stats()["0"]["count"] == 5
        assert all(r.scores == {"rules": 1.0} for r in store.top(100))
        assert store.check() == []
    finally:
        writer.close(timeout=1)
        store.close()


def test_writer_refuses_before_encoding_when_full_store_floor_is_higher(tmp_path: Path) -> None:
    from runtime.store.lmdb_store import record_footprint, reserve_bytes
    from runtime.store.record import SampleRecord

    def rec(p: float) -> SampleRecord:
        return SampleRecord(
            id=f"{int(p * 1000):016x}-00000000",
            device_id="d",
            created=1.0,
            frame_id="x",
            bundle="digits",
            bundle_version=4,
            ontology_version=2,
            image=b"\0" * 3000,
            image_format="jpeg",
            prediction={"frame_id": "x", "stages": {}},
            scores={},
            priority=p,
        )

    fp = record_footprint(rec(0.9))
    store = SampleStore(tmp_path / "s", max_bytes=reserve_bytes(fp) + 3 * fp)
    for p in (0.8, 0.9, 0.95):
        assert store.put(rec(p))
    assert store.floor() == 0.8
    w = StoreWriter(store, make_scorer({"margin": 1.0}), "dev")
    w.offer(frame(), prediction([0.9, 0.1]))  # margin 0.2: under the floor
    w.offer(frame(), prediction([0.5, 0.5]))  # margin 1.0: evicts the 0.8
    assert w.close(timeout=5)
    assert (w.stats()["rejected"], w.stats()["stored"]) == (1, 1)
    assert store.stats()["rejected"] == 0  # refused by the writer, never sent to the store
    kept = [r.priority for r in store.top(10)]
    assert kept[0] == 1.0 and 0.8 not in kept and 0.95 in kept
    store.close()


def _settle(w: StoreWriter, n: int) -> None:
    deadline = time.monotonic() + 5
    while w.stats()["stored"] + w.stats()["rejected"] < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_writer_replaces_the_frame_record_when_its_shadow_copy_arrives(store: SampleStore) -> None:
    w = StoreWriter(
        store, make_scorer({"margin": 1.0, "disagreement": 1.0}), device_id="dev", batch=1
    )
    w.offer(frame(), prediction([0.9, 0.1], "a.png"))
    _settle(w, 1)
    [first] = store.top(5)
    store.set_feedback(
        first.id, Feedback(kind="confirm", label=None, who="op", when=1.0, bundle_version=4)
    )
    copy = prediction([0.9, 0.1], "a.png")
    copy.shadow = {"disagreement": 1.0, "candidate_version": 5}
    w.offer(frame(), copy)
    w.offer(frame(), prediction([0.6, 0.4], "b.png"))
    assert w.close(timeout=5) is True
    by_frame = {r.frame_id: r for r in store.top(10)}
    assert sorted(by_frame) == ["a.png", "b.png"] and len(store.top(10)) == 2
    again = by_frame["a.png"]
    assert again.id == first.id  # the same sample, not the frame stored twice
    assert again.prediction["shadow"]["disagreement"] == 1.0
    assert again.scores["disagreement"] == 1.0 and again.priority >= first.priority
    assert again.feedback is not None and again.feedback.who == "op"  # the human's word stays


def test_writer_stores_a_new_sample_when_the_shadow_copy_of_an_uploaded_frame_arrives(
    store: SampleStore,
) -> None:
    w = StoreWriter(store, make_scorer({"disagreement": 1.0, "margin": 1.0}), "dev", batch=1)
    w.offer(frame(), prediction([0.9, 0.1], "a.png"))
    _settle(w, 1)
    [first] = store.top(5)
    store.release([first.id])  # acknowledged by the hub: gone home
    copy = prediction([0.9, 0.1], "a.png")
    copy.shadow = {"disagreement": 1.0}
    w.offer(frame(), copy)
    assert w.close(timeout=5) is True
    [rec] = store.top(5)
    assert rec.id != first.id and rec.prediction["shadow"] == {"disagreement": 1.0}


def _settled(w: StoreWriter) -> int:
    st = w.stats()
    return sum(st[k] for k in ("stored", "rejected", "skipped", "errors", "outranked", "dropped"))


def test_writer_writes_only_the_best_frame_of_a_slot_when_rate_is_set(store: SampleStore) -> None:
    w = StoreWriter(store, make_scorer({"margin": 1.0}), "dev", max_rate=0.5)  # 2 s slots
    tops = [0.9, 0.8, 0.95, 0.55, 0.7, 0.99, 0.6, 0.85]  # margins 0.2 .. 1.0; best: 0.55
    for i, top in enumerate(tops):
        assert w.offer(frame(), prediction([top, 1 - top], f"f{i}"))
    assert w.close(timeout=5)  # closing ends the open slot: its best frame is written
    [rec] = store.top(10)
    assert rec.frame_id == "f3" and rec.priority == pytest.approx(0.9)
    st = w.stats()
    assert (st["stored"], st["outranked"], st["held"]) == (1, 7, 0)
    assert _settled(w) == st["offered"] == 8


def test_writer_ends_a_slot_on_time_when_no_frame_follows(store: SampleStore) -> None:
    w = StoreWriter(store, make_scorer({"margin": 1.0}), "dev", max_rate=5.0)  # 0.2 s slots
    for i, top in enumerate([0.9, 0.6, 0.8]):
        w.offer(frame(), prediction([top, 1 - top], f"a{i}"))
    deadline = time.monotonic() + 5
    while w.stats()["stored"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.frame_id for r in store.top(10)] == ["a1"]  # written without a later frame
    for i, top in enumerate([0.7, 0.95, 0.99]):
        w.offer(frame(), prediction([top, 1 - top], f"b{i}"))
    assert w.close(timeout=5)
    assert sorted(r.frame_id for r in store.top(10)) == ["a1", "b0"]
    assert (w.stats()["stored"], w.stats()["outranked"]) == (2, 4)


def test_writer_stores_at_most_max_rate_frames_per_second_under_a_stream(
    store: SampleStore,
) -> None:
    w = StoreWriter(store, make_scorer({"margin": 1.0}), "dev", max_rate=10.0, queue_size=256)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 1.0:  # ~200 frames/s for one second
        w.offer(frame(), prediction([0.6, 0.4], f"f{n}"))
        n += 1
        time.sleep(0.005)
    assert w.close(timeout=5)
    elapsed = time.monotonic() - t0
    st = w.stats()
    assert 1 <= st["stored"] <= 10 * elapsed + 1  # one per 0.1 s slot at most (+ the last)
    assert st["stored"] + st["outranked"] + st["dropped"] == n == st["offered"]


def test_writer_gives_the_random_slice_a_uniform_pick_of_the_slot(tmp_path: Path) -> None:
    store = SampleStore(tmp_path / "s", max_bytes=64 << 20, random_share=0.5)
    counts = {f"f{i}": 0 for i in range(4)}
    for seed in range(160):
        w = StoreWriter(
            store, make_scorer({"margin": 1.0}), "dev", random_slice=1.0, seed=seed, max_rate=0.5
        )
        for i, top in enumerate([0.55, 0.7, 0.9, 0.99]):  # f0 is by far the best
            w.offer(frame(), prediction([top, 1 - top], f"f{i}"))
        assert w.close(timeout=5)
        assert w.stats()["stored_random"] == 1
    kept = store.top(1000)
    assert len(kept) == 160 and all(r.random_slice for r in kept)
    for r in kept:
        counts[r.frame_id] += 1
    assert all(20 <= c <= 60 for c in counts.values()), counts  # ~40 each: not by priority
    store.close()


def test_writer_keeps_the_shadow_copy_when_a_slot_holds_its_frame(store: SampleStore) -> None:
    w = StoreWriter(store, make_scorer({"margin": 1.0, "disagreement": 1.0}), "dev", max_rate=0.5)
    w.offer(frame(), prediction([0.9, 0.1], "a.png"))  # margin 0.2
    w.offer(frame(), prediction([0.6, 0.4], "b.png"))  # margin 0.8: best so far
    copy = prediction([0.9, 0.1], "a.png")
    copy.shadow = {"disagreement": 1.0}  # a's shadow copy: now the slot's best
    w.offer(frame(), copy)
    assert w.close(timeout=5)
    [rec] = store.top(10)
    assert rec.frame_id == "a.png" and rec.prediction["shadow"] == {"disagreement": 1.0}
    assert rec.scores["disagreement"] == 1.0
    assert (w.stats()["stored"], w.stats()["outranked"]) == (1, 2)


def test_writer_rejects_a_bad_rate_when_built(store: SampleStore) -> None:
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_rate"):
            StoreWriter(store, make_scorer({"margin": 1.0}), "dev", max_rate=bad)


def test_device_config_writes_one_frame_per_second_by_default(tmp_path: Path) -> None:
    from runtime.config import DeviceConfig
    from runtime.store.writer import open_store_and_writer

    cfg = DeviceConfig.model_validate({"device_id": "cam-1"})
    assert cfg.store.max_rate == 1.0
    store, writer = open_store_and_writer(cfg, tmp_path / "samples")
    try:
        assert writer.max_rate == 1.0
    finally:
        writer.close(timeout=1)
        store.close()
