"""The fault proxy itself: it relays, counts, cuts exactly at the boundary, and throttles."""

from __future__ import annotations

import contextlib
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


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    """A TCP server answering each line it reads with the same line."""
    lst = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                c, _ = lst.accept()
            except OSError:
                return
            with c, c.makefile("rwb") as f, contextlib.suppress(OSError):
                for line in f:
                    f.write(line)
                    f.flush()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lst, t


def test_proxy_delays_each_direction_in_order_when_delays_are_set() -> None:
    lst, _ = _echo_server()
    port = lst.getsockname()[1]
    proxy = FaultProxy("127.0.0.1", port, delay_up_s=0.15, delay_down_s=0.1, jitter_s=0.02)
    with proxy as p, socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        f = s.makefile("rwb")
        t0 = time.monotonic()
        lines = [f"line {i}\n".encode() for i in range(20)]
        f.write(b"".join(lines))
        f.flush()
        got = [f.readline() for _ in lines]
        rtt = time.monotonic() - t0
    lst.close()
    assert got == lines  # nothing reordered by the jitter
    assert 0.2 <= rtt < 1.5  # 0.15 up + 0.1 down, minus at most 2 x 0.02 jitter


def test_proxy_resets_connections_at_random_when_drop_rate_is_set(server: int) -> None:
    with FaultProxy("127.0.0.1", server, drop_rate=1.0, drop_within=100_000, seed=3) as p:
        sizes = [len(_read_all(p.port)) for _ in range(5)]
    assert all(n < 100_000 for n in sizes)
    assert p.stats.drops == 5 and p.stats.cuts == 0
    assert len(set(sizes)) > 1  # the points are drawn, not fixed


def test_proxy_freezes_the_link_when_stall_rate_is_set(server: int) -> None:
    with FaultProxy("127.0.0.1", server, stall_rate=1.0, stall_s=0.01) as p:
        got = _read_all(p.port)
    assert got == PAYLOAD
    assert p.stats.stalls >= len(PAYLOAD) // (16 << 10)  # one freeze per relayed chunk


def test_proxy_refuses_connections_while_the_link_is_down(server: int) -> None:
    with FaultProxy("127.0.0.1", server, rate_bps=1 << 20) as p:
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            assert s.recv(1024)
            p.link_down()  # the open connection is reset mid-transfer
            with pytest.raises(OSError):
                while s.recv(65536):
                    pass
        try:
            refused = _read_all(p.port)
        except OSError:  # reset before connect() returned
            refused = b""
        assert refused == b""  # refused: reset at once
        p.link_up()
        assert _read_all(p.port) == PAYLOAD
    assert p.stats.drops == 1 and p.stats.refused == 1
