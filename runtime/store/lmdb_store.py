"""The sample store: a bounded, ranked, crash-safe shelf of frames worth a human's time.

The device keeps at most ``max_bytes`` of samples **on disk** (LMDB, memory-mapped, one file).
When a new sample would pass the cap, the store makes room by **evicting the lowest-priority
records that are not protected**, and if the newcomer is itself worth less than everything it
could evict, it is **rejected** instead. A record that carries human feedback and has not been
uploaded yet is protected: it is never evicted. The uploader reads the best records first
(:meth:`SampleStore.top`) and :meth:`~SampleStore.release`\\ s each one only after the hub
acknowledged it.

Two more rules shape what is kept:

- **Per-class quotas** (``quotas``: final class -> :class:`ClassQuota`, ``"*"`` for every
  other class): when a ranked newcomer would put its class over its share of ``max_bytes`` or
  its count, the lowest-priority unprotected record *of that class* below the newcomer goes
  first (or the newcomer is rejected). The class is :meth:`SampleRecord.final_class`.
- **The random slice** (``random_share`` of ``max_bytes``): records flagged ``random_slice``
  were kept uniformly at random for unbiased evaluation. They live under their own budget:
  ranked newcomers never evict them, however high their priority; a random newcomer over that
  budget evicts the *oldest* random record, and may evict the lowest ranked records to claim
  its reserved share. Quotas count ranked records only.

**Disk use, not payload.** LMDB stores a large value in contiguous overflow pages; with
JPEGs of varying size, freed runs rarely fit the next value and the file grows well past the
sum of the values (measured: +6 % over the accounted pages after 20,000 evicting inserts of
15–25 KB). So a record is stored as **chunks of exactly one page** (``page size - 16`` bytes,
the last one zero-padded), which LMDB reuses from its free list without fragmentation, and the
store accounts each record's *footprint*: its chunk pages plus twice the packed size of its
leaf entries in every sub-database (B-tree pages run half to fully packed). The cap also holds
a reserve for what belongs to no record: LMDB's meta and root pages (``_FIXED_RESERVE_PAGES``)
and the pages freed by the last few write transactions, which copy-on-write cannot reuse yet
(``_LAG_TXNS`` × (the largest footprint one transaction wrote since open + the B-tree pages a
transaction copies)) — see :func:`reserve_bytes`; :meth:`SampleStore.stats` reports it.
Records are kept while the footprints sum to at most ``max_bytes - reserve``, so the data file
stays at or under ``max_bytes`` (checked by a test and by ``python -m bench --only store``).

**A full disk** (the file system fills before the store reaches ``max_bytes``): before each
write the store compares the disk's free space with what the write may need; when the disk
cannot give it ``max_bytes`` any more, the cap in force drops to what it can (the data file's
size plus the free space, less a margin), so inserts evict the lowest-priority records as at
the cap and the disk never fills under LMDB's feet; the cap comes back when the disk has room.
If something else fills the disk at once and a commit fails, nothing is written, the store
reopens LMDB (a failed commit leaves it unusable) and says "disk full" in one line — see
``_check_disk`` and ``_after_failed_write``.

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

The priority key is the IEEE-754 double mapped to 8 bytes whose byte order is the number order;
ties sort by id, which is time-ordered, so among equals the oldest is evicted first and a
newcomer beats an older record of the same priority. Eviction and quota eviction walk
``evict``/``cprio`` from the low end, which hold only records that may be evicted, so the
victims are the first keys: O(log n) to reach, O(1) per victim, whatever the number of
protected or random-slice records. Top-K walks ``prio`` from the high end (O(log n + K), plus
records of the other upload state it skips). The oldest random record is the first key of
``rslice`` (a protected one there is skipped). The entries carry everything eviction, release
and ``top`` filtering need, so none of them parses a record.

Crash safety: every change — the chunks, their index entries, the counters, the evictions that
made room — happens in **one** write transaction (:meth:`SampleStore.put_many` puts a batch in
one), and LMDB commits it durably (``sync=True``) before the method returns. A SIGKILL at any
instant leaves either the state before or the state after a call; on open, reader slots left by
a dead process are cleared. :meth:`SampleStore.check` verifies the invariants and is what the
kill -9 test runs after re-opening.

A record that cannot be decoded is skipped by walks (and counted in ``stats()["corrupt"]``),
never fatal; eviction treats it as unprotected garbage and reclaims it first among equals.
LMDB errors surface as :class:`~runtime.errors.StoreError` with a one-line message. A store
folder written by the earlier one-value-per-record layout (format 1) is moved aside to
``<folder>.format1-<unix time>`` on open, with a warning, and a fresh store is created.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from runtime.errors import StoreError
from runtime.store._codec import (
    _CHUNK_NO,
    _FLAG_PENDING,
    _FLAG_PROTECTED,
    _GARBAGE,
    _HEADER,
    _LAG_TXNS,
    _MAGIC,
    _MAX_CLASS,
    _PAGE_HEADER,
    FORMAT,
    _chunks_of,
    _class_bytes,
    _class_prefix,
    _Corrupt,
    _decode,
    _Entry,
    _flags,
    _footprint,
    _u64,
    _unpack_entry,
    decode_priority_key,
    priority_key,
    record_footprint,
    reserve_bytes,
)
from runtime.store.record import Feedback, SampleRecord

__all__ = [
    "FORMAT",
    "ClassQuota",
    "SampleStore",
    "decode_priority_key",
    "priority_key",
    "record_footprint",
    "reserve_bytes",
]

log = logging.getLogger("leanloop.store")

_CURSOR = b"src:"  # meta key prefix: source name -> newest frame id decided (put_many)
_MIB = 1 << 20

T = TypeVar("T")


@dataclass(frozen=True)
class ClassQuota:
    """Most a final class may hold: a share of ``max_bytes`` and/or a record count."""

    max_share: float | None = None
    max_count: int | None = None


class SampleStore:
    """A bounded LMDB store of :class:`SampleRecord`, ranked by priority.

    Thread-safe: writes are serialised by a lock (LMDB allows one writer), reads run in their
    own read transactions. Do not open the same ``path`` twice in one process.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        map_size: int | None = None,
        *,
        quotas: Mapping[str, ClassQuota] | None = None,
        random_share: float = 0.0,
        metasync: bool = True,
    ) -> None:
        """Open (or create) the store in the folder ``path``.

        ``max_bytes`` caps the data file (reserve included, see the module story).
        ``map_size`` is LMDB's address-space reservation (default ``2 * max_bytes + 16 MiB``);
        the file grows only as pages are used. ``quotas`` and ``random_share`` are described
        in the module story. ``metasync=False`` (LMDB ``MDB_NOMETASYNC``) syncs the disk once
        per commit instead of twice: a power cut may undo the last committed transaction but
        never corrupts the store, and a killed process loses nothing. Raises StoreError if the
        folder cannot be created or LMDB cannot open it, or on a bad quota or share.
        """
        if max_bytes <= 0:
            raise StoreError(f"sample store {path}: max_bytes must be > 0, got {max_bytes}")
        if not 0.0 <= random_share <= 1.0:
            raise StoreError(f"sample store {path}: random_share must be in [0, 1]")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.map_size = int(map_size) if map_size is not None else 2 * self.max_bytes + 16 * _MIB
        self.quotas = {k.encode()[:_MAX_CLASS]: v for k, v in (quotas or {}).items()}
        self.random_share = float(random_share)
        self.metasync = bool(metasync)
        self._lock = threading.Lock()
        self._rejected = 0
        self._duplicates = 0
        self._largest = 0  # largest footprint one write transaction stored, since open
        self._txn_bytes = 0
        self._largest_record = 0
        self._corrupt: set[str] = set()
        self._disk_cap: int | None = None  # the cap in force while the disk is full
        self._recovering = False
        self._closed = True
        self._open()
        if self._legacy():
            aside = self.path.with_name(f"{self.path.name}.format1-{int(time.time())}")
            log.warning(
                "sample store %s: written by an older layout; moved aside to %s, starting empty",
                self.path,
                aside,
            )
            self._env.close()
            try:
                os.replace(self.path, aside)
            except OSError as e:
                raise StoreError(f"sample store {self.path}: cannot move aside: {e}") from e
            self._open()
        self._run(True, "open", lambda t: t.put(b"format", _u64(FORMAT), db=self._meta))

    def _open(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(self.path),
                subdir=True,
                max_dbs=8,
                map_size=self.map_size,
                mode=0o700,
                metasync=self.metasync,
            )
            # Slots of readers that died (kill -9) would pin old pages forever: clear them.
            self._env.reader_check()
            self._records = self._env.open_db(b"records")
            self._prio = self._env.open_db(b"prio")
            self._cprio = self._env.open_db(b"cprio")
            self._rslice = self._env.open_db(b"rslice")
            self._evict = self._env.open_db(b"evict")
            self._meta = self._env.open_db(b"meta")
        except OSError as e:
            raise StoreError(f"sample store {self.path}: cannot open: {e}") from e
        except lmdb.Error as e:
            raise StoreError(f"sample store {self.path}: LMDB cannot open it: {e}") from e
        self.page_size = int(self._env.stat()["psize"])
        self._chunk_size = self.page_size - _PAGE_HEADER
        self._closed = False

    def _legacy(self) -> bool:
        def look(txn: lmdb.Transaction[bytes]) -> bool:
            fmt = txn.get(b"format", db=self._meta)
            return fmt is None and txn.stat(self._records)["entries"] > 0

        return self._run(False, "open", look)

    # ---- plumbing ----------------------------------------------------------------------

    def _run(self, write: bool, what: str, fn: Callable[[lmdb.Transaction[bytes]], T]) -> T:
        """Run ``fn`` in one transaction; commit if it returns, abort if it raises."""
        if self._closed:
            raise StoreError(f"sample store {self.path}: {what} after close")
        try:
            with self._env.begin(write=write) as txn:
                return fn(txn)
        except lmdb.MapFullError as e:
            raise StoreError(
                f"sample store {self.path}: {what}: LMDB map full ({self.map_size} bytes); "
                "raise map_size or lower max_bytes"
            ) from e
        except lmdb.Error as e:
            note = self._after_failed_write(e) if write else None
            raise StoreError(
                f"sample store {self.path}: {what}: {note or f'LMDB error: {e}'}"
            ) from e

    # ---- a full disk -------------------------------------------------------------------

    def _cap(self) -> int:
        """The cap in force: ``max_bytes``, or the data file's size while the disk is full."""
        return self.max_bytes if self._disk_cap is None else min(self.max_bytes, self._disk_cap)

    def _disk_room(self) -> tuple[int, int] | None:
        """(bytes free on the store's file system, size of the data file), or None."""
        try:
            st = os.statvfs(self.path)
            size = (self.path / "data.mdb").stat().st_size
        except OSError:
            return None
        return st.f_bavail * st.f_frsize, size

    def _after_failed_write(self, error: lmdb.Error) -> str | None:
        """After a failed write transaction: reopen LMDB (a commit that could not write its
        pages — ENOSPC surfaces as EIO — leaves the environment unusable; the last committed
        state is intact) and say whether the disk is full. Returns what to tell the operator, or
        None."""
        if self._recovering:
            return None
        self._recovering = True
        try:
            try:
                self._env.close()
                self._open()
            except StoreError as e:
                return f"LMDB error: {error}; reopening failed: {e}"
            self._check_disk()
            room = self._disk_room()
            if room is None or self._disk_cap is None:
                return None  # not a full disk
            evicted = self._shrink()
            return (
                f"disk full ({room[0]} bytes free): nothing was written; the store now keeps "
                f"within {self._disk_cap} bytes ({evicted} lowest-priority samples evicted to "
                "make room), until the disk has room"
            )
        finally:
            self._recovering = False

    def _shrink(self) -> int:
        """Evict the lowest unprotected ranked records down to the cap in force, in a
        transaction of its own (an insert that must evict *and* take new pages cannot get them
        from what it frees itself), then commit ``_LAG_TXNS`` empty-ish transactions so the
        freed pages can be reused. Returns how many were evicted (0 if that failed too: the
        next failed write tries again)."""
        budget = self._cap() - reserve_bytes(self._largest, self.page_size)

        def drop(txn: lmdb.Transaction[bytes]) -> int:
            used = self._counter(txn, b"bytes")
            victims: list[tuple[bytes, _Entry]] = []
            cursor = txn.cursor(db=self._evict)
            if cursor.first():
                for k in cursor.iternext(keys=True, values=False):
                    if used <= budget:
                        break
                    entry = self._entry_at(txn, bytes(k))
                    victims.append((bytes(k), entry))
                    used -= entry.footprint
            for key, entry in victims:
                self._remove(txn, key, entry)
            self._bump(txn, b"evicted", len(victims))
            return len(victims)

        try:
            n = self._run(True, "make room on a full disk", drop)
            for _ in range(_LAG_TXNS):
                self._run(True, "make room on a full disk", lambda t: self._bump(t, b"full", 1))
        except StoreError as e:
            log.warning("sample store %s: %s", self.path, e)
            with contextlib.suppress(StoreError, lmdb.Error):
                self._env.close()
                self._open()  # that failure left LMDB unusable too
            return 0
        return n

    def _check_disk(self, writing: int = 0) -> None:
        """Before a write: keep the store within what the disk can still give it.

        The data file may grow to ``size + free - need`` (``need``: the reserve plus this
        write's ``writing`` bytes, kept free for LMDB's copy-on-write pages), so while that is
        below ``max_bytes`` it is the cap in force: inserts evict the lowest-priority
        unprotected records exactly as at the cap, and the kernel never has to say ENOSPC
        unless something else fills the disk at once. A statvfs per write transaction.
        """
        room = self._disk_room()
        if room is None:
            return
        free, size = room
        need = reserve_bytes(max(self._largest, self._largest_record), self.page_size) + writing
        limit = size + free - need
        if limit >= self.max_bytes:
            if self._disk_cap is not None:
                log.warning(
                    "sample store %s: the disk has room again: cap back to max_bytes", self.path
                )
            self._disk_cap = None
            return
        if self._disk_cap is None:
            log.warning(
                "sample store %s: disk nearly full (%d bytes free): keeping within %d bytes "
                "instead of max_bytes %d, lowest priority out first",
                self.path,
                free,
                max(0, limit),
                self.max_bytes,
            )
        self._disk_cap = max(0, limit)

    def _counter(self, txn: lmdb.Transaction[bytes], name: bytes) -> int:
        raw = txn.get(name, db=self._meta)
        return int.from_bytes(raw[:8], "big") if raw is not None else 0

    def _bump(self, txn: lmdb.Transaction[bytes], name: bytes, delta: int) -> None:
        if delta:
            txn.put(name, _u64(self._counter(txn, name) + delta), db=self._meta)

    def _class_counts(self, txn: lmdb.Transaction[bytes], cls: bytes) -> tuple[int, int]:
        raw = txn.get(b"c:" + cls, db=self._meta)
        if raw is None or len(raw) != 16:
            return 0, 0
        return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")

    def _bump_class(
        self, txn: lmdb.Transaction[bytes], cls: bytes, count: int, nbytes: int
    ) -> None:
        c, b = self._class_counts(txn, cls)
        c, b = c + count, b + nbytes
        if c <= 0:
            txn.delete(b"c:" + cls, db=self._meta)
        else:
            txn.put(b"c:" + cls, _u64(c) + _u64(b), db=self._meta)

    def _note_corrupt(self, rid: bytes, why: str) -> None:
        sid = rid.decode(errors="replace")
        if sid not in self._corrupt:
            self._corrupt.add(sid)
            log.warning("sample store %s: record %s is corrupt (%s); skipped", self.path, sid, why)

    def _chunk_key(self, rid: bytes, n: int) -> bytes:
        return rid + _CHUNK_NO.pack(n)

    def _blob(self, txn: lmdb.Transaction[bytes], rid: bytes, upto: int | None = None) -> bytes:
        """The concatenated chunks of ``rid`` (the first ``upto`` bytes or more); b"" if none."""
        parts: list[bytes] = []
        got = 0
        cursor = txn.cursor(db=self._records)
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

    def _read(self, txn: lmdb.Transaction[bytes], rid: bytes, with_image: bool) -> SampleRecord:
        """Decode one record; raises _Corrupt."""
        first = txn.get(rid + b"\0\0", db=self._records)
        if first is None:
            raise _Corrupt("indexed but missing")
        if len(first) >= _HEADER.size:
            _m, _k, meta_len, image_len = _HEADER.unpack_from(first)
            upto = _HEADER.size + meta_len + (image_len if with_image else 0)
        else:
            upto = None
        return _decode(rid, self._blob(txn, rid, upto), with_image)

    def _entry_of(self, txn: lmdb.Transaction[bytes], rid: bytes) -> tuple[bytes, _Entry] | None:
        """(index key, entry) of the record stored under ``rid``, or None."""
        first = txn.get(rid + b"\0\0", db=self._records)
        if first is None:
            return None
        key: bytes | None = None
        if first is not None and len(first) >= _HEADER.size and first[:4] == _MAGIC:
            key = bytes(first[4:12]) + rid
            raw = txn.get(key, db=self._prio)
            if raw is None:
                key = None
        if key is None:  # unreadable header or lost entry: scan the index for the id
            for k in txn.cursor(db=self._prio).iternext(keys=True, values=False):
                if k[8:] == rid:
                    key = bytes(k)
                    break
            if key is None:
                return None
            raw = txn.get(key, db=self._prio)
        try:
            return key, _unpack_entry(raw if raw is not None else b"")
        except _Corrupt:
            return key, _GARBAGE

    def _entry_at(self, txn: lmdb.Transaction[bytes], key: bytes) -> _Entry:
        raw = txn.get(key, db=self._prio)
        try:
            return _unpack_entry(raw if raw is not None else b"")
        except _Corrupt:
            return _GARBAGE

    def _sweep_chunks(self, txn: lmdb.Transaction[bytes], rid: bytes) -> None:
        cursor = txn.cursor(db=self._records)
        if not cursor.set_range(rid + b"\0\0"):
            return
        n = len(rid)
        while True:
            k = cursor.key()
            if len(k) != n + 2 or k[:n] != rid:
                return
            if not cursor.delete():
                return

    def _remove(self, txn: lmdb.Transaction[bytes], key: bytes, entry: _Entry) -> None:
        """Delete a record, its index entries and its share of the counters."""
        rid = key[8:]
        txn.delete(key, db=self._prio)
        self._sweep_chunks(txn, rid)
        if entry.random:
            txn.delete(rid, db=self._rslice)
            self._bump(txn, b"random_bytes", -entry.footprint)
        elif entry is not _GARBAGE:
            txn.delete(_class_prefix(entry.cls) + key, db=self._cprio)
            txn.delete(key, db=self._evict)
            self._bump_class(txn, entry.cls, -1, -entry.footprint)
        else:
            txn.delete(key, db=self._evict)
        self._bump(txn, b"bytes", -entry.footprint)
        self._bump(txn, b"pending", -int(entry.pending))

    def _quota_for(self, cls: bytes) -> ClassQuota | None:
        return self.quotas.get(cls, self.quotas.get(b"*"))

    def _write_record(
        self, txn: lmdb.Transaction[bytes], record: SampleRecord, below: bytes | None
    ) -> bool:
        """Store ``record`` (replacing one with the same id), evicting as needed. False: no room.

        ``below`` None marks a protected write (feedback): it is never refused for a quota and
        may evict any unprotected record; otherwise only records whose index key is below
        ``below`` may go (random-slice newcomers: see the module story).
        """
        if not math.isfinite(record.priority):
            raise StoreError(f"sample {record.id}: priority must be finite, got {record.priority}")
        rid = record.id.encode()
        chunks = _chunks_of(record, self._chunk_size)
        if len(chunks) > 0xFFFF:
            return False
        cls = _class_bytes(record)
        rnd = record.random_slice
        fp = _footprint(len(rid), len(chunks), len(cls), rnd, self.page_size)
        budget = self._cap() - reserve_bytes(
            max(self._largest, self._txn_bytes + fp), self.page_size
        )
        if fp > budget:
            return False
        old = self._entry_of(txn, rid)
        old_key, old_entry = old if old is not None else (None, None)
        victims: dict[bytes, _Entry] = {}
        freed = 0

        def walk(
            db: Any,
            prefix: bytes,
            need: Callable[[], bool],
            ok: Callable[[_Entry], bool],
            limit: bytes | None,
        ) -> bool:
            """Take victims from ``db`` in key order until ``need()`` is False."""
            nonlocal freed
            if not need():
                return True
            cursor = txn.cursor(db=db)
            if prefix and not cursor.set_range(prefix):
                return False
            if not prefix and not cursor.first():
                return False
            for k in cursor.iternext(keys=True, values=False):
                if prefix and not k.startswith(prefix):
                    return False
                if db is self._rslice:
                    pk = txn.get(k, db=self._rslice)
                    key = bytes(pk[:8]) + bytes(k) if pk is not None else b"\0" * 8 + bytes(k)
                else:
                    key = bytes(k[len(prefix) :])
                    if limit is not None and key >= limit:
                        return False
                if key[8:] == rid or key in victims:
                    continue
                entry = self._entry_at(txn, key)
                if entry.protected or not ok(entry):
                    continue
                victims[key] = entry
                freed += entry.footprint
                if not need():
                    return True
            return False

        if rnd:
            share = int(self.random_share * self.max_bytes)
            rused = self._counter(txn, b"random_bytes")
            if old_entry is not None and old_entry.random:
                rused -= old_entry.footprint

            def over_random() -> bool:
                return rused + fp - sum(e.footprint for e in victims.values()) > share

            if not walk(self._rslice, b"", over_random, lambda e: e.random, None):
                return False
        elif below is not None:
            quota = self._quota_for(cls)
            if quota is not None:
                count, cbytes = self._class_counts(txn, cls)
                if old_entry is not None and not old_entry.random and old_entry.cls == cls:
                    count, cbytes = count - 1, cbytes - old_entry.footprint
                cap_b = quota.max_share * self.max_bytes if quota.max_share is not None else None
                cap_n = quota.max_count

                def over_quota() -> bool:
                    gone = [e for e in victims.values()]
                    n = count + 1 - len(gone)
                    b = cbytes + fp - sum(e.footprint for e in gone)
                    return (cap_n is not None and n > cap_n) or (cap_b is not None and b > cap_b)

                if not walk(self._cprio, _class_prefix(cls), over_quota, lambda e: True, below):
                    return False
        used = self._counter(txn, b"bytes") - (old_entry.footprint if old_entry else 0)

        def over_cap() -> bool:
            return used + fp - freed > budget

        # ``evict`` holds exactly the unprotected ranked records, so this walk skips nothing.
        # A random newcomer claims its reserved share from them whatever their priority.
        anything: Callable[[_Entry], bool] = lambda e: True  # noqa: E731
        limit = None if rnd or below is None else below
        if not walk(self._evict, b"", over_cap, anything, limit):
            if below is not None or rnd:
                return False
            # Feedback: the random slice's unprotected records may go too, oldest first.
            if not walk(self._rslice, b"", over_cap, lambda e: e.random, None):
                return False
        for key, entry in victims.items():
            self._remove(txn, key, entry)
        self._bump(txn, b"evicted", len(victims))
        if old_key is not None and old_entry is not None:
            self._remove(txn, old_key, old_entry)
        else:
            self._sweep_chunks(txn, rid)  # leftovers of an unindexed record with this id
        for i, chunk in enumerate(chunks):
            txn.put(self._chunk_key(rid, i), chunk, db=self._records)
        key = priority_key(record.priority) + rid
        entry = _Entry(_flags(record), len(chunks), fp, cls)
        txn.put(key, entry.pack(), db=self._prio)
        if rnd:
            txn.put(rid, key[:8], db=self._rslice)
            self._bump(txn, b"random_bytes", fp)
        else:
            if not entry.protected:
                txn.put(_class_prefix(cls) + key, b"", db=self._cprio)
                txn.put(key, b"", db=self._evict)
            self._bump_class(txn, cls, 1, fp)
        self._bump(txn, b"bytes", fp)
        self._bump(txn, b"pending", int(entry.pending))
        self._txn_bytes += fp
        self._largest_record = max(self._largest_record, fp)
        if victims:
            log.debug("sample store: evicted %d record(s) for %s", len(victims), record.id)
        return True

    # ---- public API --------------------------------------------------------------------

    def put(self, record: SampleRecord) -> bool:
        """Store ``record`` durably; False if it was rejected as worth less than what is kept.

        A record with the same id is replaced. To fit under the cap (and its class quota, or
        the random slice's share) the lowest-priority unprotected records *below* the newcomer
        are evicted, in the same transaction. Raises StoreError on an LMDB failure or a
        non-finite priority (nothing is changed).
        """
        return self.put_many([record])[0]

    def put_many(
        self,
        records: Sequence[SampleRecord],
        source: str | None = None,
        through: str | None = None,
    ) -> list[bool]:
        """:meth:`put` each record, in order, in **one** durable transaction (one disk sync).

        **The source cursor travels with the records.** ``source`` names the frame source and
        ``through`` the newest frame id of it the caller has decided about (stored or not):
        the store keeps the highest such id per source (:meth:`source_cursor`) in the same
        transaction, so after a crash the source resumes after it — exactly where the records
        stop, never behind them. A *new* record (an id not stored) of a frame at or before the
        cursor is refused (False, counted ``duplicates``): that frame was decided before, and a
        source that reads it again must not make a second record of it. Frame ids of one
        source sort in the order it reads them (file names, frame numbers, capture times);
        shadow copies (``prediction["shadow"]``) are a second look at a frame the store may
        not hold yet and are not refused.

        Returns one acceptance flag per record. Raises StoreError (nothing of the batch is
        changed) on an LMDB failure or a non-finite priority.
        """
        ckey = _CURSOR + source.encode() if source is not None else None

        def write(txn: lmdb.Transaction[bytes]) -> list[bool]:
            self._txn_bytes = 0
            out = []
            floor = txn.get(ckey, db=self._meta) if ckey is not None else None
            for r in records:
                if (
                    floor is not None
                    and r.frame_id.encode() <= bytes(floor)
                    and not r.prediction.get("shadow")
                    and txn.get(r.id.encode() + b"\0\0", db=self._records) is None
                ):
                    self._duplicates += 1
                    out.append(False)
                    continue
                below = (
                    priority_key(r.priority) + r.id.encode() if math.isfinite(r.priority) else None
                )
                out.append(self._write_record(txn, r, below))
            if ckey is not None and through is not None:
                new = through.encode()
                if floor is None or new > bytes(floor):
                    txn.put(ckey, new, db=self._meta)
            return out

        if not records and through is None:
            return []
        with self._lock:
            self._check_disk(sum(len(r.image) for r in records))
            done = self._run(True, f"put {records[0].id}", write)
            self._largest = max(self._largest, self._txn_bytes)
            self._rejected += done.count(False)
            return done

    def source_cursor(self, source: str) -> str | None:
        """The newest frame id of ``source`` decided in a committed transaction (see
        :meth:`put_many`), or None."""
        key = _CURSOR + source.encode()

        def read(txn: lmdb.Transaction[bytes]) -> str | None:
            raw = txn.get(key, db=self._meta)
            return None if raw is None else bytes(raw).decode(errors="replace")

        return self._run(False, "source cursor", read)

    def ids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to ``limit`` ids of stored records that start with ``prefix`` (in id order), so
        an operator may type any unique prefix of an id."""
        want = prefix.encode()

        def read(txn: lmdb.Transaction[bytes]) -> list[str]:
            out: list[str] = []
            cursor = txn.cursor(db=self._records)
            if not want or not cursor.set_range(want):
                return out
            for key in cursor.iternext(keys=True, values=False):
                k = bytes(key)
                if not k.startswith(want):
                    break
                rid = k[:-2].decode(errors="replace")  # id + 2-byte chunk number
                if not out or out[-1] != rid:
                    out.append(rid)
                    if len(out) >= limit:
                        break
            return out

        return self._run(False, f"ids {prefix}", read)

    def get(self, sample_id: str) -> SampleRecord | None:
        """The record with this id, or None. Raises StoreError if it is stored but corrupt."""
        rid = sample_id.encode()

        def read(txn: lmdb.Transaction[bytes]) -> SampleRecord | None:
            if txn.get(rid + b"\0\0", db=self._records) is None:
                return None
            try:
                return self._read(txn, rid, with_image=True)
            except _Corrupt as e:
                self._note_corrupt(rid, str(e))
                raise StoreError(
                    f"sample store {self.path}: record {sample_id} is corrupt: {e}"
                ) from e

        return self._run(False, f"get {sample_id}", read)

    def top(
        self, n: int, state: str | None = "pending", *, with_image: bool = True
    ) -> list[SampleRecord]:
        """Up to ``n`` records, highest priority first, whose ``upload_state`` is ``state``
        (None: any). ``with_image=False`` leaves ``image`` empty (listing, no copy of the
        pictures). Corrupt records are skipped and counted. Raises StoreError."""

        def walk(txn: lmdb.Transaction[bytes]) -> list[SampleRecord]:
            out: list[SampleRecord] = []
            if n <= 0:
                return out
            for key, raw in txn.cursor(db=self._prio).iterprev(keys=True, values=True):
                rid = key[8:]
                if (
                    state in ("pending", "uploaded")
                    and len(raw) >= 1
                    and bool(raw[0] & _FLAG_PENDING) != (state == "pending")
                ):
                    continue
                try:
                    rec = self._read(txn, rid, with_image)
                except _Corrupt as e:
                    self._note_corrupt(rid, str(e))
                    continue
                if state is None or rec.upload_state == state:
                    out.append(rec)
                    if len(out) >= n:
                        break
            return out

        return self._run(False, "top", walk)

    def floor(self) -> float | None:
        """The priority a ranked newcomer must beat to get in, or None while there is room.

        "Room" is judged against the largest record written since open, and the floor is the
        lowest unprotected ranked record's priority (ignoring quotas) — an estimate the writer
        uses to skip encoding frames the store would reject anyway; :meth:`put` decides.
        O(log n). Raises StoreError.
        """
        if self._largest_record == 0:
            return None
        budget = self._cap() - reserve_bytes(self._largest, self.page_size)

        def look(txn: lmdb.Transaction[bytes]) -> float | None:
            if self._counter(txn, b"bytes") + self._largest_record <= budget:
                return None
            cursor = txn.cursor(db=self._evict)
            return decode_priority_key(cursor.key()) if cursor.first() else None

        return self._run(False, "floor", look)

    def ranked(self, n: int, state: str | None = "pending") -> list[tuple[str, float]]:
        """``(id, priority)`` of the ``n`` best records whose ``upload_state`` is ``state``
        ("pending", "uploaded" or None: any), best first, read from the priority index alone:
        no record is decoded, so it costs O(log n + n) cursor steps. Raises StoreError."""
        if state not in (None, "pending", "uploaded"):
            raise StoreError(f"sample store {self.path}: unknown upload state {state!r}")

        def walk(txn: lmdb.Transaction[bytes]) -> list[tuple[str, float]]:
            out: list[tuple[str, float]] = []
            if n <= 0:
                return out
            for key, raw in txn.cursor(db=self._prio).iterprev(keys=True, values=True):
                if state is not None and bool(raw[:1] and raw[0] & _FLAG_PENDING) != (
                    state == "pending"
                ):
                    continue
                out.append((bytes(key[8:]).decode(errors="replace"), decode_priority_key(key)))
                if len(out) >= n:
                    break
            return out

        return self._run(False, "ranked", walk)

    def set_feedback(self, sample_id: str, feedback: Feedback) -> SampleRecord:
        """Attach a human's feedback; the record becomes protected and top priority.

        The first feedback lifts the priority to ``1 + old`` (above every scored record, whose
        priority is at most 1); later feedback replaces the earlier one and keeps the priority.
        A correction may move the record to another class (quotas are not enforced against
        feedback). Raises StoreError if the id is unknown or corrupt, or if the store is so
        full of protected records that the slightly larger record cannot be kept.
        """
        rid = sample_id.encode()

        def change(txn: lmdb.Transaction[bytes]) -> SampleRecord:
            if txn.get(rid + b"\0\0", db=self._records) is None:
                raise StoreError(f"sample store {self.path}: no sample {sample_id}")
            try:
                old = self._read(txn, rid, with_image=True)
            except _Corrupt as e:
                self._note_corrupt(rid, str(e))
                raise StoreError(
                    f"sample store {self.path}: record {sample_id} is corrupt: {e}"
                ) from e
            priority = old.priority if old.feedback is not None else 1.0 + old.priority
            new = replace(old, feedback=feedback, priority=priority)
            self._txn_bytes = 0
            if not self._write_record(txn, new, below=None):
                raise StoreError(
                    f"sample store {self.path}: no room to keep feedback on {sample_id}: "
                    "the store is full of protected samples; upload them or raise max_bytes"
                )
            return new

        with self._lock:
            return self._run(True, f"feedback on {sample_id}", change)

    def rewrite(
        self, sample_id: str, fn: Callable[[SampleRecord], SampleRecord | None]
    ) -> SampleRecord | None:
        """Replace a record by ``fn(record)`` in one transaction (``fn`` returns None: keep it
        as it is). Used to remap labels after an ontology change; the id and priority must
        stay. Like feedback, the write is protected from quotas. Returns the new record, or None
        when the id is unknown or nothing changed. Raises StoreError (nothing changed)."""
        rid = sample_id.encode()

        def change(txn: lmdb.Transaction[bytes]) -> SampleRecord | None:
            if txn.get(rid + b"\0\0", db=self._records) is None:
                return None
            try:
                old = self._read(txn, rid, with_image=True)
            except _Corrupt as e:
                self._note_corrupt(rid, str(e))
                return None
            new = fn(old)
            if new is None:
                return None
            if new.id != old.id or new.priority != old.priority:
                raise StoreError(f"sample store {self.path}: a rewrite changed id or priority")
            self._txn_bytes = 0
            if not self._write_record(txn, new, below=None):
                raise StoreError(f"sample store {self.path}: no room to rewrite {sample_id}")
            return new

        with self._lock:
            return self._run(True, f"rewrite {sample_id}", change)

    def release(
        self, ids: Iterable[str], *, expected_priority: Mapping[str, float] | None = None
    ) -> int:
        """Delete records the hub has acknowledged; unknown ids are ignored (idempotent).

        With ``expected_priority``, a record whose priority changed since it was read (feedback
        arrived meanwhile) is kept, so the newer version is uploaded next cycle. Returns how
        many records were deleted. Raises StoreError.
        """
        wanted = list(ids)

        def drop(txn: lmdb.Transaction[bytes]) -> int:
            n = 0
            for sid in wanted:
                rid = sid.encode()
                found = self._entry_of(txn, rid)
                if found is None:
                    if txn.get(rid + b"\0\0", db=self._records) is not None:
                        self._sweep_chunks(txn, rid)  # unindexed leftovers
                        n += 1
                    continue
                key, entry = found
                expected = expected_priority.get(sid) if expected_priority is not None else None
                if expected is not None and key[:8] != priority_key(expected):
                    continue  # changed since it was sent (feedback): keep it for the next cycle
                self._remove(txn, key, entry)
                n += 1
            return n

        with self._lock:
            return self._run(True, "release", drop)

    def stats(self) -> dict[str, int]:
        """``count``, ``bytes`` (sum of record footprints), ``pending``, ``evicted``,
        ``random`` and ``random_bytes`` (the random slice) — all persisted; ``rejected`` and
        ``corrupt`` (since this process opened the store — persisting a refusal would cost a
        disk sync per refused frame); ``max_bytes``, ``map_size``, ``page_size``, ``reserve``
        (the part of max_bytes no record may use, now), ``disk_bytes`` (size of the LMDB
        data file) and ``cap`` (max_bytes, or less while the disk is full)."""

        def read(txn: lmdb.Transaction[bytes]) -> dict[str, int]:
            return {
                "count": txn.stat(self._prio)["entries"],
                "bytes": self._counter(txn, b"bytes"),
                "pending": self._counter(txn, b"pending"),
                "evicted": self._counter(txn, b"evicted"),
                "random": txn.stat(self._rslice)["entries"],
                "random_bytes": self._counter(txn, b"random_bytes"),
            }

        out = self._run(False, "stats", read)
        try:
            disk = (self.path / "data.mdb").stat().st_size
        except OSError:
            disk = 0
        out.update(
            rejected=self._rejected,
            duplicates=self._duplicates,
            corrupt=len(self._corrupt),
            max_bytes=self.max_bytes,
            map_size=self.map_size,
            page_size=self.page_size,
            reserve=reserve_bytes(self._largest, self.page_size),
            disk_bytes=disk,
            cap=self._cap(),
        )
        return out

    def class_stats(self) -> dict[str, dict[str, int]]:
        """Per final class of the ranked records: ``count`` and ``bytes`` (footprints)."""

        def read(txn: lmdb.Transaction[bytes]) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            cursor = txn.cursor(db=self._meta)
            if not cursor.set_range(b"c:"):
                return out
            for k, v in cursor.iternext(keys=True, values=True):
                if not k.startswith(b"c:"):
                    break
                out[k[2:].decode(errors="replace")] = {
                    "count": int.from_bytes(v[:8], "big"),
                    "bytes": int.from_bytes(v[8:16], "big"),
                }
            return out

        return self._run(False, "class stats", read)

    def check(self) -> list[str]:
        """Verify the invariants; returns one line per problem (empty: consistent).

        Every record decodes and is indexed exactly once under its own priority with the
        entry its meta implies, in ``cprio`` (ranked) or ``rslice`` (random slice); every index
        entry points at a record; the counters equal the sums over the records; ``bytes`` is
        at most ``max_bytes``. Raises StoreError on an LMDB failure.
        """

        def scan(txn: lmdb.Transaction[bytes]) -> list[str]:
            problems: list[str] = []
            ids: list[bytes] = []
            for k in txn.cursor(db=self._records).iternext(keys=True, values=False):
                rid = bytes(k[:-2])
                if not ids or ids[-1] != rid:
                    ids.append(rid)
            want_prio: dict[bytes, bytes] = {}
            want_cprio: set[bytes] = set()
            want_evict: set[bytes] = set()
            want_rslice: dict[bytes, bytes] = {}
            total = pending = rbytes = 0
            classes: dict[bytes, list[int]] = {}
            for rid in ids:
                try:
                    rec = self._read(txn, rid, with_image=True)
                    nchunks = len(_chunks_of(rec, self._chunk_size))
                    stored = len(self._blob(txn, rid)) // self._chunk_size
                    if stored != nchunks:
                        raise _Corrupt(f"{stored} chunks stored, {nchunks} expected")
                except _Corrupt as e:
                    problems.append(f"record {rid.decode(errors='replace')}: {e}")
                    continue
                cls = _class_bytes(rec)
                fp = _footprint(len(rid), nchunks, len(cls), rec.random_slice, self.page_size)
                key = priority_key(rec.priority) + rid
                want_prio[key] = _Entry(_flags(rec), nchunks, fp, cls).pack()
                total += fp
                pending += rec.upload_state == "pending"
                if rec.random_slice:
                    want_rslice[rid] = key[:8]
                    rbytes += fp
                else:
                    if not (_flags(rec) & _FLAG_PROTECTED):
                        want_cprio.add(_class_prefix(cls) + key)
                        want_evict.add(key)
                    c = classes.setdefault(cls, [0, 0])
                    c[0] += 1
                    c[1] += fp
            prio = dict(txn.cursor(db=self._prio).iternext(keys=True, values=True))
            for key in sorted(set(want_prio) - set(prio)):
                problems.append(f"record {key[8:].decode()}: not in the priority index")
            for key in sorted(set(prio) - set(want_prio)):
                problems.append(f"index entry {key[8:].decode(errors='replace')}: no such record")
            for key in sorted(set(prio) & set(want_prio)):
                if prio[key] != want_prio[key]:
                    problems.append(f"record {key[8:].decode()}: index entry disagrees with it")
            cprio = set(txn.cursor(db=self._cprio).iternext(keys=True, values=False))
            if cprio != want_cprio:
                problems.append(f"class index: {len(cprio ^ want_cprio)} entries differ")
            evict = set(txn.cursor(db=self._evict).iternext(keys=True, values=False))
            if evict != want_evict:
                problems.append(f"eviction index: {len(evict ^ want_evict)} entries differ")
            rslice = dict(txn.cursor(db=self._rslice).iternext(keys=True, values=True))
            if rslice != want_rslice:
                problems.append("random-slice index disagrees with the records")
            for name, value in (
                (b"bytes", total),
                (b"pending", pending),
                (b"random_bytes", rbytes),
            ):
                counted = self._counter(txn, name)
                if counted != value:
                    problems.append(f"{name.decode()} counter {counted} != sum {value}")
            for cls, (n, b) in classes.items():
                if self._class_counts(txn, cls) != (n, b):
                    problems.append(f"class {cls.decode(errors='replace')!r}: counters disagree")
            cursor = txn.cursor(db=self._meta)
            if cursor.set_range(b"c:"):
                for k in cursor.iternext(keys=True, values=False):
                    if not k.startswith(b"c:"):
                        break
                    if bytes(k[2:]) not in classes:
                        problems.append(f"class {k[2:].decode(errors='replace')!r}: stale counter")
            if total > self.max_bytes:
                problems.append(f"{total} bytes stored, above max_bytes {self.max_bytes}")
            return problems

        return self._run(False, "check", scan)

    def close(self) -> None:
        """Close the environment; later calls raise StoreError. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._env.close()

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def feedback_records(self) -> list[SampleRecord]:
        """Every stored record that carries feedback and is not uploaded yet (for the feedback
        metrics), without images.

        Walks the priority index and decodes only the protected entries. Corrupt records are
        skipped. Raises StoreError.
        """

        def walk(txn: lmdb.Transaction[bytes]) -> list[SampleRecord]:
            out: list[SampleRecord] = []
            for key, raw in txn.cursor(db=self._prio).iternext(keys=True, values=True):
                try:
                    if not _unpack_entry(bytes(raw)).protected:
                        continue
                    rec = self._read(txn, bytes(key[8:]), with_image=False)
                except _Corrupt:
                    continue
                if rec.feedback is not None:
                    out.append(rec)
            return out

        return self._run(False, "feedback records", walk)
