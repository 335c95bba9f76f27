"""A fault-injecting TCP proxy: the "bad link" of the hardware-in-the-loop tests.

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

The faults a kernel without ``sch_netem`` cannot make (``hil/netns.py`` shapes the bandwidth
with ``tc tbf``; latency and loss come from here), all drawn from one seeded generator:

- ``delay_up_s`` / ``delay_down_s`` (+ ``jitter_s``): every chunk is held that long before it
  is relayed, in order (a reader thread queues it with its due time, a sender thread relays
  it when due), so a request/response round trip costs both delays, as on a long link;
- ``drop_rate``: the share of connections reset (RST) at a random point within their first
  ``drop_within`` bytes (either direction), like a mobile link that drops mid-transfer;
- ``stall_rate`` / ``stall_s``: the share of chunks before which the link freezes for
  ``stall_s`` (the connection stays up; a client's read timeout may fire);
- :meth:`FaultProxy.link_down` / :meth:`FaultProxy.link_up`: the whole link goes away (every
  connection reset, new ones refused) and comes back.

``listen_host`` lets devices in other network namespaces reach it (the host end of a veth).
Threads, not asyncio, so it runs beside any client or server without sharing an event loop.
"""

from __future__ import annotations

import contextlib
import queue
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Literal

__all__ = ["FaultProxy", "ProxyStats"]

Direction = Literal["down", "up", "both"]
_CHUNK = 16 << 10
_QUEUED_CHUNKS = 64  # per delayed direction: at most 1 MiB in flight inside the proxy


@dataclass
class ProxyStats:
    connections: int = 0
    cuts: int = 0  # cut_every boundaries reached
    drops: int = 0  # connections reset by drop_rate or link_down
    stalls: int = 0  # freezes of stall_s
    refused: int = 0  # connections refused while the link was down
    bytes_up: int = 0  # client -> server, relayed
    bytes_down: int = 0  # server -> client, relayed


