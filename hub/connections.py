"""Request heads must arrive in time: the hub's guard against slow headers (slowloris).

aiohttp reads a request line and its headers without a deadline of its own: the only bound is
its keep-alive timer (75 s), so a client that trickles header bytes holds a connection and a
file descriptor that long before any middleware could see it. The hub therefore serves through
:class:`HeadGuard`, a wrapper around aiohttp's protocol factory (``runner.server``): each
connection's protocol is wrapped in a :class:`_GuardedProtocol` that

- arms a timer of ``header_timeout_s`` when the connection opens, and again when the first
  byte of a next request arrives after a response (an idle keep-alive connection stays under
  aiohttp's keep-alive timeout, as before);
- stops it when the head is complete (the blank line that ends it has arrived);
- closes the connection if the timer fires first, and counts it
  (``leanloop_hub_slow_heads_closed_total``).

:func:`request_done_middleware` (the outermost middleware) tells the guard a request ended, so
that the next bytes on the connection start a new head. Only public interfaces are used: the
asyncio protocol methods, ``AppRunner.server`` and ``request.transport.get_protocol()``.
Apps served without the guard (tests' ``aiohttp_client``) are unaffected.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

__all__ = ["HeadGuard", "request_done_middleware", "serve_forever", "start_serving"]

log = logging.getLogger(__name__)

_END_OF_HEAD = b"\r\n\r\n"


class HeadGuard:
    """A protocol factory: ``factory``'s protocols, each under a deadline for request heads."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        header_timeout_s: float,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._factory = factory
        self.header_timeout_s = header_timeout_s
        self._on_close = on_close
        self.closed = 0  # connections closed because their head was late

    def __call__(self) -> asyncio.Protocol:
        return _GuardedProtocol(self._factory(), self)

    def _closed_one(self) -> None:
        self.closed += 1
        if self._on_close is not None:
            self._on_close()


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, with a deadline on each request head."""

    def __init__(self, inner: asyncio.Protocol, guard: HeadGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = False  # between a head's first byte (or the connection) and its end
        self._started = False  # a byte other than CR/LF arrived (blank lines may lead a head)
        self._tail = b""  # the last bytes seen, for an end of head split across reads
        self._next_byte_starts_head = False  # a request ended: the next byte opens a head

    # -- asyncio.Protocol, passed on to aiohttp ----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._start_head()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._next_byte_starts_head:
            self._start_head()
        if self._in_head:
            self._scan(data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- the deadline ---------------------------------------------------------------------------

    def request_done(self) -> None:
        """The request ended: whatever comes next on the connection is a new head."""
        self._in_head = False
        self._stop_timer()
        self._next_byte_starts_head = True

    def _start_head(self) -> None:
        self._in_head, self._started, self._tail = True, False, b""
        self._next_byte_starts_head = False
        self._stop_timer()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.header_timeout_s, self._late)

    def _scan(self, data: bytes) -> None:
        if not self._started:
            data = data.lstrip(b"\r\n")
            if not data:
                return
            self._started = True
        seen = self._tail + data
        if _END_OF_HEAD in seen:
            self._in_head = False  # the request is aiohttp's now, until request_done()
            self._stop_timer()
        else:
            self._tail = seen[-3:]

    def _late(self) -> None:
        self._timer = None
        if not self._in_head or self._transport is None:
            return
        self._guard._closed_one()
        self._transport.abort()  # nothing to flush: no request was read

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@web.middleware
async def request_done_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Tell the connection's :class:`HeadGuard` protocol (if any) that its request ended."""
    try:
        return await handler(request)
    finally:
        transport = request.transport
        proto = transport.get_protocol() if transport is not None else None
        if isinstance(proto, _GuardedProtocol):
            proto.request_done()


async def start_serving(
    runner: web.AppRunner,
    host: str,
    port: int,
    header_timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
    on_close: Callable[[], None] | None = None,
) -> tuple[asyncio.Server, HeadGuard]:
    """Listen on ``host:port`` with ``runner``'s app behind a :class:`HeadGuard`.

    ``runner.setup()`` must have run; close the returned server before ``runner.cleanup()``.
    """
    factory = runner.server
    if factory is None:
        raise RuntimeError("call runner.setup() before start_serving()")
    guard = HeadGuard(factory, header_timeout_s, on_close)
    server = await asyncio.get_running_loop().create_server(
        guard, host, port, ssl=ssl_context, backlog=128, reuse_address=True
    )
    return server, guard


async def serve_forever(
    app: web.Application,
    host: str,
    port: int,
    header_timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
    on_close: Callable[[], None] | None = None,
    **runner_args: Any,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then shut it down gracefully (``web.run_app``'s
    job, with the head guard in front)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, handle_signals=False, **runner_args)
    await runner.setup()
    try:
        server, _guard = await start_serving(
            runner, host, port, header_timeout_s, ssl_context, on_close
        )
        scheme = "https" if ssl_context is not None else "http"
        bound = server.sockets[0].getsockname() if server.sockets else (host, port)
        log.info("hub serving on %s://%s:%s", scheme, bound[0], bound[1])
        await stop.wait()
        server.close()
    finally:
        await runner.cleanup()
