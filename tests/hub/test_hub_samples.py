"""Hub sample side: resumable uploads, feedback after upload, the cross-device annotation
queue (dedup by image, corrected first, per-device rank), and feedback metrics per device."""

from __future__ import annotations

import hashlib
import socket
import time
from typing import Any

import pytest

from hub.api._common import DB
from hub.testing import API, HubTestSession, LiveHub, sample_form, sample_meta
from runtime.hubclient import HubClient
from runtime.uploader import PartAnswer, encode_payload

Hub = HubTestSession


def sid(i: int) -> str:
    return f"{i:016x}-0000000{i % 10}"


def meta(i: int, device: str, priority: float, label: str = "1") -> dict[str, Any]:
    m = sample_meta(sid(i), device, priority)
    m["prediction"] = {"stages": {"clf": {"kind": "c", "items": [{"label": label}]}}}
    return m


async def put(hub: Hub, auth: dict[str, str], m: dict[str, Any], image: bytes) -> str:
    resp = await hub.client.put(
        f"{API}/device/samples/{m['id']}", data=sample_form(m, image), headers=auth
    )
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["status"])


async def patch(
    hub: Hub, auth: dict[str, str], sample_id: str, payload: bytes, offset: int, end: int
) -> Any:
    headers = {
        **auth,
        "Upload-Offset": str(offset),
        "Upload-Length": str(len(payload)),
        "Upload-Sha256": hashlib.sha256(payload).hexdigest(),
    }
    return await hub.client.patch(
        f"{API}/device/samples/{sample_id}/upload", data=payload[offset:end], headers=headers
    )


async def offset_of(hub: Hub, auth: dict[str, str], sample_id: str, payload: bytes) -> Any:
    sha = hashlib.sha256(payload).hexdigest()
    resp = await hub.client.get(
        f"{API}/device/samples/{sample_id}/upload?sha256={sha}", headers=auth
    )
    assert resp.status == 200
    return await resp.json()


async def queue(hub: Hub, **query: str) -> list[dict[str, Any]]:
    q = "&".join(f"{k}={v}" for k, v in {"state": "pending", **query}.items())
    resp = await hub.client.get(f"{API}/admin/samples?{q}", headers=hub.admin)
    assert resp.status == 200
    return list(await resp.json())


@pytest.mark.asyncio
async def test_resumable_upload_when_sent_in_parts_with_a_rewind_stores_once(hub: Hub) -> None:
    cam = await hub.enroll("cam-1")
    m = meta(1, "cam-1", 0.5)
    image = bytes(range(256)) * 400
    payload = encode_payload(m, image)
    assert await offset_of(hub, cam, m["id"], payload) == {"status": "partial", "offset": 0}
    r = await patch(hub, cam, m["id"], payload, 0, 40_000)
    assert await r.json() == {"status": "partial", "offset": 40_000}
    assert (await offset_of(hub, cam, m["id"], payload))["offset"] == 40_000
    r = await patch(hub, cam, m["id"], payload, 50_000, 60_000)  # past what the hub holds
    assert r.status == 409
    r = await patch(hub, cam, m["id"], payload, 30_000, 60_000)  # a rewind is fine
    assert await r.json() == {"status": "partial", "offset": 60_000}
    r = await patch(hub, cam, m["id"], payload, 60_000, len(payload))
    assert await r.json() == {"status": "stored", "offset": len(payload)}
    assert await offset_of(hub, cam, m["id"], payload) == {"status": "stored", "offset": 0}
    r = await patch(hub, cam, m["id"], payload, 0, len(payload))
    assert (await r.json())["status"] == "duplicate"
    img = await hub.client.get(f"{API}/admin/samples/{m['id']}/image", headers=hub.admin)
    assert await img.read() == image
    assert not list((hub.config.data_dir / "uploads").glob("*/*.part"))


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"Upload-Sha256": "0" * 64}, 400, "does not hash"),
        ({"Upload-Sha256": "xyz"}, 400, "sha256"),
        ({"Upload-Offset": "-1"}, 400, "negative"),
        ({"Upload-Length": str(8 << 20)}, 413, "limit"),
        ({"Upload-Length": "10"}, 400, "Upload-Length"),
    ],
)
@pytest.mark.asyncio
async def test_resumable_upload_when_headers_are_wrong_is_refused(
    hub: Hub, change: dict[str, str], status: int, message: str
) -> None:
    cam = await hub.enroll("cam-1")
    m = meta(2, "cam-1", 0.5)
    payload = encode_payload(m, b"img" * 100)
    headers = {
        **cam,
        "Upload-Offset": "0",
        "Upload-Length": str(len(payload)),
        "Upload-Sha256": hashlib.sha256(payload).hexdigest(),
        **change,
    }
    r = await hub.client.patch(
        f"{API}/device/samples/{m['id']}/upload", data=payload, headers=headers
    )
    assert r.status == status and message in (await r.json())["error"]
    assert not list((hub.config.data_dir / "uploads").glob("*/*.part"))


