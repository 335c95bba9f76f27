"""Which hub replica does the once-per-fleet work: re-signing the TUF timestamp, running training
jobs, stepping rollouts.

On SQLite there is one hub process, so it always leads. On PostgreSQL every replica tries
``pg_try_advisory_lock`` on its own connection, held for as long as the process lives: one wins,
the others keep trying every ``retry_s``. When the leader dies its connection closes, PostgreSQL
releases the lock, and another replica takes over at its next try. No home-made consensus: the
database that already holds the state arbitrates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from runtime.errors import first_line

__all__ = ["Leader"]

log = logging.getLogger("leanloop.hub.leader")

LEADER_LOCK = 0x6C6C6C64  # "llld"


class Leader:
    """``is_leader`` tells whether this process leads (see module doc)."""

    def __init__(self, database_url: str | None, retry_s: float = 2.0) -> None:
        self._url = database_url
        self._retry_s = retry_s
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self.is_leader = database_url is None

    async def start(self) -> None:
        if self._url is not None:
            await asyncio.to_thread(self._try)
            self._task = asyncio.create_task(self._keep_trying(), name="leanloop-leader")

    def _try(self) -> None:
        import psycopg

        assert self._url is not None
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._url, autocommit=True)
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
            won = bool(row and row[0])
        except psycopg.Error as e:
            log.warning("leader election: %s", first_line(e))
            self._conn, won = None, False
        if won and not self.is_leader:
            log.info("this hub replica now leads (timestamp, jobs, rollouts)")
        self.is_leader = won

    async def _keep_trying(self) -> None:
        while True:
            await asyncio.sleep(self._retry_s)
            if not self.is_leader or self._conn is None or self._conn.closed:
                await asyncio.to_thread(self._try)
            else:  # still holding it? (the connection may have died under us)
                await asyncio.to_thread(self._check)

    def _check(self) -> None:
        try:
            self._conn.execute("SELECT 1")
        except Exception:
            log.warning("leader lost its database connection")
            self.is_leader = False
            self._conn = None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._conn.close)
        self.is_leader = False
