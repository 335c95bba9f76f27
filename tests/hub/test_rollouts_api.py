"""Staged rollouts through the real app: devices report by heartbeat, the ticker steps them.

Runs on both storage backends (``hub_backend``). Real devices walk rollouts in
tests/integration/test_fleet_rollouts.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from hub.api._common import DB
from hub.fastpath import FASTPATH
from hub.rollouts.ticker import tick_all
from hub.testing import API, HubTestSession

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def hub(
    hub_on_backend: Callable[..., Awaitable[HubTestSession]],
) -> HubTestSession:
    return await hub_on_backend(rollout_tick_s=3600)  # the test steps rollouts itself


async def _fleet(hub: HubTestSession, n: int) -> dict[str, dict[str, str]]:
    return {f"d{i:02d}": await hub.enroll(f"d{i:02d}", cohort=f"c{i % 2}") for i in range(n)}


async def _report(
    hub: HubTestSession, headers: dict[str, str], version: int, fail: bool = False
) -> None:
    status: dict[str, Any] = {
        "active": {"bundle": "digits", "version": version, "status": "committed"}
    }
    if fail:
        status = {
            "active": {"bundle": "digits", "version": 1, "status": "committed"},
            "events": [
                {
                    "id": f"e{version}",
                    "time": 1.0,
                    "kind": "rolled_back",
                    "cause": "trial_failed",
                    "bundle": "digits",
                    "version": version,
                }
            ],
        }
    resp = await hub.client.post(f"{API}/device/heartbeat", json=status, headers=headers)
    assert resp.status == 200, await resp.text()


async def _desired(hub: HubTestSession, headers: dict[str, str]) -> int | None:
    resp = await hub.client.get(f"{API}/device/desired", headers=headers)
    return (await resp.json())["version"]


async def _publish(hub: HubTestSession, make_bundle: Any, *versions: int) -> None:
    for v in versions:
        await hub.publish(make_bundle("digits", v))


async def _create(hub: HubTestSession, **spec: Any) -> dict[str, Any]:
    body = {"bundle": "digits", "version": 2, **spec}
    resp = await hub.client.post(f"{API}/admin/rollouts/staged", json=body, headers=hub.admin)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def _status(hub: HubTestSession, rollout_id: int) -> dict[str, Any]:
    resp = await hub.client.get(f"{API}/admin/rollouts/{rollout_id}", headers=hub.admin)
    return dict(await resp.json())


async def test_rollout_when_canary_fails_halts_and_orders_no_one_else(
    hub: HubTestSession, make_bundle: Any
) -> None:
    await _publish(hub, make_bundle, 1, 2)
    devices = await _fleet(hub, 10)
    r = await _create(
        hub, waves=[{"count": 4}, {"percent": 100}], soak_s=0, error_threshold=0.2, min_executed=4
    )
    assert r["waves"][0]["ordered"] == 4 and r["status"] == "running"
    canary = [d for d, h in devices.items() if await _desired(hub, h) == 2]
    assert len(canary) == 4
    assert {int(d[1:]) % 2 for d in canary} == {0, 1}  # spread over both cohorts
    for i, d in enumerate(canary):
        await _report(hub, devices[d], 2, fail=i < 2)
    await tick_all(hub.client.app[DB], fast=hub.client.app[FASTPATH])
    st = await _status(hub, r["id"])
    assert st["status"] == "halted" and "2 of 4" in st["reason"]
    assert st["waves"][0] == {
        "wave": 0, "target": 4, "ordered": 4, "succeeded": 2, "failed": 2, "pending": 0
    }  # fmt: skip
    others = [await _desired(hub, h) for d, h in devices.items() if d not in canary]
    assert set(others) == {None}


async def test_rollout_when_devices_succeed_walks_every_wave_and_pause_resume(
    hub: HubTestSession, make_bundle: Any
) -> None:
    await _publish(hub, make_bundle, 1, 2)
    devices = await _fleet(hub, 8)
    r = await _create(hub, waves=[{"count": 2}, {"percent": 50}, {"percent": 100}], soak_s=0)
    rid = r["id"]
    resp = await hub.client.post(f"{API}/admin/rollouts/{rid}/pause", headers=hub.admin)
    assert (await resp.json())["status"] == "paused"
    again = await hub.client.post(f"{API}/admin/rollouts/{rid}/pause", headers=hub.admin)
    assert again.status == 409
    for _ in range(5):
        for h in devices.values():
            if await _desired(hub, h) == 2:
                await _report(hub, h, 2)
        await tick_all(hub.client.app[DB], fast=hub.client.app[FASTPATH])
    assert (await _status(hub, rid))["waves"][1]["ordered"] == 0  # paused: nothing new
    resp = await hub.client.post(f"{API}/admin/rollouts/{rid}/resume", headers=hub.admin)
    assert (await resp.json())["waves"][1]["ordered"] == 2
    for _ in range(5):
        for h in devices.values():
            if await _desired(hub, h) == 2:
                await _report(hub, h, 2)
        await tick_all(hub.client.app[DB], fast=hub.client.app[FASTPATH])
    st = await _status(hub, rid)
    assert st["status"] == "done"
    assert [w["ordered"] for w in st["waves"]] == [2, 2, 4]
    late = await hub.enroll("late", cohort="c0")
    assert await _desired(hub, late) == 2  # a done rollout is what the fleet wants


async def test_rollback_when_release_repoints_to_old_content_is_accepted(
    hub: HubTestSession, make_bundle: Any
) -> None:
    v1 = {"model.onnx": b"first model " * 50, "pipeline.yaml": b"stages: []\n"}
    await hub.publish(make_bundle("digits", 1, **v1))
    await hub.publish(make_bundle("digits", 2, **{**v1, "model.onnx": b"second " * 50}))
    await hub.publish(make_bundle("digits", 3, **v1))  # v1's content under a newer version
    devices = await _fleet(hub, 3)
    first = await _create(hub, waves=[{"percent": 100}], soak_s=0)
    bad = await hub.client.post(
        f"{API}/admin/rollouts/staged",
        json={"bundle": "digits", "version": 2, "kind": "rollback", "rollback_of": 1,
              "waves": [{"percent": 100}]},
        headers=hub.admin,
    )  # fmt: skip
    assert bad.status == 400 and "does not carry the files" in (await bad.json())["error"]
    rb = await _create(
        hub, version=3, kind="rollback", rollback_of=1, waves=[{"percent": 100}], soak_s=0
    )
    assert rb["kind"] == "rollback" and rb["waves"][0]["ordered"] == 3
    assert (await _status(hub, first["id"]))["status"] == "aborted"  # superseded
    assert {await _desired(hub, h) for h in devices.values()} == {3}


async def test_abort_when_devices_pending_gives_back_their_previous_version(
    hub: HubTestSession, make_bundle: Any
) -> None:
    await _publish(hub, make_bundle, 1, 2)
    devices = await _fleet(hub, 4)
    resp = await hub.client.post(
        f"{API}/admin/rollouts", json={"bundle": "digits", "version": 1}, headers=hub.admin
    )
    assert resp.status == 200  # the old "set desired" route still works
    r = await _create(hub, waves=[{"count": 2}, {"percent": 100}])
    ordered = [d for d, h in devices.items() if await _desired(hub, h) == 2]
    await _report(hub, devices[ordered[0]], 2)
    resp = await hub.client.post(f"{API}/admin/rollouts/{r['id']}/abort", headers=hub.admin)
    assert (await resp.json())["status"] == "aborted"
    assert await _desired(hub, devices[ordered[0]]) == 2  # already runs it: left alone
    assert await _desired(hub, devices[ordered[1]]) == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"bundle": "digits", "version": 9}, 404),
        ({"bundle": "digits", "version": 2, "waves": [{"percent": 50}]}, 400),
        ({"bundle": "digits", "version": 2, "surprise": True}, 400),
    ],
)
async def test_create_when_bad_is_4xx(
    hub: HubTestSession, make_bundle: Any, body: dict[str, Any], status: int
) -> None:
    await _publish(hub, make_bundle, 1, 2)
    resp = await hub.client.post(f"{API}/admin/rollouts/staged", json=body, headers=hub.admin)
    assert resp.status == status
    assert (await hub.client.get(f"{API}/admin/rollouts/77", headers=hub.admin)).status == 404
    assert (await hub.client.get(f"{API}/admin/rollouts/x", headers=hub.admin)).status == 404
