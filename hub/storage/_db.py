"""The SQLite connection and the base every table group builds on.

Each table group is a mixin class with its ``TABLES`` (``CREATE ... IF NOT EXISTS``) and its
methods; :class:`hub.storage.HubDB` combines them. Methods use ``self._db`` and
``self._transaction()``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DBBase:
    """The connection, the schema of every table group, and one transaction helper."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        schema = "".join(c.__dict__.get("TABLES", "") for c in reversed(type(self).__mro__))
        self._db.executescript(schema)

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
