"""The database under :class:`hub.storage.HubDB`: SQLite or PostgreSQL behind one thin adapter.

Every table group is a mixin class whose methods run portable SQL through ``self._db`` (a
:class:`Conn`: ``execute(sql, params)`` with ``?`` placeholders, rows as dicts, ``rowcount``) and
``self._transaction()``. One :class:`Database` per dialect supplies the connections:

- ``SqliteDatabase``: one file, WAL journal, one connection per thread (SQLite connections must
  not be shared across threads mid-statement), a busy timeout so writers queue instead of failing;
- ``PostgresDatabase`` (psycopg 3): one connection per thread, autocommit outside transactions;
  ``?`` becomes ``%s`` and the DDL of migrations is translated (``REAL`` → ``DOUBLE PRECISION``,
  ``BLOB`` → ``BYTEA``, ``INTEGER PRIMARY KEY AUTOINCREMENT`` → ``BIGSERIAL PRIMARY KEY``).

The app never calls the database on the event loop: :meth:`DBBase.call` runs a method in the
database's own thread pool (its size bounds the connections), e.g.
``await db.call(db.device, device_id)``.

The schema is built by the numbered migrations of :mod:`hub.storage.migrations` (recorded in
``schema_migrations``, applied once each, in name order, under a lock so replicas starting
together do not race), then by any table group's legacy ``TABLES`` (``CREATE ... IF NOT EXISTS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, ParamSpec, Protocol, TypeVar

__all__ = [
    "Conn",
    "Cursor",
    "DBBase",
    "Database",
    "Dialect",
    "PostgresDatabase",
    "Row",
    "SqliteDatabase",
    "loads",
    "open_database",
]

Dialect = Literal["sqlite", "postgresql"]
Row = dict[str, Any]
P = ParamSpec("P")
R = TypeVar("R")

_MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class Cursor(Protocol):
    """What ``Conn.execute`` returns (sqlite3's and psycopg's cursors both fit)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """One thread's connection, speaking ``?`` placeholders in either dialect."""

    dialect: Dialect

    def execute(self, sql: str, params: Any = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: list[Any]) -> None:
        """One write statement for many parameter rows (PostgreSQL: one pipelined trip)."""
        ...

    def script(self, sql: str) -> None: ...

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...

    def close(self) -> None: ...


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


_READS = ("SELECT", "WITH", "PRAGMA")


