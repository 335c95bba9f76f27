"""The time floor of clockless devices: what moves it, what resets it, and how it is stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from runtime.timefloor import TimeFloor

RELEASE = datetime(2026, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KEYS = {"k1"}


def test_reference_time_when_clock_is_behind_floor_is_floor(tmp_path: Path) -> None:
    floor = TimeFloor(tmp_path / "f.json", RELEASE)
    assert floor.reference_time(EPOCH, KEYS) == RELEASE
    later = RELEASE + timedelta(days=3)
    assert floor.reference_time(later, KEYS) == later


def test_observe_when_timestamp_is_newer_raises_and_persists_floor(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    issued = RELEASE + timedelta(days=10)
    floor = TimeFloor(path, RELEASE)
    assert floor.observe(issued, issued + timedelta(days=1), KEYS) is True
    assert floor.observe(issued - timedelta(days=1), issued, KEYS) is False  # never goes down
    assert floor.observe(None, issued, KEYS) is False  # a timestamp without an issue time
    assert TimeFloor(path, RELEASE).reference_time(EPOCH, KEYS) == issued
    assert json.loads(path.read_text()) == {
        "floor": issued.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "timestamp_keyids": ["k1"],
    }


def test_observe_when_issue_time_is_after_expiry_caps_floor_at_expiry(tmp_path: Path) -> None:
    floor = TimeFloor(tmp_path / "f.json", RELEASE)
    expires = RELEASE + timedelta(days=1)
    floor.observe(RELEASE + timedelta(days=900), expires, KEYS)
    assert floor.reference_time(EPOCH, KEYS) == expires


def test_floor_when_root_names_other_timestamp_keys_falls_back_to_release_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.json"
    far = RELEASE + timedelta(days=3650)
    TimeFloor(path, RELEASE).observe(far, far + timedelta(days=1), KEYS)  # a rogue key's time
    reopened = TimeFloor(path, RELEASE)
    assert reopened.reference_time(EPOCH, KEYS) == far
    assert reopened.reference_time(EPOCH, {"k2"}) == RELEASE  # the key was revoked
    soon = RELEASE + timedelta(days=5)
    assert reopened.observe(soon, soon + timedelta(days=1), {"k2"}) is True
    assert TimeFloor(path, RELEASE).reference_time(EPOCH, {"k2"}) == soon


def test_floor_when_file_is_corrupt_starts_at_release_time(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text("{not json")
    assert TimeFloor(path, RELEASE).reference_time(EPOCH, KEYS) == RELEASE
    path.write_text('{"floor": "yesterday", "timestamp_keyids": []}')
    assert TimeFloor(path, RELEASE).reference_time(EPOCH, KEYS) == RELEASE
