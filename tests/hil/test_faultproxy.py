"""The fault proxy itself: it relays, counts, cuts exactly at the boundary, and throttles."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from hil.faultproxy import FaultProxy

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def server() -> Iterator[int]:
    """A TCP server that sends PAYLOAD to every client, then closes."""
    lst = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        lst.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = lst.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                c.sendall(PAYLOAD)
            except OSError:
                pass
            finally:
                c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield lst.getsockname()[1]
    stop.set()
    lst.close()
    t.join(2)


def _read_all(port: int) -> bytes:
    out = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            out += b
    return bytes(out)


def test_proxy_relays_everything_when_no_fault_is_set(server: int) -> None:
    with FaultProxy("127.0.0.1", server) as p:
        got = _read_all(p.port)
    assert got == PAYLOAD
    assert p.stats.bytes_down == len(PAYLOAD) and p.stats.cuts == 0


def test_proxy_cuts_exactly_at_the_boundary_when_cut_every_is_set(server: int) -> None:
    with FaultProxy("127.0.0.1", server, cut_every=256 << 10) as p:
        got = _read_all(p.port)
        got2 = _read_all(p.port)
    assert got == PAYLOAD[: 256 << 10] and got2 == got
    assert p.stats.cuts == 2 and p.stats.connections == 2
    assert p.stats.bytes_down == 2 * (256 << 10)


def test_proxy_throttles_when_a_rate_is_set(server: int) -> None:
    with FaultProxy("127.0.0.1", server, rate_bps=4 << 20) as p:
        t0 = time.monotonic()
        got = _read_all(p.port)
        took = time.monotonic() - t0
    assert got == PAYLOAD
    assert took >= 0.2  # 1 MiB at 4 MiB/s is 0.25 s


def test_proxy_resets_when_cut_is_rst(server: int) -> None:
    with FaultProxy("127.0.0.1", server, cut_every=256 << 10, cut="rst") as p:
        got = _read_all(p.port)
    assert len(got) <= 256 << 10 and PAYLOAD.startswith(got)
    assert p.stats.cuts == 1 and p.stats.bytes_down == 256 << 10
