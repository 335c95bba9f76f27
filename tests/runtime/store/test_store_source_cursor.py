"""The source cursor travels in the store's transaction: after a kill -9 the source resumes
exactly where the records stop, and a frame decided before never makes a second record."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from runtime.pipeline.prediction import Prediction
from runtime.sampling import make_scorer
from runtime.sources import FolderSource
from runtime.store.lmdb_store import SampleStore
from runtime.store.writer import StoreWriter
from tests.runtime.store.conftest import build_record

SRC = "folder:cam0:/inbox"


def test_store_refuses_second_record_of_a_frame_when_cursor_passed_it(tmp_path: Path) -> None:
    store = SampleStore(tmp_path / "s", max_bytes=4 << 20)
    a = build_record(0.5, frame_id="f0003.png")
    assert store.put_many([a], SRC, "f0005.png") == [True]
    assert store.source_cursor(SRC) == "f0005.png"
    again = build_record(0.9, frame_id="f0003.png")  # re-read after a crash: a new record
    later = build_record(0.9, frame_id="f0006.png")
    assert store.put_many([again, later], SRC, "f0006.png") == [False, True]
    assert store.stats()["duplicates"] == 1
    # The same record rewritten (its shadow copy) and a shadow copy of another old frame pass.
    rewrite = build_record(0.7, id=a.id, frame_id="f0003.png")
    shadow = build_record(0.8, frame_id="f0004.png", prediction={"stages": {}, "shadow": {"x": 1}})
    assert store.put_many([rewrite, shadow], SRC, "f0004.png") == [True, True]
    assert store.source_cursor(SRC) == "f0006.png"  # never goes back
    # Another source has its own cursor.
    assert store.put_many([build_record(0.5, frame_id="f0001.png")], "other", "f0001.png") == [True]
    store.close()
    reopened = SampleStore(tmp_path / "s", max_bytes=4 << 20)
    assert reopened.source_cursor(SRC) == "f0006.png"
    assert sorted(r.frame_id for r in reopened.top(10)) == [
        "f0001.png",
        "f0003.png",
        "f0004.png",
        "f0006.png",
    ]
    assert reopened.check() == []
    reopened.close()


def test_writer_stores_cursor_of_last_decided_frame_when_slots_close(tmp_path: Path) -> None:
    store = SampleStore(tmp_path / "s", max_bytes=4 << 20)
    w = StoreWriter(store, make_scorer({"margin": 1.0}, "max", 0), "dev", max_rate=50.0, source=SRC)
    frame = np.zeros((8, 8, 3), np.uint8)
    for i in range(10):
        w.offer(frame, Prediction(frame_id=f"f{i:04d}.png"))
        time.sleep(0.005)
    assert w.close(timeout=5)
    assert store.source_cursor(SRC) == "f0009.png"
    store.close()


def test_folder_source_resumes_after_store_cursor_when_its_own_lags(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    for i in range(6):
        (inbox / f"f{i:04d}.png").write_bytes(b"x")
    src = FolderSource(inbox, "*.png", tmp_path / "cursor.json", persist_every=25)
    src.resume_after("f0003.png")
    got = [f.id for f in iter(src.next, None)]
    assert got == ["f0004.png", "f0005.png"]


def test_cursor_moves_when_batch_is_empty_and_through_is_given(tmp_path: Path) -> None:
    # Every frame of a batch decided against without a record: only the cursor moves (this
    # raised IndexError before, reading the first record's id to name the transaction).
    store = SampleStore(tmp_path / "s", max_bytes=4 << 20)
    assert store.put_many([], SRC, "f0007.png") == []
    assert store.source_cursor(SRC) == "f0007.png"
    assert store.put_many([], SRC, "f0002.png") == []
    assert store.source_cursor(SRC) == "f0007.png"  # never goes back
    assert store.put_many([]) == []
    assert store.check() == []
    store.close()
