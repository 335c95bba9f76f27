"""Storage without HTTP: atomic blobs (with a failing replace) and idempotent sample rows."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from hub.errors import BadRequest, NotFound
from hub.storage import BlobStore, HubDB


def test_blob_put_when_replace_fails_leaves_no_blob_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path / "blobs")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.put(b"data")
    sha = hashlib.sha256(b"data").hexdigest()
    assert not store.has(sha)
    assert list(store.tmp_dir.iterdir()) == []


def test_blob_store_when_reopened_drops_stale_temp_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    (store.tmp_dir / "blob.x.tmp").write_bytes(b"half")
    BlobStore(tmp_path / "blobs")
    assert list(store.tmp_dir.iterdir()) == []


def test_blob_put_when_expected_hash_differs_raises_bad_request(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(BadRequest):
        store.put(b"data", expected_sha256="0" * 64)
    with pytest.raises(NotFound):
        store.read("0" * 64)


def test_add_sample_when_id_repeats_returns_false_and_keeps_first(tmp_path: Path) -> None:
    db = HubDB(tmp_path / "db.sqlite3")
    assert db.add_sample("s1", "digits", "cam", 0.1, {"a": 1}, "0" * 64) is True
    assert db.add_sample("s1", "digits", "cam", 0.9, {"a": 2}, "1" * 64) is False
    sample = db.sample("s1")
    assert (sample.priority, sample.meta, sample.state) == (0.1, {"a": 1}, "pending")


def test_samples_when_priorities_tie_are_ordered_oldest_first(tmp_path: Path) -> None:
    db = HubDB(tmp_path / "db.sqlite3")
    for sid, priority in [("a", 0.5), ("b", 0.7), ("c", 0.5)]:
        db.add_sample(sid, "digits", "cam", priority, {}, "0" * 64)
    assert [s.id for s in db.samples("digits", "pending", None)] == ["b", "a", "c"]
    assert [s.id for s in db.samples(None, None, 2)] == ["b", "a"]
