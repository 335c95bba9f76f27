"""Hub API for shadow mode: candidate assignment with its rule, telemetry in, views out."""

from __future__ import annotations

from typing import Any

import pytest

from hub.testing import API
from hub.testing import HubTestSession as Hub
from runtime.pipeline.prediction import Item, Prediction, StageResult
from runtime.shadow.compare import ShadowStats, compare

pytestmark = pytest.mark.asyncio

RULE = {"min_frames": 50, "min_agreement": 0.9, "max_accuracy_drop": 0.01}


async def _desired(hub: Hub, dev: dict[str, str]) -> dict[str, Any]:
    resp = await hub.client.get(f"{API}/device/desired", headers=dev)
    assert resp.status == 200
    return dict(await resp.json())


async def _assign(hub: Hub, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    resp = await hub.client.post(f"{API}/admin/shadow/rollouts", json=body, headers=hub.admin)
    assert resp.status == status, await resp.text()
    return dict(await resp.json())


def _stats(prod: str, cand: str, n: int) -> dict[str, Any]:
    s = ShadowStats()
    for _ in range(n):
        p = Prediction("f", {"c": StageResult("c", "classification", [Item(0, prod, 0.9)], 1.0)})
        c = Prediction("f", {"c": StageResult("c", "classification", [Item(0, cand, 0.8)], 2.0)})
        s.add(compare(p, c))
    return s.model_dump()


def _report(status: str, version: int, stats: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {
        "status": status,
        "candidate": {"bundle": "digits", "version": version, "slot": "b"},
        "production": {"bundle": "digits", "version": 1, "slot": "a"},
        "counters": {"offered": 10, "shed": 2},
        "stats": stats,
        **kw,
    }


async def test_shadow_rollout_when_cohort_assigned_only_its_devices_get_the_candidate(
    hub: Hub, make_bundle: Any
) -> None:
    await hub.publish(make_bundle("digits", 1))
    await hub.publish(make_bundle("digits", 2))
    east = await hub.enroll("cam-e", cohort="east")
    west = await hub.enroll("cam-w", cohort="west")
    got = await _assign(hub, {"bundle": "digits", "version": 2, "cohort": "east", "rule": RULE})
    assert got == {"devices": 1}
    d = await _desired(hub, east)
    assert d["candidate"]["bundle"] == "digits" and d["candidate"]["version"] == 2
    assert d["candidate"]["rule"]["min_frames"] == 50
    assert d["candidate"]["rule"]["min_agreement"] == 0.9
    assert "candidate" not in await _desired(hub, west)
    # The fleet-wide assignment reaches the rest; a device's own assignment wins over both.
    assert (await _assign(hub, {"bundle": "digits", "version": 1}))["devices"] == 2
    assert (await _desired(hub, west))["candidate"]["version"] == 1
    await _assign(hub, {"bundle": "digits", "version": 1, "devices": ["cam-e"]})
    assert (await _desired(hub, east))["candidate"]["version"] == 1
    # Withdrawn: back to the cohort's.
    resp = await hub.client.post(
        f"{API}/admin/shadow/cancel", json={"devices": ["cam-e"]}, headers=hub.admin
    )
    assert (await resp.json()) == {"removed": 1}
    assert (await _desired(hub, east))["candidate"]["version"] == 2


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"bundle": "digits", "version": 9}, 404, "not published"),
        ({"bundle": "digits", "version": 1, "rule": {"min_frame": 5}}, 400, "rule.min_frame"),
        ({"bundle": "digits", "version": 1, "rule": {"min_agreement": 2}}, 400, "min_agreement"),
        ({"bundle": "digits", "version": 1, "devices": ["nobody"]}, 404, "unknown devices"),
    ],
)
async def test_shadow_rollout_when_body_is_bad_is_refused_with_one_line(
    hub: Hub, make_bundle: Any, body: dict[str, Any], status: int, words: str
) -> None:
    await hub.publish(make_bundle("digits", 1))
    got = await _assign(hub, body, status)
    assert words in got["error"]


