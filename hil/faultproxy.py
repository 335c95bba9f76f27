"""A fault-injecting TCP proxy on loopback: the "bad link" of the hardware-in-the-loop tests.

Devices sit behind intermittent, low-bandwidth links. To test that downloads resume and
uploads stay idempotent, put this proxy between a real client and a real hub::

    with FaultProxy("127.0.0.1", hub_port, cut_every=256 << 10, direction="down") as proxy:
        fetch(proxy.url + "/...")
        proxy.stats.bytes_down   # every byte the client actually received

Each connection is cut once ``cut_every`` bytes have been relayed on it in the watched
direction (``"down"``: server → client, ``"up"``: client → server, ``"both"``: the sum). The
cut is ``"fin"`` by default: the peer receives exactly those bytes, then the connection closes
mid-message (deterministic, what a test counting bytes wants); ``cut="rst"`` resets it
instead, and Linux then discards whatever the peer had not read yet, as on a real dropped link.
``rate_bps`` caps the relay rate (both directions together) to shape a slow link. Counters are
totals over all connections so a test can compare bytes on the wire with the bytes of the payload.

Threads, not asyncio, so it runs beside any client or server without sharing an event loop.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Literal

__all__ = ["FaultProxy", "ProxyStats"]

Direction = Literal["down", "up", "both"]
_CHUNK = 16 << 10


@dataclass
class ProxyStats:
    connections: int = 0
    cuts: int = 0
    bytes_up: int = 0  # client -> server, relayed
    bytes_down: int = 0  # server -> client, relayed


class _Conn:
    """One client connection and its upstream, relayed by two pump threads."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.relayed = 0  # bytes counted against cut_every on this connection
        self.lock = threading.Lock()
        self.closed = False

    def close(self, abort: bool) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.upstream):
            try:
                if abort:  # RST, like a dropped link, rather than a polite FIN
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                # close() alone does not wake the other pump blocked in recv() on this socket
                # (the kernel keeps the description alive), so shut it down first.
                s.shutdown(socket.SHUT_RD if abort else socket.SHUT_RDWR)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                s.close()

    def allowance(self, want: int, direction: Direction) -> int:
        """How many of ``want`` bytes may pass before the cut (``want`` when not watched)."""
        cut = self.proxy.cut_every
        watched = self.proxy.direction in (direction, "both")
        if cut is None or not watched:
            return want
        with self.lock:
            return max(0, min(want, cut - self.relayed))

    def pump(self, src: socket.socket, dst: socket.socket, direction: Direction) -> None:
        p = self.proxy
        try:
            while not self.closed:
                data = src.recv(_CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                n = self.allowance(len(data), direction)
                if n:
                    p._throttle(n)
                    dst.sendall(data[:n])
                    with p._lock:
                        if direction == "down":
                            p.stats.bytes_down += n
                        else:
                            p.stats.bytes_up += n
                    if p.cut_every is not None and p.direction in (direction, "both"):
                        with self.lock:
                            self.relayed += n
                if n < len(data):
                    with p._lock:
                        p.stats.cuts += 1
                    self.close(abort=p.cut == "rst")
                    return
        except OSError:
            pass
        finally:
            if direction == "down":
                self.close(abort=False)


class FaultProxy:
    """Relay ``127.0.0.1:<port>`` to ``host:port``, cutting connections every N bytes."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        cut_every: int | None = None,
        direction: Direction = "down",
        rate_bps: float | None = None,
        cut: Literal["fin", "rst"] = "fin",
        listen_port: int = 0,
    ) -> None:
        if cut_every is not None and cut_every <= 0:
            raise ValueError("cut_every must be > 0 bytes")
        self.target = (host, port)
        self.cut_every = cut_every
        self.direction: Direction = direction
        self.rate_bps = rate_bps
        self.cut = cut
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._rate_lock = threading.Lock()
        self._next_send = 0.0
        # listen_port: a fixed port, so a link can go down (stop) and come back (a new proxy).
        self._listener = socket.create_server(("127.0.0.1", listen_port), reuse_port=False)
        self.port: int = self._listener.getsockname()[1]
        self._conns: list[_Conn] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _throttle(self, n: int) -> None:
        if not self.rate_bps:
            return
        with self._rate_lock:
            now = time.monotonic()
            start = max(now, self._next_send)
            self._next_send = start + n / self.rate_bps
        if start > now:
            time.sleep(start - now)

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5.0)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            conn = _Conn(self, client, upstream)
            with self._lock:
                self.stats.connections += 1
                self._conns.append(conn)
            for src, dst, d in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=conn.pump, args=(src, dst, d), daemon=True).start()

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close(abort=True)
        self._thread.join(timeout=2.0)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
