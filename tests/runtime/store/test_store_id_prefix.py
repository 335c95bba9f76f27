"""An operator types any unique prefix of a sample id (``feedback confirm 0190ab3f``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import ConfigError
from runtime.operator import resolve_sample_id
from runtime.store.lmdb_store import SampleStore
from tests.runtime.store.conftest import build_record


def test_sample_id_prefix_resolves_when_unique_and_refuses_when_ambiguous(tmp_path: Path) -> None:
    store = SampleStore(tmp_path / "s", max_bytes=4 << 20)
    try:
        a = build_record(0.5, id="0190aa11-first")
        b = build_record(0.6, id="0190aa22-second")
        c = build_record(0.7, id="0190bb33-third")
        store.put_many([a, b, c])
        assert store.ids_with_prefix("0190aa", limit=5) == [a.id, b.id]
        assert resolve_sample_id(store, c.id) == c.id
        assert resolve_sample_id(store, "0190b") == c.id
        assert resolve_sample_id(store, "0190aa2") == b.id
        with pytest.raises(ConfigError, match=r"ambiguous.*0190aa11-first, 0190aa22-second"):
            resolve_sample_id(store, "0190aa")
        assert resolve_sample_id(store, "ffff") == "ffff"  # unknown: the caller's error path
    finally:
        store.close()
