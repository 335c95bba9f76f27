"""The sample store's sub-databases, and what one transaction does with them.

:class:`Tables` opens the six named sub-databases of the store's LMDB environment and holds
the steps every store operation is made of, each inside a transaction its caller owns: read a
counter, read a record's chunks, find a record's index entry, store or remove a record with
all its index entries and counters. It holds no lock, opens no transaction and decides
nothing (what to evict, whether to refuse: :mod:`runtime.store._evict` and
:class:`~runtime.store.lmdb_store.SampleStore`); the byte layouts are :mod:`runtime.store._codec`.

Layout (one LMDB environment, six named sub-databases)::

    records  id + chunk number (2 bytes) -> one page of: header | meta JSON | image | padding
             header = b"LLS2", priority key (8 bytes), meta length, image length (4 bytes each)
    prio     priority key + id -> entry = flags (1 byte: protected, pending, random slice),
                                  chunks (2), footprint (4), final class (UTF-8, rest)
    evict    priority key + id -> b""        (unprotected ranked records: the eviction order)
    cprio    class length (1) + class + priority key + id -> b""   (the same, per class)
    rslice   id -> priority key                                     (random-slice records)
    meta     b"format" | b"bytes" | b"pending" | b"evicted" | b"random_bytes"  -> 8-byte counters
             b"c:" + class -> count (8) + footprint (8) of the class's ranked records
             b"src:" + source -> the newest frame id of that source decided (put_many)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import lmdb

from runtime.store._codec import (
    _CHUNK_NO,
    _GARBAGE,
    _HEADER,
    _MAGIC,
    _class_prefix,
    _Corrupt,
    _decode,
    _Entry,
    _u64,
    _unpack_entry,
)
from runtime.store.record import SampleRecord

if TYPE_CHECKING:
    Txn: TypeAlias = lmdb.Transaction[bytes]


class Tables:
    """The sub-databases of one open environment (reopened with it) and the per-transaction
    steps on them. Every method takes the caller's transaction; none commits."""

    def __init__(self, env: lmdb.Environment) -> None:
        """Open (or create) the named sub-databases. Raises lmdb.Error."""
        self.records = env.open_db(b"records")
        self.prio = env.open_db(b"prio")
        self.cprio = env.open_db(b"cprio")
        self.rslice = env.open_db(b"rslice")
        self.evict = env.open_db(b"evict")
        self.meta = env.open_db(b"meta")

    # ---- counters ----------------------------------------------------------------------

    def counter(self, txn: Txn, name: bytes) -> int:
        raw = txn.get(name, db=self.meta)
        return int.from_bytes(raw[:8], "big") if raw is not None else 0

    def bump(self, txn: Txn, name: bytes, delta: int) -> None:
        if delta:
            txn.put(name, _u64(self.counter(txn, name) + delta), db=self.meta)

    def class_counts(self, txn: Txn, cls: bytes) -> tuple[int, int]:
        raw = txn.get(b"c:" + cls, db=self.meta)
        if raw is None or len(raw) != 16:
            return 0, 0
        return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")

    def bump_class(self, txn: Txn, cls: bytes, count: int, nbytes: int) -> None:
        c, b = self.class_counts(txn, cls)
        c, b = c + count, b + nbytes
        if c <= 0:
            txn.delete(b"c:" + cls, db=self.meta)
        else:
            txn.put(b"c:" + cls, _u64(c) + _u64(b), db=self.meta)

    # ---- records -----------------------------------------------------------------------

    def has(self, txn: Txn, rid: bytes) -> bool:
        """Whether a first chunk is stored under ``rid`` (indexed or not)."""
        return txn.get(rid + b"\0\0", db=self.records) is not None

    def put_chunks(self, txn: Txn, rid: bytes, chunks: list[bytes]) -> None:
        for i, chunk in enumerate(chunks):
            txn.put(rid + _CHUNK_NO.pack(i), chunk, db=self.records)

    def blob(self, txn: Txn, rid: bytes, upto: int | None = None) -> bytes:
        """The concatenated chunks of ``rid`` (the first ``upto`` bytes or more); b"" if none."""
        parts: list[bytes] = []
        got = 0
        cursor = txn.cursor(db=self.records)
        if not cursor.set_range(rid + b"\0\0"):
            return b""
        n = len(rid)
        for key, value in cursor.iternext(keys=True, values=True):
            if len(key) != n + 2 or key[:n] != rid:
                break
            if _CHUNK_NO.unpack(key[n:])[0] != len(parts):
                raise _Corrupt("a chunk is missing")
            parts.append(value)
            got += len(value)
            if upto is not None and got >= upto:
                break
        return b"".join(parts)

    def read(self, txn: Txn, rid: bytes, with_image: bool) -> SampleRecord:
        """Decode one record; raises _Corrupt."""
        first = txn.get(rid + b"\0\0", db=self.records)
        if first is None:
            raise _Corrupt("indexed but missing")
        if len(first) >= _HEADER.size:
            _m, _k, meta_len, image_len = _HEADER.unpack_from(first)
            upto = _HEADER.size + meta_len + (image_len if with_image else 0)
        else:
            upto = None
        return _decode(rid, self.blob(txn, rid, upto), with_image)

    def sweep_chunks(self, txn: Txn, rid: bytes) -> None:
        cursor = txn.cursor(db=self.records)
        if not cursor.set_range(rid + b"\0\0"):
            return
        n = len(rid)
        while True:
            k = cursor.key()
            if len(k) != n + 2 or k[:n] != rid:
                return
            if not cursor.delete():
                return

    # ---- index entries -----------------------------------------------------------------

    def entry_of(self, txn: Txn, rid: bytes) -> tuple[bytes, _Entry] | None:
        """(index key, entry) of the record stored under ``rid``, or None."""
        first = txn.get(rid + b"\0\0", db=self.records)
        if first is None:
            return None
        key: bytes | None = None
        if first is not None and len(first) >= _HEADER.size and first[:4] == _MAGIC:
            key = bytes(first[4:12]) + rid
            raw = txn.get(key, db=self.prio)
            if raw is None:
                key = None
        if key is None:  # unreadable header or lost entry: scan the index for the id
            for k in txn.cursor(db=self.prio).iternext(keys=True, values=False):
                if k[8:] == rid:
                    key = bytes(k)
                    break
            if key is None:
                return None
            raw = txn.get(key, db=self.prio)
        try:
            return key, _unpack_entry(raw if raw is not None else b"")
        except _Corrupt:
            return key, _GARBAGE

    def entry_at(self, txn: Txn, key: bytes) -> _Entry:
        raw = txn.get(key, db=self.prio)
        try:
            return _unpack_entry(raw if raw is not None else b"")
        except _Corrupt:
            return _GARBAGE

    def index(self, txn: Txn, key: bytes, entry: _Entry) -> None:
        """Index a record whose chunks are stored under ``key[8:]`` and count it."""
        rid = key[8:]
        txn.put(key, entry.pack(), db=self.prio)
        if entry.random:
            txn.put(rid, key[:8], db=self.rslice)
            self.bump(txn, b"random_bytes", entry.footprint)
        else:
            if not entry.protected:
                txn.put(_class_prefix(entry.cls) + key, b"", db=self.cprio)
                txn.put(key, b"", db=self.evict)
            self.bump_class(txn, entry.cls, 1, entry.footprint)
        self.bump(txn, b"bytes", entry.footprint)
        self.bump(txn, b"pending", int(entry.pending))

    def remove(self, txn: Txn, key: bytes, entry: _Entry) -> None:
        """Delete a record, its index entries and its share of the counters."""
        rid = key[8:]
        txn.delete(key, db=self.prio)
        self.sweep_chunks(txn, rid)
        if entry.random:
            txn.delete(rid, db=self.rslice)
            self.bump(txn, b"random_bytes", -entry.footprint)
        elif entry is not _GARBAGE:
            txn.delete(_class_prefix(entry.cls) + key, db=self.cprio)
            txn.delete(key, db=self.evict)
            self.bump_class(txn, entry.cls, -1, -entry.footprint)
        else:
            txn.delete(key, db=self.evict)
        self.bump(txn, b"bytes", -entry.footprint)
        self.bump(txn, b"pending", -int(entry.pending))
