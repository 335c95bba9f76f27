"""Shared builders for the store tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.store.lmdb_store import SampleStore, record_footprint, reserve_bytes
from runtime.store.record import SampleRecord, new_sample_id

_clock = itertools.count(1_700_000_000_000_000_000, 1000)

RecordFactory = Callable[..., SampleRecord]


def build_record(priority: float, size: int = 1000, **kw: object) -> SampleRecord:
    """A record with a time-ordered id (strictly increasing within the test run)."""
    fields: dict[str, object] = {
        "id": new_sample_id(next(_clock)),
        "device_id": "dev-1",
        "created": 1.0,
        "frame_id": "frame.png",
        "bundle": "digits",
        "bundle_version": 3,
        "ontology_version": 1,
        "image": bytes([int(priority * 100) % 256]) * size,
        "image_format": "jpeg",
        "prediction": {"frame_id": "frame.png", "stages": {}},
        "scores": {"margin": min(1.0, max(0.0, priority))},
        "priority": priority,
    }
    fields.update(kw)
    return SampleRecord(**fields)  # type: ignore[arg-type]


def cap_for(n: float, size: int = 1000, **kw: object) -> int:
    """A ``max_bytes`` that holds ``n`` records of the builder's shape, reserve included."""
    fp = record_footprint(build_record(0.5, size, **kw))
    return reserve_bytes(fp) + int(n * fp)


@pytest.fixture(name="cap_for")
def cap_for_fixture() -> Callable[..., int]:
    return cap_for


@pytest.fixture
def make_record() -> RecordFactory:
    return build_record


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "samples"


@pytest.fixture
def open_store(store_path: Path) -> Iterator[Callable[..., SampleStore]]:
    opened: list[SampleStore] = []

    def _open(max_bytes: int = 1 << 20, map_size: int | None = None, **kw: Any) -> SampleStore:
        s = SampleStore(store_path, max_bytes=max_bytes, map_size=map_size, **kw)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()
