"""Slow clients (issue 12): bodies that trickle in cannot take the hub away from its devices.

The attack: hundreds of unauthenticated clients open ``POST /enroll`` and send its body one
byte at a time. Before, 300 of them made a hub limited to 256 open files stop answering. Now a
bounded number of requests without a token are served at once (the rest get 503 and their
connection is closed) and a body that goes quiet is cut (408). The test runs the real
``leanloop hub serve`` process under ``RLIMIT_NOFILE`` 256 with 300 such clients and checks a
device keeps being served throughout.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.config import HubConfig
from hub.testing import API, LiveHub
from runtime.hubclient import HubClient
from runtime.identity import DeviceKey
from runtime.protocol import Heartbeat

SLOW = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hub_process(tmp_path: Path, keys_dir: Path) -> Iterator[tuple[str, Path]]:
    """``leanloop hub serve`` with at most 256 open files, like a small unit's default."""
    port = _free_port()
    data = tmp_path / "hub"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    log = open(tmp_path / "hub.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "leanloop.cli", "hub", "serve", "--data", str(data)),
            *("--port", str(port), "--keys", str(keys_dir)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=limit,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        assert proc.poll() is None, (tmp_path / "hub.log").read_text()
        time.sleep(0.1)
    try:
        yield url, data
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _slow_enroll(port: int) -> socket.socket | None:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(
            f"POST {API}/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 4000\r\n\r\n{".encode()
        )
        return s
    except OSError:
        return None


def test_devices_are_served_when_300_unauthenticated_clients_trickle_bodies(
    hub_process: tuple[str, Path],
) -> None:
    url, data = hub_process
    port = int(url.rsplit(":", 1)[1])
    device = HubClient(url, timeout_s=5.0, key=DeviceKey.generate(), device_id="cam-1")
    enroll_token = (data / "enroll.token").read_text().strip()
    device.token = device.enroll("cam-1", enroll_token, None)

    socks = [s for s in (_slow_enroll(port) for _ in range(SLOW)) if s is not None]
    stop = threading.Event()

    def trickle() -> None:  # one byte per client per second, for as long as they are let
        while not stop.wait(1.0):
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(b" ")

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        for _ in range(10):  # each on a new connection, each must be answered (5 s timeout)
            fresh = HubClient(url, device.token, timeout_s=5.0)
            fresh.heartbeat(Heartbeat.model_validate({"device_id": "cam-1"}))
            assert fresh.desired().target is None
            fresh.close()
            time.sleep(0.2)
    finally:
        stop.set()
        t.join(5)
        for s in socks:
            s.close()
    assert len(socks) == SLOW


def test_a_body_that_goes_quiet_is_cut_with_408_when_the_idle_limit_passes(
    config: HubConfig,
) -> None:
    quick = config.model_copy(update={"body_idle_timeout_s": 0.5, "body_timeout_s": 2.0})
    with LiveHub(quick) as hub:
        for head_only in (True, False):
            with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
                s.sendall(
                    f"POST {API}/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()
                )
                t0 = time.monotonic()
                if not head_only:  # keeps sending, but too slowly to finish in time
                    for _ in range(10):
                        time.sleep(0.3)
                        with contextlib.suppress(OSError):
                            s.send(b" ")
                answer = s.recv(4096)
                assert answer.split(b"\r\n")[0].split()[1] == b"408"
                assert time.monotonic() - t0 < 5
                s.settimeout(4)
                assert s.recv(4096) == b""  # and the connection is closed (after <= 2 s)


def test_unauthenticated_requests_beyond_the_cap_get_503_at_once(config: HubConfig) -> None:
    small = config.model_copy(update={"max_unauthenticated": 2, "body_idle_timeout_s": 5.0})
    with LiveHub(small) as hub:
        held = [_slow_enroll(hub.port) for _ in range(2)]
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", hub.port), timeout=5) as s:
            head = f"POST {API}/device/challenge HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            s.sendall(head.encode() + b"\r\n{}")
            assert s.recv(4096).split(b"\r\n")[0].split()[1] == b"503"
        for h in held:
            assert h is not None
            h.close()
