"""Hub API, device side and auth: enrollment, token kinds, desired bundle, heartbeat, samples."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from hub.api._common import DB
from hub.app import hash_token
from hub.testing import API, sample_form, sample_meta
from hub.testing import HubTestSession as Hub

pytestmark = pytest.mark.asyncio


async def test_first_start_when_data_dir_is_new_creates_tokens_mode_0600(hub: Hub) -> None:
    for name in ("admin.token", "enroll.token"):
        path = hub.config.data_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(path.read_text().strip()) >= 32


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/devices"),
        ("GET", "/admin/samples"),
        ("POST", "/admin/rollouts"),
        ("GET", "/admin/tuf/targets"),
        ("GET", "/device/desired"),
        ("POST", "/device/heartbeat"),
        ("GET", "/tuf/metadata/1.root.json"),
        ("GET", "/nothing/here"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
async def test_routes_when_token_missing_or_unknown_are_401(
    hub: Hub, method: str, path: str, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    resp = await hub.client.request(method, f"{API}{path}", headers=headers)
    assert resp.status == 401
    assert set(await resp.json()) == {"error"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/admin/devices"), ("POST", "/admin/rollouts"), ("GET", "/admin/tuf/targets")],
)
async def test_admin_routes_when_called_with_device_token_are_403(
    hub: Hub, method: str, path: str
) -> None:
    device = await hub.enroll("cam-1")
    resp = await hub.client.request(method, f"{API}{path}", headers=device)
    assert resp.status == 403
    assert "device token" in (await resp.json())["error"]


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/device/desired"), ("POST", "/device/heartbeat")]
)
async def test_device_routes_when_called_with_admin_token_are_403(
    hub: Hub, method: str, path: str
) -> None:
    resp = await hub.client.request(method, f"{API}{path}", headers=hub.admin, json={})
    assert resp.status == 403


async def test_tuf_routes_when_called_by_device_or_admin_are_allowed(hub: Hub) -> None:
    device = await hub.enroll("cam-1")
    for headers in (device, hub.admin):
        resp = await hub.client.get(f"{API}/tuf/metadata/1.root.json", headers=headers)
        assert resp.status == 200
        assert (await resp.json())["signed"]["_type"] == "root"


async def test_enroll_when_secret_is_wrong_is_401(hub: Hub) -> None:
    resp = await hub.client.post(
        f"{API}/enroll", json={"device_id": "cam-1", "enroll_token": "guess"}
    )
    assert resp.status == 401


@pytest.mark.parametrize(
    "body",
    [
        {"device_id": "../etc", "enroll_token": "x"},
        {"device_id": "cam-1"},
        {"device_id": "cam-1", "enroll_token": "x", "extra": 1},
        "not json",
    ],
)
async def test_enroll_when_body_is_invalid_is_400(hub: Hub, body: Any) -> None:
    if isinstance(body, dict) and "enroll_token" in body:
        body["enroll_token"] = hub.enroll_token
    kw: dict[str, Any] = {"json": body} if isinstance(body, dict) else {"data": body}
    resp = await hub.client.post(f"{API}/enroll", **kw)
    assert resp.status == 400
    assert "\n" not in (await resp.json())["error"]


async def test_enroll_when_repeated_is_refused_and_stores_only_the_token_hash(hub: Hub) -> None:
    old = await hub.enroll("cam-1", cohort="lab")
    again = {"device_id": "cam-1", "enroll_token": hub.enroll_token, "cohort": "field"}
    resp = await hub.client.post(f"{API}/enroll", json=again)
    assert resp.status == 409  # the fleet secret never re-keys an enrolled id (issue 12)
    assert (await hub.client.get(f"{API}/device/desired", headers=old)).status == 200
    token = old["Authorization"].split()[1]
    if hub.config.database_url is None:  # SQLite: the very bytes on disk, WAL included
        db_bytes = (hub.config.data_dir / "hub.sqlite3").read_bytes()
        wal = hub.config.data_dir / "hub.sqlite3-wal"
        raw = db_bytes + (wal.read_bytes() if wal.exists() else b"")
    else:
        raw = repr(hub.client.app[DB]._db.execute("SELECT * FROM devices").fetchall()).encode()
    assert token.encode() not in raw
    assert hash_token(token).encode() in raw
    devices = await (await hub.client.get(f"{API}/admin/devices", headers=hub.admin)).json()
    assert devices[0]["cohort"] == "lab"  # a refused re-enrolment moves nothing


async def test_desired_when_rollout_targets_a_cohort_changes_only_that_cohort(
    hub: Hub, make_bundle: Any
) -> None:
    lab = await hub.enroll("cam-1", cohort="lab")
    field = await hub.enroll("cam-2", cohort="field")
    assert await (await hub.client.get(f"{API}/device/desired", headers=lab)).json() == {
        "bundle": None,
        "version": None,
    }
    await hub.publish(make_bundle("digits", 1))
    resp = await hub.client.post(
        f"{API}/admin/rollouts",
        json={"bundle": "digits", "version": 1, "cohort": "lab"},
        headers=hub.admin,
    )
    assert await resp.json() == {"devices": 1}
    assert await (await hub.client.get(f"{API}/device/desired", headers=lab)).json() == {
        "bundle": "digits",
        "version": 1,
    }
    got = await (await hub.client.get(f"{API}/device/desired", headers=field)).json()
    assert got["bundle"] is None

    resp = await hub.client.post(
        f"{API}/admin/rollouts", json={"bundle": "digits", "version": 1}, headers=hub.admin
    )
    assert await resp.json() == {"devices": 2}


async def test_rollout_when_bundle_is_not_published_is_404(hub: Hub) -> None:
    await hub.enroll("cam-1")
    resp = await hub.client.post(
        f"{API}/admin/rollouts", json={"bundle": "digits", "version": 9}, headers=hub.admin
    )
    assert resp.status == 404


async def test_rollout_when_a_listed_device_is_unknown_is_404_and_changes_nothing(
    hub: Hub, make_bundle: Any
) -> None:
    cam = await hub.enroll("cam-1")
    await hub.publish(make_bundle("digits", 1))
    resp = await hub.client.post(
        f"{API}/admin/rollouts",
        json={"bundle": "digits", "version": 1, "devices": ["cam-1", "ghost"]},
        headers=hub.admin,
    )
    assert resp.status == 404
    assert "ghost" in (await resp.json())["error"]
    got = await (await hub.client.get(f"{API}/device/desired", headers=cam)).json()
    assert got["bundle"] is None


async def test_heartbeat_when_under_cap_shows_in_device_list(hub: Hub) -> None:
    cam = await hub.enroll("cam-1")
    resp = await hub.client.post(
        f"{API}/device/heartbeat", json={"slot": "a", "fps": 9.5}, headers=cam
    )
    assert resp.status == 200
    devices = await (await hub.client.get(f"{API}/admin/devices", headers=hub.admin)).json()
    assert devices[0]["device_id"] == "cam-1"
    assert devices[0]["status"] == {"slot": "a", "fps": 9.5}
    assert devices[0]["last_seen"] > 0


async def test_heartbeat_when_over_64_kib_is_413(hub: Hub) -> None:
    cam = await hub.enroll("cam-1")
    big = b'{"x": "' + b"a" * (64 * 1024) + b'"}'
    resp = await hub.client.post(f"{API}/device/heartbeat", data=big, headers=cam)
    assert resp.status == 413
    assert "limit" in (await resp.json())["error"]


async def test_heartbeat_when_chunked_and_over_cap_is_413(hub: Hub) -> None:
    cam = await hub.enroll("cam-1")

    async def gen() -> Any:
        for _ in range(20):
            yield b"a" * 8192

    resp = await hub.client.post(f"{API}/device/heartbeat", data=gen(), headers=cam)
    assert resp.status == 413


async def test_sample_upload_when_same_id_is_sent_again_is_duplicate(hub: Hub) -> None:
    cam = await hub.enroll("cam-1")
    sid = "0000000000000001-deadbeef"
    meta = sample_meta(sid, "cam-1", 0.5)
    url = f"{API}/device/samples/{sid}"
    first = await hub.client.put(url, data=sample_form(meta), headers=cam)
    assert await first.json() == {"status": "stored"}
    changed = {**meta, "priority": 0.99}
    again = await hub.client.put(url, data=sample_form(changed, b"other"), headers=cam)
    assert await again.json() == {"status": "duplicate"}
    samples = await (await hub.client.get(f"{API}/admin/samples", headers=hub.admin)).json()
    assert [s["priority"] for s in samples] == [0.5]
    image = await hub.client.get(f"{API}/admin/samples/{sid}/image", headers=hub.admin)
    assert await image.read() == b"\xff\xd8jpeg\xff\xd9"


@pytest.mark.parametrize(
    ("meta_change", "message"),
    [
        ({"id": "0000000000000002-00000000"}, "URL"),
        ({"device_id": "cam-2"}, "not this device"),
        ({"priority": "high"}, "bad sample meta: priority"),
    ],
)
async def test_sample_upload_when_meta_disagrees_is_400(
    hub: Hub, meta_change: dict[str, Any], message: str
) -> None:
    cam = await hub.enroll("cam-1")
    sid = "0000000000000001-deadbeef"
    meta = {**sample_meta(sid, "cam-1", 0.5), **meta_change}
    resp = await hub.client.put(f"{API}/device/samples/{sid}", data=sample_form(meta), headers=cam)
    assert resp.status == 400
    assert message in (await resp.json())["error"]


async def test_sample_upload_when_image_is_over_4_mib_is_413(hub: Hub) -> None:
    cam = await hub.enroll("cam-1")
    sid = "0000000000000001-deadbeef"
    form = sample_form(sample_meta(sid, "cam-1", 0.5), b"x" * (4 * 1024 * 1024 + 1))
    resp = await hub.client.put(f"{API}/device/samples/{sid}", data=form, headers=cam)
    assert resp.status == 413


async def test_sample_upload_when_not_multipart_is_400(hub: Hub) -> None:
    cam = await hub.enroll("cam-1")
    resp = await hub.client.put(f"{API}/device/samples/abc", json={"a": 1}, headers=cam)
    assert resp.status == 400


async def test_samples_when_listed_are_ranked_by_priority_and_leave_queue_when_annotated(
    hub: Hub, tmp_path: Path
) -> None:
    cam = await hub.enroll("cam-1")
    for i, priority in enumerate([0.2, 0.9, 0.5]):
        sid = f"000000000000000{i}-0000000{i}"
        # distinct images: the queue shows identical images once
        form = sample_form(sample_meta(sid, "cam-1", priority), f"img-{i}".encode())
        await hub.client.put(f"{API}/device/samples/{sid}", data=form, headers=cam)
    other = sample_meta("0000000000000009-00000009", "cam-1", 1.0, bundle="other")
    await hub.client.put(
        f"{API}/device/samples/{other['id']}", data=sample_form(other), headers=cam
    )

    q = f"{API}/admin/samples?bundle=digits&state=pending"
    queue = await (await hub.client.get(q, headers=hub.admin)).json()
    assert [s["priority"] for s in queue] == [0.9, 0.5, 0.2]
    assert all(s["state"] == "pending" and s["annotation"] is None for s in queue)

    top = queue[0]["id"]
    body = {"boxes": [[1, 2, 30, 40, "7"]], "annotator": "ann"}
    resp = await hub.client.post(
        f"{API}/admin/samples/{top}/annotation", json=body, headers=hub.admin
    )
    assert resp.status == 200
    queue = await (await hub.client.get(q + "&limit=1", headers=hub.admin)).json()
    assert [s["priority"] for s in queue] == [0.5]
    done = await (
        await hub.client.get(f"{API}/admin/samples?state=annotated", headers=hub.admin)
    ).json()
    assert done[0]["id"] == top
    assert done[0]["annotation"]["boxes"] == [[1, 2, 30, 40, "7"]]


@pytest.mark.parametrize(
    "body",
    [
        {"boxes": [[1, 2, 3, "7"]], "annotator": "a"},
        {"boxes": [], "annotator": "a", "x": 1},
        {"boxes": [[1, 2, 3, 4, "7"]]},
    ],
)
async def test_annotation_when_body_is_invalid_is_400(hub: Hub, body: dict[str, Any]) -> None:
    resp = await hub.client.post(
        f"{API}/admin/samples/whatever/annotation", json=body, headers=hub.admin
    )
    assert resp.status == 400


async def test_annotation_when_sample_is_unknown_is_404(hub: Hub) -> None:
    body = {"boxes": [], "annotator": "a"}
    resp = await hub.client.post(
        f"{API}/admin/samples/nope/annotation", json=body, headers=hub.admin
    )
    assert resp.status == 404


async def test_desired_when_device_joins_cohort_after_its_rollout_follows_the_cohort(
    hub: Hub, make_bundle: Any
) -> None:
    await hub.publish(make_bundle("digits", 1))
    resp = await hub.client.post(
        f"{API}/admin/rollouts",
        json={"bundle": "digits", "version": 1, "cohort": "lab"},
        headers=hub.admin,
    )
    assert await resp.json() == {"devices": 0}
    late = await hub.enroll("cam-9", cohort="lab")
    other = await hub.enroll("cam-10", cohort="field")
    got = await (await hub.client.get(f"{API}/device/desired", headers=late)).json()
    assert got == {"bundle": "digits", "version": 1}
    got = await (await hub.client.get(f"{API}/device/desired", headers=other)).json()
    assert got == {"bundle": None, "version": None}
