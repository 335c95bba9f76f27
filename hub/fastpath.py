"""What the hub's hottest device routes answer without a trip to the database.

A fleet of 10,000 devices polling every minute makes some 330 requests a second, nearly all of
them the same three: who is calling (the bearer token), what should it run (``desired``), and a
heartbeat that only records the device's latest status. On 2 cores every trip to the database's
threads costs a hop through the GIL, so those three are served from memory:

- **Tokens and desired answers are cached** in each replica, each entry tagged with the change
  counter ("generation") it was read under. Triggers (migration 0011) bump the counters in the
  same transaction as any change of a device token or named token, of a device's desired bundle
  or cohort, of a cohort's rollout or of a shadow assignment — whatever code path wrote it. Each
  replica reads the counters every ``cache_check_s`` (one small query) and right after any write
  it served other than the devices' hot routes, and forgets the entries of a counter that moved.
  So a revoked token is refused at once by the replica that revoked it and within
  ``cache_check_s`` by the others. Unknown tokens are never cached.
- **Heartbeats are written behind**: the latest status and last-seen time of each device wait in
  memory and are written in one transaction every ``heartbeat_flush_s`` (and before any request
  other than the devices' own, and before a rollout tick, so what those read includes them). A
  hub that crashes loses at most that long of last-seen times and statuses, which every device
  sends again at its next poll. Update events (failures, rollbacks) are never deferred: the
  rollout halt rules act on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hub.storage import HubDB

__all__ = ["FastPath", "fastpath_middleware"]

log = logging.getLogger("leanloop.hub.fastpath")

_Seen = tuple[float, dict[str, Any] | None]


class FastPath:
    """The token and desired caches and the heartbeat write-behind of one hub process."""

    def __init__(
        self, db: HubDB, check_s: float = 0.5, flush_s: float = 1.0, max_entries: int = 200_000
    ) -> None:
        self._db = db
        self.check_s = check_s
        self.flush_s = flush_s
        self._max = max_entries
        self._gens: dict[str, int] = {}
        self._tokens: dict[str, tuple[int, Any]] = {}
        self._desired: dict[str, tuple[int, bytes]] = {}
        self._pending: dict[str, _Seen] = {}
        self._flush_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    # -- life --------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh()
        self._tasks = [
            asyncio.create_task(self._every(self.check_s, self.refresh), name="leanloop-gens"),
            asyncio.create_task(self._every(self.flush_s, self.flush), name="leanloop-beats"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        await self.flush()

    async def _every(self, period: float, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await step()
            except Exception:  # the database may be away for a while: try again next time
                log.exception("%s failed", getattr(step, "__name__", "step"))

    # -- generations -------------------------------------------------------------------------

    def generation(self, name: str) -> int:
        return self._gens.get(name, -1)

    async def refresh(self) -> None:
        """Read the change counters; forget what was cached under a counter that moved."""
        gens = await self._db.call(self._db.generations)
        if gens.get("tokens") != self._gens.get("tokens"):
            self._tokens.clear()
        if gens.get("desired") != self._gens.get("desired"):
            self._desired.clear()
        self._gens = gens

    # -- tokens ------------------------------------------------------------------------------

    def token(self, digest: str) -> Any | None:
        """Who a token hash belongs to, if cached under the current counter."""
        hit = self._tokens.get(digest)
        return hit[1] if hit is not None and hit[0] == self.generation("tokens") else None

    def remember_token(self, digest: str, generation: int, who: Any) -> None:
        """Cache who a token is; ``generation`` is the counter read *before* the lookup, so a
        change committed meanwhile leaves an entry the next refresh forgets."""
        if generation < 0:
            return  # no counters (not read yet): nothing would ever drop the entry
        if len(self._tokens) >= self._max:
            self._tokens.clear()
        self._tokens[digest] = (generation, who)

    # -- desired -----------------------------------------------------------------------------

    def desired(self, device_id: str) -> bytes | None:
        """The device's cached ``desired`` answer (JSON), if cached under the current counter."""
        hit = self._desired.get(device_id)
        return hit[1] if hit is not None and hit[0] == self.generation("desired") else None

    def remember_desired(self, device_id: str, generation: int, body: bytes) -> None:
        """Cache an answer read under ``generation`` (read before the database was)."""
        if generation < 0:
            return
        if len(self._desired) >= self._max:
            self._desired.clear()
        self._desired[device_id] = (generation, body)

    # -- heartbeats --------------------------------------------------------------------------

    def seen(self, device_id: str, status: dict[str, Any] | None = None) -> None:
        """Note that a device called now (with its reported status, if any); written behind."""
        if status is None:
            earlier = self._pending.get(device_id)
            status = earlier[1] if earlier is not None else None
        self._pending[device_id] = (time.time(), status)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Write what devices reported since the last flush, in one transaction."""
        async with self._flush_lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            rows = [(d, when, status) for d, (when, status) in batch.items()]
            try:
                await self._db.call(self._db.touch_devices, rows)
            except BaseException:
                # Keep them for the next flush, under anything newer that arrived meanwhile.
                self._pending = {**batch, **self._pending}
                raise


_HOT_READS = ("/api/v1/device/", "/api/v1/tuf/", "/api/v1/enroll", "/healthz")
_HOT_WRITES = (
    "/api/v1/device/heartbeat",
    "/api/v1/device/samples/",
    "/api/v1/device/challenge",
    "/api/v1/enroll",
)
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FASTPATH = web.AppKey("fastpath", FastPath)


@web.middleware
async def fastpath_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Read-your-writes around the caches for everything but the devices' hot routes: pending
    heartbeats are written before it runs, and the counters are read again after a write."""
    path = request.path
    fp = request.app[FASTPATH]
    if not path.startswith(_HOT_READS):
        try:
            await fp.flush()
        except Exception:  # the request goes on; the periodic flush tries again
            log.exception("could not write pending heartbeats before %s %s", request.method, path)
    if request.method in _READ_METHODS or path.startswith(_HOT_WRITES):
        return await handler(request)
    try:
        return await handler(request)
    finally:
        try:
            await fp.refresh()
        except Exception:  # the periodic refresh tries again
            log.exception("could not read the change counters after %s %s", request.method, path)