class _Conn:
    """One client connection and its upstream, relayed by two pump threads (four with a delay:
    a reader and a sender per direction)."""

    def __init__(
        self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket, rng: random.Random
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.rng = rng
        self.relayed = 0  # bytes counted against cut_every on this connection
        self.total = 0  # bytes relayed both ways, against drop_at
        self.drop_at = (
            rng.randrange(1, max(2, proxy.drop_within))
            if proxy.drop_rate and rng.random() < proxy.drop_rate
            else None
        )
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
        with self.lock:
            n = want if self.drop_at is None else max(0, min(want, self.drop_at - self.total))
            if cut is None or not watched:
                return n
            return max(0, min(n, cut - self.relayed))

    def send(self, data: bytes, dst: socket.socket, direction: Direction) -> bool:
        """Relay ``data`` with the link's faults; False once the connection is over."""
        p = self.proxy
        if p.stall_rate and self.rng.random() < p.stall_rate:
            with p._lock:
                p.stats.stalls += 1
            time.sleep(p.stall_s)
        n = self.allowance(len(data), direction)
        if n:
            p._throttle(n)
            dst.sendall(data[:n])
            with p._lock:
                if direction == "down":
                    p.stats.bytes_down += n
                else:
                    p.stats.bytes_up += n
            with self.lock:
                self.total += n
                if p.cut_every is not None and p.direction in (direction, "both"):
                    self.relayed += n
        if n < len(data):
            dropped = self.drop_at is not None and self.total >= self.drop_at
            with p._lock:
                if dropped:
                    p.stats.drops += 1
                else:
                    p.stats.cuts += 1
            self.close(abort=dropped or p.cut == "rst")
            return False
        return True

    def pump(self, src: socket.socket, dst: socket.socket, direction: Direction) -> None:
        delay = self.proxy.delay_down_s if direction == "down" else self.proxy.delay_up_s
        if delay or self.proxy.jitter_s:
            self._pump_delayed(src, dst, direction, delay)
            return
        try:
            while not self.closed:
                data = src.recv(_CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if not self.send(data, dst, direction):
                    return
        except OSError:
            pass
        finally:
            if direction == "down":
                self.close(abort=False)

    def _pump_delayed(
        self, src: socket.socket, dst: socket.socket, direction: Direction, delay: float
    ) -> None:
        """Read as data comes, relay each chunk ``delay`` (± jitter) later, in order."""
        held: queue.Queue[tuple[float, bytes]] = queue.Queue(_QUEUED_CHUNKS)
        sender = threading.Thread(
            target=self._send_when_due, args=(held, dst, direction), daemon=True
        )
        sender.start()
        last_due = 0.0
        try:
            while not self.closed:
                data = src.recv(_CHUNK)
                jitter = self.rng.uniform(-1.0, 1.0) * self.proxy.jitter_s
                last_due = max(last_due, time.monotonic() + max(0.0, delay + jitter))
                while not self.closed:
                    try:
                        held.put((last_due, data), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if not data:
                    return
        except OSError:
            with contextlib.suppress(queue.Full):
                held.put_nowait((0.0, b""))

    def _send_when_due(
        self, held: queue.Queue[tuple[float, bytes]], dst: socket.socket, direction: Direction
    ) -> None:
        try:
            while not self.closed:
                try:
                    due, data = held.get(timeout=0.2)
                except queue.Empty:
                    continue
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if self.closed or not self.send(data, dst, direction):
                    return
        except OSError:
            pass
        finally:
            if direction == "down":
                self.close(abort=False)


class FaultProxy:
    """Relay ``<listen_host>:<port>`` to ``host:port``, with the faults of a bad link."""

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
        listen_host: str = "127.0.0.1",
        delay_up_s: float = 0.0,
        delay_down_s: float = 0.0,
        jitter_s: float = 0.0,
        drop_rate: float = 0.0,
        drop_within: int = 64 << 10,
        stall_rate: float = 0.0,
        stall_s: float = 0.0,
        seed: int = 0,
    ) -> None:
        if cut_every is not None and cut_every <= 0:
            raise ValueError("cut_every must be > 0 bytes")
        if min(delay_up_s, delay_down_s, jitter_s, stall_s) < 0:
            raise ValueError("delays, jitter and stalls must be >= 0 s")
        if not (0.0 <= drop_rate <= 1.0 and 0.0 <= stall_rate <= 1.0):
            raise ValueError("drop_rate and stall_rate are shares in [0, 1]")
        self.target = (host, port)
        self.cut_every = cut_every
        self.direction: Direction = direction
        self.rate_bps = rate_bps
        self.cut = cut
        self.delay_up_s = delay_up_s
        self.delay_down_s = delay_down_s
        self.jitter_s = jitter_s
        self.drop_rate = drop_rate
        self.drop_within = drop_within
        self.stall_rate = stall_rate
        self.stall_s = stall_s
        self._rng = random.Random(seed)
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._rate_lock = threading.Lock()
        self._next_send = 0.0
        self._down = threading.Event()
        # listen_port: a fixed port, so a link can go down (stop) and come back (a new proxy).
        self._listener = socket.create_server((listen_host, listen_port), reuse_port=False)
        self.host = listen_host
        self.port: int = self._listener.getsockname()[1]
        self._conns: list[_Conn] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _throttle(self, n: int) -> None:
        if not self.rate_bps:
            return
        with self._rate_lock:
            now = time.monotonic()
            start = max(now, self._next_send)
            self._next_send = start + n / self.rate_bps
        if start > now:
            time.sleep(start - now)

    def link_down(self) -> None:
        """The link goes away: every open connection is reset, new ones are refused."""
        self._down.set()
        with self._lock:
            conns, self._conns = list(self._conns), []
        for c in conns:
            if not c.closed:
                with self._lock:
                    self.stats.drops += 1
            c.close(abort=True)

    def link_up(self) -> None:
        """The link is back."""
        self._down.clear()

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._down.is_set():
                with self._lock:
                    self.stats.refused += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5.0)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                conn = _Conn(self, client, upstream, random.Random(self._rng.getrandbits(64)))
                self.stats.connections += 1
                self._conns = [c for c in self._conns if not c.closed]
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
