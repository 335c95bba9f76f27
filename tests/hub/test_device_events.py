"""Update outcomes a device reports in its heartbeat land in its record on the hub, once."""

from __future__ import annotations

from typing import Any

import pytest

from hub.testing import API
from hub.testing import HubTestSession as Hub

pytestmark = pytest.mark.asyncio


def _event(i: str, cause: str = "trial_failed", **kw: Any) -> dict[str, Any]:
    return {
        "id": i,
        "time": 1000.0 + len(i),
        "kind": "rolled_back",
        "cause": cause,
        "bundle": "digits",
        "version": 2,
        "reason": "digits v2 trial failed: error rate 100% over 2 frames",
        **kw,
    }


async def test_events_show_in_device_record_when_reported_twice(hub: Hub) -> None:
    cam = await hub.enroll("cam-1")
    body = {"fps": 3.0, "events": [_event("e1"), _event("e22", cause="load_failed")]}
    for _ in range(2):  # the device resends when unsure the first heartbeat arrived
        resp = await hub.client.post(f"{API}/device/heartbeat", json=body, headers=cam)
        assert resp.status == 200
    resp = await hub.client.get(f"{API}/admin/devices", headers=hub.admin)
    (dev,) = await resp.json()
    assert [e["id"] for e in dev["events"]] == ["e22", "e1"]  # newest first, no duplicates
    assert dev["events"][0]["cause"] == "load_failed"
    assert "events" not in dev["status"]  # kept apart from the overwritten status


@pytest.mark.parametrize(
    "events",
    [
        "nope",
        [{"id": "x"}],
        [_event("e1", kind="exploded")],
        [_event("e1", extra=1)],
        [_event("bad id!")],
        [_event(f"e{i}") for i in range(101)],
    ],
    ids=["not-a-list", "missing-fields", "unknown-kind", "extra-key", "bad-id", "too-many"],
)
async def test_heartbeat_is_400_when_events_are_malformed(hub: Hub, events: Any) -> None:
    cam = await hub.enroll("cam-1")
    resp = await hub.client.post(f"{API}/device/heartbeat", json={"events": events}, headers=cam)
    assert resp.status == 400
    assert "\n" not in (await resp.json())["error"]
