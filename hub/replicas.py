"""What lets several hub processes on one PostgreSQL and one bucket stand in for each other.

Rows and blobs are shared already. What else a hub holds in its data dir — the TUF metadata it
serves, the online snapshot/timestamp keys, the admin and enrolment tokens — is mirrored in the
database (``shared_files``) by :class:`SharedFiles`:

- at start, under a cluster-wide lock: pull what the database holds into the data dir (a new
  replica needs no ``--keys`` and no copy of another's disk), create what is missing (tokens,
  the TUF repository from ``--keys``), push it back;
- after a change (publish, root rotation, timestamp re-signing): push;
- before serving TUF metadata or accepting a publish: pull if the database moved on (checked at
  most every ``check_s``), and reload the repository.

Publishing is serialized across replicas by a PostgreSQL advisory lock (:func:`cluster_lock`);
the timestamp is re-signed by the leader only (:mod:`hub.leader`). On SQLite (one hub) none of
this runs: :func:`cluster_lock` is a no-op and there is no mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from hub.storage import HubDB
from runtime._atomic import atomic_write_bytes

__all__ = [
    "PUBLISH_LOCK_KEY",
    "START_LOCK_KEY",
    "SharedFiles",
    "cluster_lock",
    "cluster_lock_async",
]

log = logging.getLogger("leanloop.hub.replicas")

START_LOCK_KEY = 0x6C6C7374  # "llst"
PUBLISH_LOCK_KEY = 0x6C6C7062  # "llpb"
_SHARED_GLOBS = ("tuf/*.json", "keys/online/*.key", "admin.token", "enroll.token")


@contextlib.contextmanager
def cluster_lock(database_url: str | None, key: int) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock (on a connection of its own) for the block; no-op without
    PostgreSQL. Blocking."""
    if database_url is None:
        yield
        return
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


@contextlib.asynccontextmanager
async def cluster_lock_async(database_url: str | None, key: int) -> AsyncIterator[None]:
    """:func:`cluster_lock` from the event loop (the waiting happens in a thread)."""
    if database_url is None:
        yield
        return
    cm = cluster_lock(database_url, key)
    await asyncio.to_thread(cm.__enter__)
    try:
        yield
    finally:
        await asyncio.to_thread(cm.__exit__, None, None, None)


class SharedFiles:
    """The data-dir files of :data:`_SHARED_GLOBS`, mirrored in ``shared_files``."""

    def __init__(self, db: HubDB, data_dir: Path, check_s: float = 0.5) -> None:
        self._db = db
        self._dir = Path(data_dir)
        self._seen = 0
        self._check_s = check_s
        self._checked = 0.0

    def pull(self) -> bool:
        """Write the files changed in the database since the last pull; True if any."""
        rows = self._db.shared_since(self._seen)
        for name, text, seq in rows:
            path = self._dir / name
            if ".." in Path(name).parts:
                continue  # never outside the data dir
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o600 if name.endswith((".key", ".token")) else 0o644
            atomic_write_bytes(path, text.encode(), mode=mode)
            self._seen = max(self._seen, seq)
        return bool(rows)

    def push(self) -> None:
        """Store the local files whose content the database does not have."""
        files = {}
        for pattern in _SHARED_GLOBS:
            for p in self._dir.glob(pattern):
                if p.is_file():
                    files[p.relative_to(self._dir).as_posix()] = p.read_text()
        if self._db.put_shared(files):
            self._seen = self._db.shared_seq()  # our own writes need no pull

    def stale(self) -> bool:
        """True when the database moved on since the last pull (asked at most every check_s)."""
        now = time.monotonic()
        if now - self._checked < self._check_s:
            return False
        self._checked = now
        return self._db.shared_seq() > self._seen
