"""Target blobs are resumable: strong sha256 ETag, Range honoured only under a matching If-Range."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from hub.testing import API
from hub.testing import HubTestSession as Hub

pytestmark = pytest.mark.asyncio

DATA = bytes(range(256)) * 40  # 10240 bytes
SHA = hashlib.sha256(DATA).hexdigest()
ETAG = f'"{SHA}"'

# (request headers, status, Content-Range, body)
RANGES: list[tuple[dict[str, str], int, str | None, bytes]] = [
    ({}, 200, None, DATA),
    ({"Range": "bytes=1000-"}, 206, "bytes 1000-10239/10240", DATA[1000:]),
    ({"Range": "bytes=1000-", "If-Range": ETAG}, 206, "bytes 1000-10239/10240", DATA[1000:]),
    ({"Range": "bytes=10-19"}, 206, "bytes 10-19/10240", DATA[10:20]),
    ({"Range": "bytes=1000-", "If-Range": '"another"'}, 200, None, DATA),
    ({"Range": "bytes=1000-", "If-Range": f"W/{ETAG}"}, 200, None, DATA),
    ({"Range": "bytes=-100"}, 200, None, DATA),  # suffix ranges: whole blob
    ({"Range": "bytes=0-9,20-29"}, 200, None, DATA),  # several ranges: whole blob
    ({"Range": "bytes=10240-"}, 416, None, b""),
]


@pytest.mark.parametrize(("extra", "status", "content_range", "body"), RANGES)
async def test_target_blob_when_ranged_answers_per_range_and_if_range(
    hub: Hub,
    make_bundle: Any,
    extra: dict[str, str],
    status: int,
    content_range: str | None,
    body: bytes,
) -> None:
    await hub.publish(make_bundle("digits", 1, **{"model.onnx": DATA}))
    device = await hub.enroll("cam-1")
    url = f"{API}/tuf/targets/digits/1/{SHA}.model.onnx"
    resp = await hub.client.get(url, headers={**device, **extra})
    assert resp.status == status
    if status == 416:
        return
    assert resp.headers["ETag"] == ETAG
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers.get("Content-Range") == content_range
    assert await resp.read() == body
    head = await hub.client.head(url, headers=device)
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(DATA))
