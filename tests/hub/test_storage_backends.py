"""The storage seam on each backend: migrations, portable SQL, calls off the loop, S3 blobs."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest

from hub.errors import BadRequest, NotFound
from hub.storage import HubDB, S3BlobStore, open_database
from hub.storage._db import _MIGRATIONS_DIR, pg_ddl


def _db(fields: dict[str, Any], tmp_path: Path) -> HubDB:
    return HubDB(open_database(fields.get("database_url"), tmp_path))


def test_migrations_when_opened_twice_apply_once(
    hub_backend: dict[str, Any], tmp_path: Path
) -> None:
    names = sorted(p.stem for p in _MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    assert names and names[0] == "0001_initial"
    db = _db(hub_backend, tmp_path)
    applied = [
        r["name"] for r in db._db.execute("SELECT name FROM schema_migrations ORDER BY name")
    ]
    assert applied == names
    db.enroll_device("cam-1", "lab", "h1")
    db.close()
    again = _db(hub_backend, tmp_path)
    assert again.database.migrate() == []  # nothing left to apply
    assert [d.id for d in again.devices()] == ["cam-1"]  # and nothing was lost
    again.close()


def test_migrations_when_replicas_start_together_apply_once(
    hub_backend: dict[str, Any], tmp_path: Path
) -> None:
    """Several processes' worth of databases racing on an empty schema: one applies, the others
    see it applied (and none fails)."""
    dbs = [open_database(hub_backend.get("database_url"), tmp_path) for _ in range(4)]
    results: list[Any] = [None] * 4

    def run(i: int) -> None:
        try:
            results[i] = dbs[i].migrate()
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(len(r) for r in results)[-1] >= 1
    assert sum(len(r) for r in results) == len(list(_MIGRATIONS_DIR.glob("[0-9]*_*.sql")))
    for d in dbs:
        d.close()


def test_portable_sql_when_run_on_each_backend(hub_backend: dict[str, Any], tmp_path: Path) -> None:
    db = _db(hub_backend, tmp_path)
    db.enroll_device("a", "lab", "ha")
    db.enroll_device("b", "field", "hb")
    assert db.device_by_token_hash("hb") == ("b", "hb")
    assert db.set_desired("digits", 3, None, "lab") == 1
    assert db.cohort_desired("lab") == ("digits", 3)
    ev = {"id": "e1", "time": 1700000000.25, "kind": "update_failed"}
    assert db.add_device_events("a", [ev, ev]) == 1  # a resent event is ignored
    assert db.device_events("a")[0]["time"] == 1700000000.25  # a double, not a float4
    assert (db.add_job({"x": 1}), db.add_job({})) == (1, 2)
    meta = {"id": "s1"}
    sha = "ab" * 32
    assert db.add_sample("s1", "digits", "a", 0.5, meta, sha) is True
    assert db.add_sample("s1", "digits", "a", 0.5, meta, sha) is False
    db.add_sample("s2", "digits", "b", 0.9, {"id": "s2"}, "cd" * 32)
    db.set_feedback("s1", "a", {"kind": "correct", "label": "7"}, "1")
    queue = db.annotation_queue("digits", None)
    assert [(e.sample.id, e.tier) for e in queue] == [("s1", "corrected"), ("s2", "unreviewed")]
    review = {"id": "s3", "needs_review": True, "annotation_before_review": {"boxes": []}}
    db.add_sample("s3", "digits", "b", 0.1, review, "ef" * 32)
    queue = db.annotation_queue("digits", 2)
    assert [(e.sample.id, e.tier) for e in queue] == [("s3", "needs_review"), ("s1", "corrected")]
    with pytest.raises(NotFound):
        db.sample("nope")
    db.close()


def test_calls_when_concurrent_run_off_the_event_loop(
    hub_backend: dict[str, Any], tmp_path: Path
) -> None:
    db = _db(hub_backend, tmp_path)
    loop_thread: list[int] = []

    def where() -> int:
        return threading.get_ident()

    async def main() -> list[bool]:
        loop_thread.append(threading.get_ident())
        await asyncio.gather(
            *(db.call(db.enroll_device, f"d{i}", None, f"h{i}") for i in range(40))
        )
        threads = await asyncio.gather(*(db.call(where) for _ in range(8)))
        assert loop_thread[0] not in threads
        return await asyncio.gather(
            *(db.call(db.add_sample, "same", "b", "d0", 1.0, {}, "ef" * 32) for _ in range(10))
        )

    stored = asyncio.run(main())
    assert stored.count(True) == 1  # one insert wins; the others see the row
    assert len(db.devices()) == 40
    db.close()


def test_pg_ddl_translates_sqlite_types() -> None:
    ddl = "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL, n INTEGER);"
    assert pg_ddl(ddl) == (
        "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION, n INTEGER);"
    )


def test_open_database_when_url_is_unknown_says_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected sqlite:///PATH or postgresql://"):
        open_database("mysql://x", tmp_path)


def test_s3_blob_store_when_used_like_the_folder(s3_server: Any, tmp_path: Path) -> None:
    from hub.storage import S3Config

    cfg = S3Config(
        bucket=s3_server.create_bucket(),
        endpoint_url=s3_server.url,
        region="us-east-1",
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
    )
    store = S3BlobStore(cfg, tmp_path / "tmp")
    store.check()
    data = bytes(range(256)) * 40
    sha = hashlib.sha256(data).hexdigest()
    assert store.put(data) == (sha, True)
    assert store.put(data) == (sha, False)
    assert store.size(sha) == len(data) and store.has(sha)
    assert store.read(sha) == data
    assert store.read_range(sha, 10, 20) == data[10:20]
    with pytest.raises(BadRequest):
        store.put(b"other", expected_sha256=sha)
    with pytest.raises(NotFound):
        store.read("00" * 32)
    assert store.size("00" * 32) is None
    assert list((tmp_path / "tmp").iterdir()) == []  # spooled files are gone
    bad = S3BlobStore(cfg.model_copy(update={"bucket": "no-such-bucket"}), tmp_path / "tmp")
    with pytest.raises(RuntimeError, match="not reachable"):
        bad.check()