class _SqliteConn:
    """One thread's SQLite connection. Writers of the process take ``write_lock`` (the whole
    transaction, or one write statement), so they queue on a lock instead of hitting SQLite's
    busy handler, whose sleeps grow to 100 ms under contention; readers never wait (WAL)."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, write_lock: threading.RLock) -> None:
        self._lock = write_lock
        self._c = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._c.row_factory = _dict_row
        self._c.execute("PRAGMA journal_mode=WAL")
        self._c.execute("PRAGMA synchronous=NORMAL")
        self._c.execute("PRAGMA foreign_keys=ON")

    def execute(self, sql: str, params: Any = ()) -> Cursor:
        if sql.lstrip()[:6].upper().startswith(_READS) and " RETURNING " not in sql.upper():
            return self._c.execute(sql, params)
        with self._lock:
            return self._c.execute(sql, params)

    def executemany(self, sql: str, rows: list[Any]) -> None:
        with self._lock:
            self._c.executemany(sql, rows)

    def script(self, sql: str) -> None:
        with self._lock:
            self._c.executescript(sql)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self._c.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._c.execute("ROLLBACK")
                raise
            self._c.execute("COMMIT")

    def close(self) -> None:
        self._c.close()


_PLACEHOLDER = re.compile(r"\?")


@functools.lru_cache(maxsize=1024)
def _pg_sql(sql: str) -> str:
    """``?`` placeholders to ``%s`` (a literal ``%`` doubled first)."""
    return _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))


def pg_ddl(sql: str) -> str:
    """SQLite-flavoured DDL of a migration, as PostgreSQL wants it."""
    sql = re.sub(
        r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", "BIGSERIAL PRIMARY KEY", sql, flags=re.I
    )
    sql = re.sub(r"\bBLOB\b", "BYTEA", sql)
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)


class _PgConn:
    dialect: Dialect = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg
        from psycopg.rows import dict_row

        self._c = psycopg.connect(url, autocommit=True, row_factory=dict_row)

    def execute(self, sql: str, params: Any = ()) -> Cursor:
        return self._c.execute(_pg_sql(sql), params or None)

    def executemany(self, sql: str, rows: list[Any]) -> None:
        with self._c.cursor() as cur:
            cur.executemany(_pg_sql(sql), rows)

    def script(self, sql: str) -> None:
        self._c.execute(pg_ddl(sql).encode())  # no parameters: several statements at once

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._c.transaction():
            yield

    def close(self) -> None:
        self._c.close()


class Database:
    """Connections of one dialect, one per thread, and the pool that runs calls off the loop."""

    dialect: Dialect

    def __init__(self, threads: int) -> None:
        self._local = threading.local()
        self._all: list[Conn] = []
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hub-db")

    def _connect(self) -> Conn:
        raise NotImplementedError

    def conn(self) -> Conn:
        """This thread's connection (opened on first use)."""
        c: Conn | None = getattr(self._local, "conn", None)
        if c is None:
            c = self._connect()
            self._local.conn = c
            with self._lock:
                self._all.append(c)
        return c

    def close(self) -> None:
        """Stop the pool and close every connection."""
        self.executor.shutdown(wait=True)
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()

    def migrate(self, legacy_tables: str = "") -> list[str]:
        """Apply the numbered migrations not applied yet, then ``legacy_tables``; return names
        applied now. Serialized across processes (SQLite's write lock, PostgreSQL's advisory
        lock) so replicas starting at once apply each migration once."""
        c = self.conn()
        applied: list[str] = []
        with c.transaction():
            if c.dialect == "postgresql":
                c.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied "
                + ("DOUBLE PRECISION)" if c.dialect == "postgresql" else "REAL)")
            )
            done = {r["name"] for r in c.execute("SELECT name FROM schema_migrations")}
            for path in sorted(_MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql")):
                if path.stem in done:
                    continue
                for stmt in _statements(path.read_text(), c.dialect):
                    c.execute(pg_ddl(stmt) if c.dialect == "postgresql" else stmt)
                c.execute(
                    "INSERT INTO schema_migrations (name, applied) VALUES (?, ?)",
                    (path.stem, time.time()),
                )
                applied.append(path.stem)
            for stmt in _statements(legacy_tables, c.dialect):
                c.execute(pg_ddl(stmt) if c.dialect == "postgresql" else stmt)
        return applied


_MIGRATION_LOCK = 0x6C6C6D67  # "llmg": the advisory lock key of schema migrations


_SECTION = re.compile(r"--\s*@(all|sqlite|postgresql)\s*")


def _statements(script: str, dialect: Dialect | None = None) -> list[str]:
    """A migration's statements, split on ``;`` at line ends (no ``;`` inside literals).

    A line ``-- @sqlite`` or ``-- @postgresql`` starts statements for that dialect only (``-- @all``
    ends them): what portable SQL cannot say, such as triggers. A statement may span a trigger's
    ``BEGIN`` … ``END;`` or a ``$$`` body, whose inner ``;`` do not split it.
    """
    lines: list[str] = []
    keep = True
    for ln in script.splitlines():
        section = _SECTION.fullmatch(ln.strip())
        if section:
            keep = section.group(1) == "all" or dialect in (None, section.group(1))
        elif keep and not ln.strip().startswith("--"):
            lines.append(ln)
    out: list[str] = []
    current: list[str] = []
    in_dollar = in_block = False
    for ln in lines:
        upper = ln.strip().upper()
        current.append(ln)
        if upper.count("$$") % 2:
            in_dollar = not in_dollar
        if not in_dollar and re.search(r"\bBEGIN$", upper):
            in_block = "\n".join(current).lstrip().upper().startswith("CREATE TRIGGER")
        if in_block:
            if upper == "END;":
                in_block = False
                out.append("\n".join(current).strip())
                current = []
        elif not in_dollar and upper.endswith(";"):
            chunk = "\n".join(current)
            if "$$" in chunk:  # one statement with a body
                out.append(chunk.strip().removesuffix(";"))
            else:
                out.extend(s.strip() for s in chunk.split(";") if s.strip())
            current = []
    out.extend(s.strip() for s in "\n".join(current).split(";") if s.strip())
    return out


class SqliteDatabase(Database):
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, threads: int = 4) -> None:
        super().__init__(threads)
        self.path = Path(path)
        self._write_lock = threading.RLock()

    def _connect(self) -> Conn:
        return _SqliteConn(self.path, self._write_lock)


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"

    def __init__(self, url: str, threads: int = 8) -> None:
        super().__init__(threads)
        self.url = url

    def _connect(self) -> Conn:
        return _PgConn(self.url)


def open_database(url: str | None, data_dir: Path, threads: int | None = None) -> Database:
    """``url`` None or ``sqlite:///path``: SQLite (default ``<data>/hub.sqlite3``);
    ``postgresql://...``: PostgreSQL."""
    if url is None:
        return SqliteDatabase(data_dir / "hub.sqlite3", threads or 2)
    if url.startswith("sqlite:///"):
        return SqliteDatabase(Path(url.removeprefix("sqlite:///")), threads or 2)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url, threads or 8)
    raise ValueError(f"database_url {url[:40]!r}: expected sqlite:///PATH or postgresql://...")


class DBBase:
    """The database, the schema of every table group, and one transaction helper."""

    def __init__(self, database: Database | Path) -> None:
        if isinstance(database, Path):
            database = SqliteDatabase(database)
        self.database = database
        self._tx_depth = threading.local()
        legacy = "".join(c.__dict__.get("TABLES", "") for c in reversed(type(self).__mro__))
        database.migrate(legacy)

    def ping(self) -> None:
        """One round trip to the database (raises what the driver raises)."""
        self._db.execute("SELECT 1").fetchone()

    @property
    def dialect(self) -> Dialect:
        return self.database.dialect

    @property
    def _db(self) -> Conn:
        return self.database.conn()

    def close(self) -> None:
        """Close every connection (SQLite checkpoints its WAL)."""
        self.database.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction; inside another one of this thread, it joins the outer one (so a
        method that needs a transaction can be called from one that holds it)."""
        depth = getattr(self._tx_depth, "n", 0)
        if depth:
            self._tx_depth.n = depth + 1
            try:
                yield
            finally:
                self._tx_depth.n = depth
            return
        with self._db.transaction():
            self._tx_depth.n = 1
            try:
                yield
            finally:
                self._tx_depth.n = 0

    async def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` (a method of this database) in the database's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.database.executor, functools.partial(fn, *args, **kwargs)
        )


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
