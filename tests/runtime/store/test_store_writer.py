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
from runtime.sampling import Scorer, make_scorer
from runtime.store.lmdb_store import SampleStore
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

    def score(self, prediction: Prediction) -> float:
        self.entered.set()
        self.release.wait(10)
        return 0.5


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SampleStore]:
    s = SampleStore(tmp_path / "samples", max_bytes=8 << 20)
    yield s
    s.close()


def test_writer_stores_scored_jpeg_record_when_frame_is_offered(store: SampleStore) -> None:
    w = StoreWriter(store, make_scorer({"margin": 1.0}), device_id="dev-9", jpeg_quality=80)
    assert w.offer(frame(), prediction([0.55, 0.45], "a.png")) is True
    assert w.close(timeout=5) is True
    [rec] = store.top(5)
    assert rec.device_id == "dev-9" and rec.frame_id == "a.png"
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
