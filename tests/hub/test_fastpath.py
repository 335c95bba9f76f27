"""The hub's fast path (hub/fastpath.py) keeps its answers true: cached tokens and desired
answers are dropped when another process (a replica, or the CLI on the same database) changes
them, within ``cache_check_s``; heartbeats written behind reach the database; on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hub.api._common import DB, hash_token
from hub.app import create_app
from hub.config import HubConfig
from hub.fastpath import FASTPATH
from hub.storage import HubDB, open_database
from hub.testing import API, HubTestSession

CHECK_S = 0.2


@pytest_asyncio.fixture
async def hub_on(
    hub_on_backend: Callable[..., Awaitable[HubTestSession]],
) -> HubTestSession:
    return await hub_on_backend(cache_check_s=CHECK_S, heartbeat_flush_s=0.3)


def _other_replica(hub: HubTestSession) -> HubDB:
    """The same database through connections of its own, as another hub process has."""
    cfg = hub.config
    return HubDB(open_database(cfg.database_url, cfg.data_dir, 1))


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "not within the timeout"
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_token_when_revoked_by_another_replica_is_refused_within_the_check_period(
    hub_on: HubTestSession,
) -> None:
    hub = hub_on
    device = await hub.enroll("cam-1")
    resp = await hub.client.post(
        f"{API}/admin/tokens", json={"name": "dash", "role": "viewer"}, headers=hub.admin
    )
    viewer = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    for _ in range(3):  # cached after the first
        assert (await hub.client.get(f"{API}/device/desired", headers=device)).status == 200
        assert (await hub.client.get(f"{API}/admin/devices", headers=viewer)).status == 200
    token = device["Authorization"].split()[1]
    assert hub.client.app[FASTPATH].token(hash_token(token)) is not None

    other = _other_replica(hub)
    try:
        await asyncio.to_thread(other.set_device_token, "cam-1", None)
        await asyncio.to_thread(other.revoke_api_token, "dash")
    finally:
        other.close()
    t0 = asyncio.get_running_loop().time()

    async def refused() -> bool:
        d = await hub.client.get(f"{API}/device/desired", headers=device)
        v = await hub.client.get(f"{API}/admin/devices", headers=viewer)
        return d.status == 401 and v.status == 401

    await _until(refused)
    assert asyncio.get_running_loop().time() - t0 < CHECK_S + 1.0


@pytest.mark.asyncio
async def test_unknown_token_when_asked_again_is_looked_up_again(hub_on: HubTestSession) -> None:
    hub = hub_on
    await hub.enroll("cam-1")
    other = _other_replica(hub)
    try:
        # A token that is unknown now and valid a moment later (given by another replica).
        bad = {"Authorization": "Bearer not-yet"}
        assert (await hub.client.get(f"{API}/device/desired", headers=bad)).status == 401
        await asyncio.to_thread(other.set_device_token, "cam-1", hash_token("not-yet"))
    finally:
        other.close()
    assert (await hub.client.get(f"{API}/device/desired", headers=bad)).status == 200


@pytest.mark.asyncio
async def test_desired_when_changed_here_or_by_another_replica_is_answered_anew(
    hub_on: HubTestSession,
) -> None:
    hub = hub_on
    device = await hub.enroll("cam-1", cohort="lab")
    db = hub.client.app[DB]
    await db.call(db.add_bundle, "digits", 2, {"files": {}})

    async def desired() -> Any:
        return await (await hub.client.get(f"{API}/device/desired", headers=device)).json()

    assert (await desired())["version"] is None
    assert (await desired())["version"] is None  # from the cache now
    # Here (an admin route): visible on the very next request.
    resp = await hub.client.post(
        f"{API}/admin/rollouts",
        json={"bundle": "digits", "version": 2, "cohort": "lab"},
        headers=hub.admin,
    )
    assert resp.status in (200, 201), await resp.text()
    assert (await desired())["version"] == 2
    # Another replica (a cohort row, then the device's own row).
    other = _other_replica(hub)
    try:
        await asyncio.to_thread(other.set_desired, "digits", 1, None, "lab")

        async def is_1() -> bool:
            return bool((await desired())["version"] == 1)

        await _until(is_1)
        await asyncio.to_thread(other.set_desired, "digits", 2, ["cam-1"], None)

        async def is_2() -> bool:
            return bool((await desired())["version"] == 2)

        await _until(is_2)
        await asyncio.to_thread(other.set_shadow, "digits", 1, {"min_frames": 5}, ["cam-1"], None)

        async def has_candidate() -> bool:
            return "candidate" in await desired()

        await _until(has_candidate)
    finally:
        other.close()


@pytest.mark.asyncio
async def test_heartbeats_when_written_behind_reach_the_database(hub_on: HubTestSession) -> None:
    hub = hub_on
    device = await hub.enroll("cam-1")
    status = {"device_id": "cam-1", "time": 1.0, "update_state": "idle"}
    resp = await hub.client.post(f"{API}/device/heartbeat", json=status, headers=device)
    assert resp.status == 200
    # An admin read on this replica sees it at once (flushed before the read).
    listed = await (await hub.client.get(f"{API}/admin/devices", headers=hub.admin)).json()
    row = next(d for d in listed if d["device_id"] == "cam-1")
    assert row["status"]["update_state"] == "idle"
    # Without any admin request, another replica sees the next one within heartbeat_flush_s.
    status["update_state"] = "downloading"
    await hub.client.post(f"{API}/device/heartbeat", json=status, headers=device)
    other = _other_replica(hub)
    try:

        async def arrived() -> bool:
            dev = await asyncio.to_thread(other.device, "cam-1")
            return dev.status is not None and dev.status.get("update_state") == "downloading"

        await _until(arrived)
    finally:
        other.close()


@pytest.mark.asyncio
async def test_heartbeats_when_the_hub_stops_are_written(
    aiohttp_client: Any, tmp_path: Path, keys_dir: Path
) -> None:
    config = HubConfig(
        data_dir=tmp_path / "data", keys_dir=keys_dir, port=0, heartbeat_flush_s=3600
    )
    client = await aiohttp_client(create_app(config))
    hub = HubTestSession(client, config, keys_dir)
    device = await hub.enroll("cam-1")
    status = {"device_id": "cam-1", "time": 1.0, "update_state": "trial"}
    assert (await client.post(f"{API}/device/heartbeat", json=status, headers=device)).ok
    assert client.app[FASTPATH].pending == 1
    await client.close()  # cleanup: the write-behind flushes
    db = HubDB(config.data_dir / "hub.sqlite3")
    try:
        dev = db.device("cam-1")
        assert dev.status is not None and dev.status["update_state"] == "trial"
    finally:
        db.close()