@pytest.mark.asyncio
async def test_resumable_upload_when_payload_is_not_a_sample_is_400(hub: Hub) -> None:
    cam = await hub.enroll("cam-1")
    bad = encode_payload({**meta(3, "cam-1", 0.5), "device_id": "cam-2"}, b"img")
    r = await patch(hub, cam, sid(3), bad, 0, len(bad))
    assert r.status == 400 and "not this device" in (await r.json())["error"]


@pytest.mark.asyncio
async def test_feedback_when_sent_after_upload_updates_sample_and_lifts_it(hub: Hub) -> None:
    cam, other = await hub.enroll("cam-1"), await hub.enroll("cam-2")
    for i, p in enumerate([0.9, 0.8, 0.1]):
        await put(hub, cam, meta(i, "cam-1", p), f"img{i}".encode())
    assert [s["id"] for s in await queue(hub)] == [sid(0), sid(1), sid(2)]
    fb = {"kind": "correct", "label": "7", "who": "op", "when": 5.0, "bundle_version": 1}
    url = f"{API}/device/samples/{sid(2)}/feedback"
    r = await hub.client.put(url, json={"feedback": fb}, headers=cam)
    assert await r.json() == {"status": "stored"}
    q = await queue(hub)
    assert [s["id"] for s in q] == [sid(2), sid(0), sid(1)]  # corrected first
    assert q[0]["queue"]["tier"] == "corrected" and q[0]["feedback"]["label"] == "7"
    confirm = {**fb, "kind": "confirm", "label": None}
    r = await hub.client.put(
        f"{API}/device/samples/{sid(0)}/feedback", json={"feedback": confirm}, headers=cam
    )
    assert r.status == 200
    assert [s["id"] for s in await queue(hub)] == [sid(2), sid(1), sid(0)]  # confirmed last

    r = await hub.client.put(url, json={"feedback": fb}, headers=other)
    theirs = (r.status, (await r.json())["error"].replace(sid(2), "ID"))
    r = await hub.client.put(
        f"{API}/device/samples/{sid(9)}/feedback", json={"feedback": fb}, headers=other
    )
    missing = (r.status, (await r.json())["error"].replace(sid(9), "ID"))
    assert theirs == missing and missing[0] == 404  # nothing tells the id exists (issue 12)
    r = await hub.client.put(url, json={"feedback": {**fb, "label": None}}, headers=cam)
    assert r.status == 400 and "needs a label" in (await r.json())["error"]


@pytest.mark.asyncio
async def test_upload_when_sample_is_known_and_meta_has_feedback_records_it(hub: Hub) -> None:
    cam = await hub.enroll("cam-1")
    m = meta(1, "cam-1", 0.2)
    assert await put(hub, cam, m, b"a") == "stored"
    m["feedback"] = {"kind": "correct", "label": "3", "who": "op", "when": 1.0,
                     "bundle_version": 1, "item": None}  # fmt: skip
    assert await put(hub, cam, m, b"a") == "duplicate"
    assert (await queue(hub))[0]["queue"]["tier"] == "corrected"


@pytest.mark.asyncio
async def test_queue_when_devices_send_same_image_shows_it_once(hub: Hub) -> None:
    a, b = await hub.enroll("cam-1"), await hub.enroll("cam-2")
    await put(hub, a, meta(1, "cam-1", 0.4), b"same image")
    await put(hub, b, meta(2, "cam-2", 0.6), b"same image")
    await put(hub, b, meta(3, "cam-2", 0.5), b"another")
    q = await queue(hub)
    assert [(s["id"], s["queue"]["copies"]) for s in q] == [(sid(2), 2), (sid(3), 1)]
    body = {"boxes": [[0, 0, 1, 1, "1"]], "annotator": "ann"}
    r = await hub.client.post(
        f"{API}/admin/samples/{sid(2)}/annotation", json=body, headers=hub.admin
    )
    assert r.status == 200
    assert [s["id"] for s in await queue(hub)] == [sid(3)]  # the copy is not asked again


