"""The hub under hostile clients (issue 12): bad bytes get a 4xx, never a 500.

Each request is written byte for byte on a socket to a real hub on loopback (a client library
would refuse to send most of them): 5000-digit integers in JSON bodies, ``scores`` of the wrong
type, an ``Authorization`` header that is not UTF-8, a 5000-digit ``Range`` end. And the same
resumable upload PATCH sent five times 10 ms apart stores the sample exactly once, no 5xx.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from hub.client import HubAdminClient
from hub.testing import API, LiveHub, make_bundle, sample_meta
from runtime.hubclient import HubClient
from runtime.uploader import encode_payload

BIG = "9" * 5000


def raw(hub: LiveHub, head: bytes, body: bytes = b"", timeout: float = 10.0) -> tuple[int, bytes]:
    """Send one HTTP/1.1 request as bytes; the status and body of the answer."""
    with socket.create_connection(("127.0.0.1", hub.port), timeout=timeout) as s:
        s.sendall(
            head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    line, _, rest = data.partition(b"\r\n")
    return int(line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def _head(method: str, path: str, token: str, extra: str = "") -> bytes:
    return (
        f"{method} {API}{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\n{extra}"
    ).encode()


@pytest.fixture
def device(live_hub: LiveHub) -> str:
    return HubClient(live_hub.url).enroll("cam-1", live_hub.enroll_token, None)


def _bodies() -> list[tuple[str, str, bytes]]:
    sample = "0000000000000001-abcdef01"
    fb = {"feedback": {"kind": "confirm", "bundle_version": "BIG"}}
    refresh = {"device_id": "cam-1", "challenge": f"{BIG}.1.2", "signature": "x"}

    def big(obj: Any) -> bytes:
        return json.dumps(obj).replace('"BIG"', BIG).encode()

    return [
        ("POST", "/device/heartbeat", big({"n": "BIG"})),
        ("POST", "/device/heartbeat", big({"events": [{"id": "a", "time": "BIG"}]})),
        ("POST", "/device/shadow", big({"status": "running", "started": "BIG"})),
        ("PUT", f"/device/samples/{sample}/feedback", big(fb)),
        ("POST", "/enroll", big({"device_id": "x", "enroll_token": "BIG"})),
        ("POST", "/device/challenge", big({"device_id": "BIG"})),
        ("POST", "/device/refresh", json.dumps(refresh).encode()),
        ("POST", "/device/heartbeat", b'{"x": "\xff\xfe"}'),
    ]


@pytest.mark.parametrize("case", range(len(_bodies())))
def test_hub_answers_4xx_when_a_json_body_holds_5000_digit_ints_or_bad_bytes(
    live_hub: LiveHub, device: str, case: int
) -> None:
    method, path, body = _bodies()[case]
    status, answer = raw(live_hub, _head(method, path, device), body)
    assert 400 <= status < 500, (status, answer[:300])
    assert "error" in json.loads(answer)


@pytest.mark.parametrize(
    "change",
    [
        {"scores": "high"},
        {"scores": [1, 2]},
        {"scores": {"margin": "x"}},
        {"scores": {"margin": None}},
        {"priority": BIG},
        {"created": [1]},
        {"bundle_version": int(BIG[:4000])},
        {"prediction": "x"},
        {"feedback": {"kind": "confirm", "when": "soon"}},
        {"extra": 5},
    ],
)
def test_sample_upload_is_4xx_when_meta_fields_have_the_wrong_type(
    live_hub: LiveHub, device: str, change: dict[str, Any]
) -> None:
    m = {**sample_meta("0000000000000002-abcdef01", "cam-1", 0.5), **change}
    payload = encode_payload(m, b"\xff\xd8img\xff\xd9")
    sha = hashlib.sha256(payload).hexdigest()
    extra = f"Upload-Offset: 0\r\nUpload-Length: {len(payload)}\r\nUpload-Sha256: {sha}\r\n"
    status, answer = raw(
        live_hub, _head("PATCH", f"/device/samples/{m['id']}/upload", device, extra), payload
    )
    assert 400 <= status < 500, (status, answer[:300])


@pytest.mark.parametrize(
    "value", [b"Bearer \xff\xfe\xfd", b"\xc3\x28 abc", b"Bearer " + b"\x80" * 100]
)
def test_hub_answers_401_when_the_authorization_header_is_not_utf8(
    live_hub: LiveHub, value: bytes
) -> None:
    head = f"GET {API}/device/desired HTTP/1.1\r\nHost: x\r\nAuthorization: ".encode()
    status, _ = raw(live_hub, head + value + b"\r\n")
    assert status == 401


def test_target_download_is_4xx_or_whole_when_the_range_end_has_5000_digits(
    live_hub: LiveHub, device: str, tmp_path: Path, keys_dir: Path
) -> None:
    admin = HubAdminClient(live_hub.url, live_hub.admin_token)
    bundle = make_bundle(tmp_path / "b", "digits", 1)
    admin.publish_bundle(bundle, keys_dir)
    targets = json.loads(admin.current_targets() or b"{}")["signed"]["targets"]
    name, info = next(iter(targets.items()))
    sha = info["hashes"]["sha256"]
    d, _, f = name.rpartition("/")
    path = f"/tuf/targets/{d}/{sha}.{f}"
    for rng in (f"bytes=0-{BIG}", f"bytes={BIG}-", f"bytes={BIG}-{BIG}"):
        status, _ = raw(live_hub, _head("GET", path, device, f"Range: {rng}\r\n"))
        assert status in (200, 206, 400, 416), (rng[:20], status)


def test_resumable_upload_stores_exactly_once_when_the_same_patch_comes_5_times_10ms_apart(
    live_hub: LiveHub, device: str
) -> None:
    m = sample_meta("0000000000000003-abcdef01", "cam-1", 0.5)
    payload = encode_payload(m, bytes(range(256)) * 2000)
    sha = hashlib.sha256(payload).hexdigest()
    extra = f"Upload-Offset: 0\r\nUpload-Length: {len(payload)}\r\nUpload-Sha256: {sha}\r\n"
    head = _head("PATCH", f"/device/samples/{m['id']}/upload", device, extra)

    def send(i: int) -> tuple[int, bytes]:
        time.sleep(0.01 * i)
        return raw(live_hub, head, payload)

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(send, range(5)))
    statuses = [s for s, _ in answers]
    assert all(s < 500 for s in statuses), answers
    stored = [json.loads(b)["status"] for s, b in answers if s == 200]
    assert stored.count("stored") == 1, answers
    admin = HubAdminClient(live_hub.url, live_hub.admin_token)
    assert [s["id"] for s in admin.samples()] == [m["id"]]
    client = HubClient(live_hub.url, device)
    assert client.upload_status(m["id"], sha).status == "stored"
