"""Sample ingest under concurrency answers no 5xx (issue 15's soak saw one ``PUT
/device/samples`` 500): many devices uploading at once, with duplicates, while heartbeats and
polls run; and clients that hang up in the middle of their body (as the simulator's do when
they time out under load), which the hub must count as the client's doing, not its own error."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import pytest
import pytest_asyncio

from hub.testing import API, HubTestSession, sample_form, sample_meta

IMAGE = b"\xff\xd8" + bytes(range(256)) * 32 + b"\xff\xd9"  # the same image for every sample


@pytest_asyncio.fixture
async def hub_on(
    hub_on_backend: Callable[..., Awaitable[HubTestSession]],
) -> HubTestSession:
    return await hub_on_backend()


def _server_5xx(metrics: str) -> list[str]:
    return [
        line
        for line in metrics.splitlines()
        if line.startswith("leanloop_hub_requests_total{") and 'status="5' in line
    ]


@pytest.mark.asyncio
async def test_uploads_when_many_devices_send_at_once_with_duplicates_answer_no_5xx(
    hub_on: HubTestSession, caplog: pytest.LogCaptureFixture
) -> None:
    hub = hub_on
    devices = {f"cam-{i}": await hub.enroll(f"cam-{i}") for i in range(20)}
    statuses: list[int] = []

    async def upload(dev: str, n: int) -> None:
        meta = sample_meta(f"{dev}-s{n}", dev, 0.5)
        resp = await hub.client.put(
            f"{API}/device/samples/{dev}-s{n}",
            data=sample_form(meta, IMAGE),
            headers=devices[dev],
        )
        statuses.append(resp.status)

    async def poll(dev: str) -> None:
        beat = {"device_id": dev, "time": 1.0, "update_state": "idle"}
        for _ in range(3):
            r1 = await hub.client.post(f"{API}/device/heartbeat", json=beat, headers=devices[dev])
            r2 = await hub.client.get(f"{API}/device/desired", headers=devices[dev])
            statuses.extend([r1.status, r2.status])

    caplog.set_level(logging.ERROR, logger="leanloop")
    work = [upload(dev, n % 8) for n in range(10) for dev in devices]  # each id 1-2 times
    work += [poll(dev) for dev in devices]
    await asyncio.gather(*work)
    assert set(statuses) == {200}
    listed = await (
        await hub.client.get(f"{API}/admin/samples?limit=1000", headers=hub.admin)
    ).json()
    assert len(listed) == 20 * 8
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    metrics = await (await hub.client.get("/metrics")).text()
    assert _server_5xx(metrics) == []


@pytest.mark.asyncio
async def test_upload_when_the_client_hangs_up_mid_body_is_not_a_server_error(
    hub_on: HubTestSession, caplog: pytest.LogCaptureFixture
) -> None:
    hub = hub_on
    device = await hub.enroll("cam-1")
    caplog.set_level(logging.ERROR, logger="leanloop")
    meta = sample_meta("s-cut", "cam-1", 0.5)
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="meta"\r\n'
            f"Content-Type: application/json\r\n\r\n{json.dumps(meta)}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="i.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + IMAGE
        + f"\r\n--{boundary}--\r\n".encode()
    )
    server = hub.client.server

    async def hang_up(cut: int, reset: bool) -> None:
        _reader, writer = await asyncio.open_connection(server.host, server.port)
        head = (
            f"PUT {API}/device/samples/s-cut HTTP/1.1\r\nHost: hub\r\n"
            f"Authorization: {device['Authorization']}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body[:cut])
        await writer.drain()
        await asyncio.sleep(0.05)  # the hub is reading the body now
        if reset:
            writer.transport.abort()  # a reset, as a client that gave up
        else:
            writer.close()  # the end of the stream, mid-body

    await asyncio.gather(*(hang_up(len(body) * k // 12, k % 2 == 0) for k in range(1, 12)))
    await asyncio.sleep(0.5)  # the handlers see the lost connections
    metrics = await (await hub.client.get("/metrics")).text()
    assert _server_5xx(metrics) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [
        r.getMessage() for r in caplog.records
    ]
    # The sample was not stored half; the whole upload still works.
    resp = await hub.client.put(
        f"{API}/device/samples/s-cut", data=sample_form(meta, IMAGE), headers=device
    )
    assert resp.status == 200 and (await resp.json())["status"] == "stored"