@pytest.mark.asyncio
async def test_queue_when_one_device_is_noisy_interleaves_devices_by_rank(hub: Hub) -> None:
    noisy, quiet = await hub.enroll("noisy"), await hub.enroll("quiet")
    for i in range(5):
        await put(hub, noisy, meta(10 + i, "noisy", 0.99 - i / 1000), f"n{i}".encode())
    await put(hub, quiet, meta(20, "quiet", 0.3), b"q0")
    await put(hub, quiet, meta(21, "quiet", 0.2), b"q1")
    q = await queue(hub, bundle="digits")
    assert [s["device_id"] for s in q] == ["noisy", "quiet", "noisy", "quiet", "noisy", "noisy",
                                           "noisy"]  # fmt: skip
    assert [s["queue"]["device_rank"] for s in q[:4]] == [1, 1, 2, 2]
    assert len(await queue(hub, limit="3")) == 3


@pytest.mark.asyncio
async def test_feedback_metrics_when_devices_report_are_per_device(hub: Hub) -> None:
    a, b = await hub.enroll("cam-1"), await hub.enroll("cam-2")
    await put(hub, a, meta(1, "cam-1", 0.5, label="1"), b"x1")
    await put(hub, a, meta(2, "cam-1", 0.5, label="1"), b"x2")
    await put(hub, b, meta(3, "cam-2", 0.5, label="7"), b"x3")
    fb = {"kind": "correct", "label": "7", "who": "op", "when": 5.0, "bundle_version": 1}
    for s, auth, body in [
        (sid(1), a, fb),
        (sid(2), a, {**fb, "kind": "confirm", "label": None}),
        (sid(3), b, {**fb, "label": "1"}),
    ]:
        r = await hub.client.put(
            f"{API}/device/samples/{s}/feedback", json={"feedback": body}, headers=auth
        )
        assert r.status == 200
    reported = {"reviewed": 9, "accuracy": 0.5}
    await hub.client.post(f"{API}/device/heartbeat", json={"feedback": reported}, headers=a)
    r = await hub.client.get(f"{API}/admin/feedback", headers=hub.admin)
    out = await r.json()
    cam1 = out["devices"]["cam-1"]
    assert cam1["hub"]["classes"]["1"] == {"confirmations": 1, "corrections": 1, "accuracy": 0.5}
    assert cam1["hub"]["confusion"] == {"1": {"7": 1}} and cam1["reported"] == reported
    assert out["devices"]["cam-2"]["hub"]["confusion"] == {"7": {"1": 1}}
    assert out["fleet"]["reviewed"] == 3
    r = await hub.client.get(f"{API}/admin/feedback", headers=a)
    assert r.status == 403


@pytest.mark.asyncio
async def test_resumable_upload_when_device_abandons_many_keeps_a_bounded_number(hub: Hub) -> None:
    cam = await hub.enroll("cam-1")
    for i in range(20):
        payload = encode_payload(meta(100 + i, "cam-1", 0.5), b"x" * 1000)
        r = await patch(hub, cam, sid(100 + i), payload, 0, 500)
        assert (await r.json())["status"] == "partial"
    if hub.config.database_url is None:  # files in the data dir
        parts = [p.name for p in (hub.config.data_dir / "uploads" / "cam-1").glob("*.part")]
    else:  # rows in the shared database
        db = hub.client.app[DB]
        parts = await db.call(db.partial_uploads, "cam-1")
    assert len(parts) == 16
    assert any(p.startswith(sid(119)) for p in parts)  # the newest is kept


def test_resumable_upload_when_stale_request_wakes_up_cannot_corrupt_newer_one(
    live_hub: LiveHub,
) -> None:
    """A request stuck on a dead link is superseded by the device's next one; if its bytes
    arrive later they are refused, not written over the newer upload."""
    client = HubClient(live_hub.url)
    token = client.enroll("cam-1", live_hub.enroll_token, None)
    m = meta(7, "cam-1", 0.5)
    payload = encode_payload(m, bytes(range(256)) * 400)
    sha = hashlib.sha256(payload).hexdigest()
    stale = socket.create_connection(("127.0.0.1", live_hub.port))
    head = (
        f"PATCH {API}/device/samples/{m['id']}/upload HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(payload)}\r\n"
        f"Upload-Offset: 0\r\nUpload-Length: {len(payload)}\r\nUpload-Sha256: {sha}\r\n\r\n"
    )
    stale.sendall(head.encode() + payload[:30_000])
    deadline = time.monotonic() + 10
    while client.upload_status(m["id"], sha).offset < 30_000:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    ans = client.upload_part(m["id"], sha, len(payload), 20_000, payload[20_000:60_000])
    assert ans == PartAnswer("partial", 60_000)
    stale.sendall(b"\x00" * 40_000)  # the stale request wakes up with bytes of its own
    stale.settimeout(10)
    assert b" 409 " in stale.recv(4096).split(b"\r\n")[0] + b" "
    stale.close()
    ans = client.upload_part(m["id"], sha, len(payload), 60_000, payload[60_000:])
    assert ans == PartAnswer("stored", len(payload))  # the hash check passed: no corruption