async def test_shadow_telemetry_when_devices_report_shows_per_device_and_per_cohort(
    hub: Hub, make_bundle: Any
) -> None:
    a = await hub.enroll("cam-1", cohort="east")
    b = await hub.enroll("cam-2", cohort="east")
    c = await hub.enroll("cam-3", cohort="west")
    for dev, stats in (
        (a, _stats("2", "2", 8)),
        (b, _stats("2", "7", 2)),
        (c, _stats("3", "3", 5)),
    ):
        resp = await hub.client.post(
            f"{API}/device/shadow", json=_report("running", 2, stats), headers=dev
        )
        assert resp.status == 200, await resp.text()
    resp = await hub.client.get(f"{API}/admin/shadow", headers=hub.admin)
    view = await resp.json()
    assert [d["device_id"] for d in view["devices"]] == ["cam-1", "cam-2", "cam-3"]
    east = next(g for g in view["cohorts"] if g["cohort"] == "east")
    assert east["devices"] == ["cam-1", "cam-2"]
    assert east["stats"]["compared"] == 10 and east["agreement"] == 0.8
    assert east["stats"]["flip_matrix"] == {"2": {"2": 8, "7": 2}}
    assert east["counters"] == {"offered": 20, "shed": 4} and east["shed_fraction"] == 0.2
    assert east["status"] == {"running": 2}
    lat = east["stats"]["latency_ms"]["candidate"]["c"]
    assert lat["n"] == 10
    resp = await hub.client.get(f"{API}/admin/shadow?cohort=west", headers=hub.admin)
    west = await resp.json()
    assert [d["device_id"] for d in west["devices"]] == ["cam-3"]
    assert west["cohorts"][0]["agreement"] == 1.0


@pytest.mark.parametrize(
    "extra",
    [{"frame": "aGVsbG8="}, {"frames": ["f1"]}, {"stats": {"images": []}}],
)
async def test_shadow_telemetry_when_it_carries_frames_or_unknown_keys_is_400(
    hub: Hub, extra: dict[str, Any]
) -> None:
    dev = await hub.enroll("cam-1")
    body = {**_report("running", 2, _stats("2", "2", 1)), **extra}
    resp = await hub.client.post(f"{API}/device/shadow", json=body, headers=dev)
    assert resp.status == 400
    assert set(await resp.json()) == {"error"}


async def test_shadow_telemetry_when_promoted_makes_the_candidate_the_device_desired(
    hub: Hub, make_bundle: Any
) -> None:
    await hub.publish(make_bundle("digits", 1))
    await hub.publish(make_bundle("digits", 2))
    dev = await hub.enroll("cam-1", cohort="east")
    other = await hub.enroll("cam-2", cohort="east")
    resp = await hub.client.post(
        f"{API}/admin/rollouts", json={"bundle": "digits", "version": 1}, headers=hub.admin
    )
    assert resp.status == 200
    await _assign(hub, {"bundle": "digits", "version": 2, "cohort": "east"})
    resp = await hub.client.post(
        f"{API}/device/shadow", json=_report("promoted", 2, _stats("2", "2", 3)), headers=dev
    )
    assert resp.status == 200
    assert (await _desired(hub, dev))["version"] == 2
    assert (await _desired(hub, other))["version"] == 1


async def test_shadow_telemetry_when_promoting_an_unassigned_candidate_changes_nothing(
    hub: Hub, make_bundle: Any
) -> None:
    """A device cannot pick its own rollout by claiming a promotion (issue 12)."""
    for v in (1, 2, 3):
        await hub.publish(make_bundle("digits", v))
    dev = await hub.enroll("cam-1", cohort="east")
    resp = await hub.client.post(
        f"{API}/admin/rollouts", json={"bundle": "digits", "version": 1}, headers=hub.admin
    )
    assert resp.status == 200
    for assigned in (None, 2):  # nothing assigned, then v2 assigned and v3 claimed
        if assigned is not None:
            await _assign(hub, {"bundle": "digits", "version": assigned, "cohort": "east"})
        resp = await hub.client.post(
            f"{API}/device/shadow", json=_report("promoted", 3, _stats("2", "2", 3)), headers=dev
        )
        assert resp.status == 200
        assert (await _desired(hub, dev))["version"] == 1


@pytest.mark.parametrize(
    ("method", "path", "who"),
    [
        ("GET", "/admin/shadow", "device"),
        ("POST", "/admin/shadow/rollouts", "device"),
        ("POST", "/device/shadow", "admin"),
    ],
)
async def test_shadow_routes_when_called_with_the_wrong_token_kind_are_403(
    hub: Hub, method: str, path: str, who: str
) -> None:
    dev = await hub.enroll("cam-1")
    headers = dev if who == "device" else hub.admin
    resp = await hub.client.request(method, f"{API}{path}", json={}, headers=headers)
    assert resp.status == 403
