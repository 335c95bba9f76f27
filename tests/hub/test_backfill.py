"""The signature backfill (hub/backfill.py) on each backend: a database built by the
migrations before 0013 holds samples stored the old way (no signature, no group); the hub
starts on it (0013 and 0014 migrate it), and its start-up backfill puts the copies of one
scene in one group, shares a seed's annotation with its pending copy, marks an image Pillow
cannot decode, and does nothing more when run again."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from scenes import copy_of, jpeg, scene

import hub.storage._db as dbmod
from hub.backfill import backfill_batch
from hub.storage import BlobStore, HubDB, S3BlobStore, open_database
from hub.testing import API, HubTestSession

OLD = {  # sample id -> (device, priority, image, annotated)
    "s1": ("cam-1", 0.9, jpeg(scene(2)), False),
    "s2": ("cam-2", 0.8, copy_of(scene(2), "q50"), False),
    "s3": ("cam-3", 0.7, copy_of(scene(2), "half"), False),
    "s4": ("cam-1", 0.6, jpeg(scene(9)), False),
    "seed": ("import", 0.0, jpeg(scene(13)), True),
    "s5": ("cam-2", 0.95, copy_of(scene(13), "bright"), False),
    "bad": ("cam-3", 0.5, b"\xff\xd8 not a jpeg \xff\xd9", False),
}


def _old_database(backend: dict[str, Any], data: Path, tmp: Path, monkeypatch: Any) -> None:
    """Samples as a hub before migration 0013 stored them: migrations 0001-0012 only."""
    old = tmp / "old-migrations"
    old.mkdir()
    for path in sorted(dbmod._MIGRATIONS_DIR.glob("*.sql")):
        if path.name < "0013":
            shutil.copy(path, old / path.name)
    with monkeypatch.context() as m:
        m.setattr(dbmod, "_MIGRATIONS_DIR", old)
        database = open_database(backend.get("database_url"), data)
        conn = database.conn()
        database.migrate()
    if backend.get("s3") is not None:
        blobs: Any = S3BlobStore(backend["s3"], tmp / "s3-tmp")
    else:
        blobs = BlobStore(data / "blobs")
    for i, (sid, (device, priority, image, annotated)) in enumerate(OLD.items()):
        sha, _ = blobs.put(image)
        annotation = {"boxes": [[1, 2, 30, 40, "scene"]], "annotator": "a"} if annotated else None
        conn.execute(
            "INSERT INTO samples (id, bundle, device_id, priority, meta_json, image_sha256,"
            " state, annotation_json, created) VALUES (?, 'b', ?, ?, ?, ?, ?, ?, ?)",
            (sid, device, priority, json.dumps({"id": sid}), sha,
             "annotated" if annotated else "pending",
             json.dumps(annotation) if annotation else None, 1000.0 + i),
        )  # fmt: skip
    database.close()


@pytest.mark.asyncio
async def test_backfill_when_samples_predate_signatures_groups_them_at_start(
    hub_backend: dict[str, Any],
    hub_on_backend: Callable[..., Awaitable[HubTestSession]],
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    data = tmp_path / "data"  # the folder hub_on_backend's config uses
    data.mkdir()
    _old_database(hub_backend, data, tmp_path, monkeypatch)
    hub = await hub_on_backend(backfill_batch=2)  # started: the backfill runs, 2 at a time
    db = HubDB(open_database(hub_backend.get("database_url"), data))
    deadline = time.monotonic() + 30
    while db.unsigned_samples(time.time(), 10):
        assert time.monotonic() < deadline, "the backfill did not finish"
        await asyncio.sleep(0.1)
    resp = await hub.client.get(f"{API}/admin/samples?state=pending&bundle=b", headers=hub.admin)
    queue = {e["id"]: e["queue"] for e in await resp.json()}
    assert sorted(queue) == ["bad", "s1", "s4"]  # s2, s3 behind s1; s5 took the seed's label
    assert queue["s1"]["copies"] == 3 and queue["s1"]["group"] == "s1"
    assert queue["bad"]["group"] is None  # no signature: grouped by its bytes
    s5 = db.sample("s5")
    assert s5.state == "annotated" and s5.annotation is not None
    assert s5.annotation["inherited_from"] == "seed"
    states = {
        r["id"]: r["signature_state"]
        for r in db._db.execute("SELECT id, signature_state FROM samples")
    }
    assert states == {**{sid: "done" for sid in OLD}, "bad": "none"}
    # Again, and on a sample whose mark was lost: nothing changes.
    db._db.execute("UPDATE samples SET signature_state = NULL WHERE id = 's2'")
    again = backfill_batch(db, _blobs(hub_backend, data, tmp_path), time.time(), 10)
    assert (again.tried, again.grouped, again.joined) == (1, 1, 0)  # already in its group
    assert db.group_of("s2") == ("s1", ["s1", "s2", "s3"])
    assert backfill_batch(db, _blobs(hub_backend, data, tmp_path), time.time(), 10).tried == 0
    db.close()


def _blobs(backend: dict[str, Any], data: Path, tmp: Path) -> Any:
    if backend.get("s3") is not None:
        return S3BlobStore(backend["s3"], tmp / "s3-tmp2")
    return BlobStore(data / "blobs")
