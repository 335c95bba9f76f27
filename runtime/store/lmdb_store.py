"""The sample store: a bounded, ranked, crash-safe shelf of frames worth a human's time.

The device keeps at most ``max_bytes`` of samples on its own disk (LMDB, memory-mapped, one
file). When a new sample would pass the cap, the store makes room by **evicting the
lowest-priority records that are not protected**, and if the newcomer is itself worth less than
everything it could evict, it is **rejected** instead. A record that carries human feedback and
has not been uploaded yet is protected: it is never evicted. The uploader reads the best
records first (:meth:`SampleStore.top`) and :meth:`~SampleStore.release`\\ s each one only after
the hub acknowledged it.

Layout (one LMDB environment, three named sub-databases)::

    records  id -> value   value = header | meta JSON | image bytes
                           header = b"LLS1", flags (1 byte: bit 0 protected, bit 1 pending),
                                    priority key (8 bytes), meta length (4 bytes, big-endian)
    prio     priority key + id -> b""      (sorted: lowest first, so eviction and top-K are
                                            cursor walks from either end, O(log n) to reach)
    meta     b"bytes" | b"pending" | b"evicted" -> 8-byte big-endian counters

The priority key is the IEEE-754 double mapped to 8 bytes whose byte order is the number order;
ties sort by id, which is time-ordered, so among equals the oldest is evicted first and a
newcomer beats an older record of the same priority. The header repeats the priority key and
the protected and pending flags so eviction and release never parse JSON.

Crash safety: every change — the record, its index entry, the byte and pending counters, the
evictions that made room — happens in **one** write transaction, and LMDB commits it durably
(``sync=True``) before the method returns. A SIGKILL at any instant leaves either the state
before or the state after a call; on open, reader slots left by a dead process are cleared.
:meth:`SampleStore.check` verifies the invariants (every record indexed once, counters equal to
the sums) and is what the kill -9 test runs after re-opening.

A record that cannot be decoded is skipped by walks (and counted in ``stats()["corrupt"]``),
never fatal; eviction treats it as unprotected garbage and reclaims it first among equals.
LMDB errors surface as :class:`~runtime.errors.StoreError` with a one-line message.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from runtime.errors import StoreError
from runtime.store.record import Feedback, SampleRecord

__all__ = ["SampleStore", "decode_priority_key", "priority_key"]

log = logging.getLogger("leanloop.store")

_MAGIC = b"LLS1"
_HEADER = struct.Struct(">4sB8sI")  # magic, flags, priority key, meta length
_FLAG_PROTECTED = 0x01
_FLAG_PENDING = 0x02
_MIB = 1 << 20
_COUNTERS = (b"bytes", b"pending", b"evicted")
_SIGN = 1 << 63
_ALL = (1 << 64) - 1

T = TypeVar("T")


def priority_key(priority: float) -> bytes:
    """8 bytes whose lexicographic order is the numeric order of ``priority`` (finite)."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", priority + 0.0))  # + 0.0: -0.0 -> 0.0
    bits = bits ^ _ALL if bits & _SIGN else bits | _SIGN
    return bits.to_bytes(8, "big")


def decode_priority_key(key: bytes) -> float:
    """Inverse of :func:`priority_key` (reads the first 8 bytes)."""
    bits = int.from_bytes(key[:8], "big")
    bits = bits ^ _SIGN if bits & _SIGN else bits ^ _ALL
    (value,) = struct.unpack(">d", struct.pack(">Q", bits))
    return float(value)


@dataclass(frozen=True)
class _Header:
    protected: bool
    pending: bool
    pkey: bytes  # 8-byte priority key
    meta_len: int


class _Corrupt(Exception):
    """A stored value does not decode; the message says why."""


def _is_protected(record: SampleRecord) -> bool:
    return record.feedback is not None and record.upload_state != "uploaded"


def _encode(record: SampleRecord) -> bytes:
    meta = json.dumps(record.to_meta(), separators=(",", ":")).encode()
    flags = (_FLAG_PROTECTED if _is_protected(record) else 0) | (
        _FLAG_PENDING if record.upload_state == "pending" else 0
    )
    return (
        _HEADER.pack(_MAGIC, flags, priority_key(record.priority), len(meta))
        + meta
        + bytes(record.image)
    )


def _header(raw: bytes) -> _Header:
    if len(raw) < _HEADER.size:
        raise _Corrupt("shorter than its header")
    magic, flags, pkey, meta_len = _HEADER.unpack_from(raw)
    if magic != _MAGIC:
        raise _Corrupt("bad magic")
    if _HEADER.size + meta_len > len(raw):
        raise _Corrupt("meta length past the end")
    return _Header(
        bool(flags & _FLAG_PROTECTED), bool(flags & _FLAG_PENDING), bytes(pkey), int(meta_len)
    )


def _decode(rid: bytes, raw: bytes) -> SampleRecord:
    h = _header(raw)
    start = _HEADER.size
    try:
        meta = json.loads(raw[start : start + h.meta_len])
        image = bytes(raw[start + h.meta_len :])
        record = SampleRecord.from_meta(meta, image)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _Corrupt(f"meta does not decode ({type(e).__name__})") from e
    if record.id.encode() != rid:
        raise _Corrupt("id does not match its key")
    if int(meta.get("image_size", len(image))) != len(image):
        raise _Corrupt("image size does not match")
    return record


def _u64(v: int) -> bytes:
    return max(0, v).to_bytes(8, "big")


class SampleStore:
    """A bounded LMDB store of :class:`SampleRecord`, ranked by priority.

    Thread-safe: writes are serialised by a lock (LMDB allows one writer), reads run in their
    own read transactions. Do not open the same ``path`` twice in one process.
    """

    def __init__(self, path: Path, max_bytes: int, map_size: int | None = None) -> None:
        """Open (or create) the store in the folder ``path``.

        ``map_size`` is LMDB's address-space reservation; the default, ``2 * max_bytes + 16
        MiB``, leaves room for B-tree pages, page rounding and copy-on-write. Raises
        StoreError if the folder cannot be created or LMDB cannot open it.
        """
        if max_bytes <= 0:
            raise StoreError(f"sample store {path}: max_bytes must be > 0, got {max_bytes}")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.map_size = int(map_size) if map_size is not None else 2 * self.max_bytes + 16 * _MIB
        self._lock = threading.Lock()
        self._rejected = 0
        self._corrupt: set[str] = set()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(self.path), subdir=True, max_dbs=4, map_size=self.map_size, mode=0o700
            )
            # Slots of readers that died (kill -9) would pin old pages forever: clear them.
            self._env.reader_check()
            self._records = self._env.open_db(b"records")
            self._prio = self._env.open_db(b"prio")
            self._meta = self._env.open_db(b"meta")
        except OSError as e:
            raise StoreError(f"sample store {self.path}: cannot open: {e}") from e
        except lmdb.Error as e:
            raise StoreError(f"sample store {self.path}: LMDB cannot open it: {e}") from e
        self._closed = False

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
            raise StoreError(f"sample store {self.path}: {what}: LMDB error: {e}") from e

    def _counter(self, txn: lmdb.Transaction[bytes], name: bytes) -> int:
        raw = txn.get(name, db=self._meta)
        return int.from_bytes(raw, "big") if raw is not None else 0

    def _bump(self, txn: lmdb.Transaction[bytes], name: bytes, delta: int) -> None:
        if delta:
            txn.put(name, _u64(self._counter(txn, name) + delta), db=self._meta)

    def _note_corrupt(self, rid: bytes, why: str) -> None:
        sid = rid.decode(errors="replace")
        if sid not in self._corrupt:
            self._corrupt.add(sid)
            log.warning("sample store %s: record %s is corrupt (%s); skipped", self.path, sid, why)

    def _pick_victims(
        self,
        txn: lmdb.Transaction[bytes],
        need: int,
        below: bytes | None,
        exclude: bytes,
    ) -> list[tuple[bytes, bytes, int, bool]] | None:
        """Lowest-priority unprotected records freeing at least ``need`` bytes.

        Only index keys strictly below ``below`` qualify (None: any). Returns (index key, id,
        size, was pending) tuples, or None when not enough can be freed.
        """
        victims: list[tuple[bytes, bytes, int, bool]] = []
        freed = 0
        cursor = txn.cursor(db=self._prio)
        for key in cursor.iternext(keys=True, values=False):
            if below is not None and key >= below:
                return None
            rid = key[8:]
            if rid == exclude:
                continue
            raw = txn.get(rid, db=self._records)
            if raw is None:  # an index entry without a record: drop it, frees nothing
                victims.append((key, rid, 0, False))
                continue
            try:
                h = _header(raw)
                protected, pending = h.protected, h.pending
            except _Corrupt:
                protected, pending = False, False  # unreadable: garbage, reclaim it
            if protected:
                continue
            victims.append((key, rid, len(raw), pending))
            freed += len(raw)
            if freed >= need:
                return victims
        return None

    def _delete(
        self, txn: lmdb.Transaction[bytes], victims: list[tuple[bytes, bytes, int, bool]]
    ) -> int:
        """Delete victims (record + index); returns how many real records went."""
        n = 0
        for key, rid, size, pending in victims:
            txn.delete(key, db=self._prio)
            if size:
                txn.delete(rid, db=self._records)
                self._bump(txn, b"bytes", -size)
                self._bump(txn, b"pending", -int(pending))
                n += 1
        return n

    def _old_entry(
        self, txn: lmdb.Transaction[bytes], rid: bytes
    ) -> tuple[bytes | None, int, bool]:
        """(index key, size, was pending) of the current value stored under ``rid``."""
        raw = txn.get(rid, db=self._records)
        if raw is None:
            return None, 0, False
        try:
            h = _header(raw)
        except _Corrupt:
            return self._find_index_key(txn, rid), len(raw), False
        return h.pkey + rid, len(raw), h.pending

    def _find_index_key(self, txn: lmdb.Transaction[bytes], rid: bytes) -> bytes | None:
        """Slow path for a record whose header is unreadable: scan the index for its id."""
        for key in txn.cursor(db=self._prio).iternext(keys=True, values=False):
            if key[8:] == rid:
                return bytes(key)
        return None

    def _write_record(
        self, txn: lmdb.Transaction[bytes], record: SampleRecord, below: bytes | None
    ) -> bool:
        """Store ``record`` (replacing one with the same id), evicting as needed. False: no room."""
        if not math.isfinite(record.priority):
            raise StoreError(f"sample {record.id}: priority must be finite, got {record.priority}")
        rid = record.id.encode()
        value = _encode(record)
        old_key, old_size, old_pending = self._old_entry(txn, rid)
        used = self._counter(txn, b"bytes") - old_size
        need = used + len(value) - self.max_bytes
        victims: list[tuple[bytes, bytes, int, bool]] = []
        if len(value) > self.max_bytes:
            return False
        if need > 0:
            found = self._pick_victims(txn, need, below, exclude=rid)
            if found is None:
                return False
            victims = found
        evicted = self._delete(txn, victims)
        self._bump(txn, b"evicted", evicted)
        if old_key is not None:
            txn.delete(old_key, db=self._prio)
        txn.put(rid, value, db=self._records)
        txn.put(priority_key(record.priority) + rid, b"", db=self._prio)
        self._bump(txn, b"bytes", len(value) - old_size)
        self._bump(txn, b"pending", int(record.upload_state == "pending") - int(old_pending))
        if evicted:
            log.debug("sample store: evicted %d record(s) for %s", evicted, record.id)
        return True

    # ---- public API --------------------------------------------------------------------

    def put(self, record: SampleRecord) -> bool:
        """Store ``record`` durably; False if it was rejected as worth less than what is kept.

        A record with the same id is replaced. To fit under ``max_bytes`` the lowest-priority
        unprotected records *below* the newcomer are evicted, in the same transaction.
        Raises StoreError on an LMDB failure or a non-finite priority (nothing is changed).
        """
        rid = record.id.encode()
        below = priority_key(record.priority) + rid if math.isfinite(record.priority) else None
        with self._lock:
            ok = self._run(True, f"put {record.id}", lambda t: self._write_record(t, record, below))
            if not ok:
                self._rejected += 1
            return ok

    def get(self, sample_id: str) -> SampleRecord | None:
        """The record with this id, or None. Raises StoreError if it is stored but corrupt."""
        rid = sample_id.encode()
        raw = self._run(False, f"get {sample_id}", lambda t: t.get(rid, db=self._records))
        if raw is None:
            return None
        try:
            return _decode(rid, raw)
        except _Corrupt as e:
            self._note_corrupt(rid, str(e))
            raise StoreError(f"sample store {self.path}: record {sample_id} is corrupt: {e}") from e

    def top(self, n: int, state: str | None = "pending") -> list[SampleRecord]:
        """Up to ``n`` records, highest priority first, whose ``upload_state`` is ``state``
        (None: any). Corrupt records are skipped and counted. Raises StoreError."""

        def walk(txn: lmdb.Transaction[bytes]) -> list[SampleRecord]:
            out: list[SampleRecord] = []
            if n <= 0:
                return out
            for key in txn.cursor(db=self._prio).iterprev(keys=True, values=False):
                rid = key[8:]
                raw = txn.get(rid, db=self._records)
                if raw is None:
                    self._note_corrupt(rid, "indexed but missing")
                    continue
                try:
                    rec = _decode(rid, raw)
                except _Corrupt as e:
                    self._note_corrupt(rid, str(e))
                    continue
                if state is None or rec.upload_state == state:
                    out.append(rec)
                    if len(out) >= n:
                        break
            return out

        return self._run(False, "top", walk)

    def set_feedback(self, sample_id: str, feedback: Feedback) -> SampleRecord:
        """Attach a human's feedback; the record becomes protected and top priority.

        The first feedback lifts the priority to ``1 + old`` (above every scored record, whose
        priority is at most 1); later feedback replaces the earlier one and keeps the priority.
        Raises StoreError if the id is unknown or corrupt, or if the store is so full of
        protected records that the slightly larger record cannot be kept.
        """
        rid = sample_id.encode()

        def change(txn: lmdb.Transaction[bytes]) -> SampleRecord:
            raw = txn.get(rid, db=self._records)
            if raw is None:
                raise StoreError(f"sample store {self.path}: no sample {sample_id}")
            try:
                old = _decode(rid, raw)
            except _Corrupt as e:
                self._note_corrupt(rid, str(e))
                raise StoreError(
                    f"sample store {self.path}: record {sample_id} is corrupt: {e}"
                ) from e
            priority = old.priority if old.feedback is not None else 1.0 + old.priority
            new = replace(old, feedback=feedback, priority=priority)
            if not self._write_record(txn, new, below=None):
                raise StoreError(
                    f"sample store {self.path}: no room to keep feedback on {sample_id}: "
                    "the store is full of protected samples; upload them or raise max_bytes"
                )
            return new

        with self._lock:
            return self._run(True, f"feedback on {sample_id}", change)

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
                key, size, pending = self._old_entry(txn, rid)
                if size == 0 and key is None:
                    continue
                expected = expected_priority.get(sid) if expected_priority is not None else None
                if expected is not None and key is not None and key[:8] != priority_key(expected):
                    continue  # changed since it was sent (feedback): keep it for the next cycle
                if key is not None:
                    txn.delete(key, db=self._prio)
                txn.delete(rid, db=self._records)
                self._bump(txn, b"bytes", -size)
                self._bump(txn, b"pending", -int(pending))
                n += 1
            return n

        with self._lock:
            return self._run(True, "release", drop)

    def stats(self) -> dict[str, int]:
        """``count``, ``bytes`` (sum of stored values), ``pending``, ``evicted`` (all persisted),
        ``rejected`` and ``corrupt`` (since this process opened the store — persisting a refusal
        would cost a disk sync per refused frame), ``max_bytes`` and ``map_size``."""

        def read(txn: lmdb.Transaction[bytes]) -> dict[str, int]:
            return {
                "count": txn.stat(self._records)["entries"],
                "bytes": self._counter(txn, b"bytes"),
                "pending": self._counter(txn, b"pending"),
                "evicted": self._counter(txn, b"evicted"),
            }

        out = self._run(False, "stats", read)
        out.update(
            rejected=self._rejected,
            corrupt=len(self._corrupt),
            max_bytes=self.max_bytes,
            map_size=self.map_size,
        )
        return out

    def check(self) -> list[str]:
        """Verify the invariants; returns one line per problem (empty: consistent).

        Every record decodes and is indexed exactly once under its own priority; every index
        entry points at a record; ``bytes`` and ``pending`` equal the sums over the records;
        ``bytes`` is at most ``max_bytes``. Raises StoreError on an LMDB failure.
        """

        def scan(txn: lmdb.Transaction[bytes]) -> list[str]:
            problems: list[str] = []
            total = pending = 0
            expected_keys: set[bytes] = set()
            for rid, raw in txn.cursor(db=self._records).iternext(keys=True, values=True):
                total += len(raw)
                try:
                    rec = _decode(rid, raw)
                except _Corrupt as e:
                    problems.append(f"record {rid.decode(errors='replace')}: {e}")
                    continue
                pending += rec.upload_state == "pending"
                key = priority_key(rec.priority) + rid
                h = _header(raw)
                if h.pkey != key[:8] or h.pending != (rec.upload_state == "pending"):
                    problems.append(f"record {rec.id}: header disagrees with its meta")
                expected_keys.add(key)
            index = set(txn.cursor(db=self._prio).iternext(keys=True, values=False))
            for key in sorted(expected_keys - index):
                problems.append(f"record {key[8:].decode()}: not in the priority index")
            for key in sorted(index - expected_keys):
                problems.append(f"index entry {key[8:].decode(errors='replace')}: no such record")
            stored = self._counter(txn, b"bytes")
            if stored != total:
                problems.append(f"byte counter {stored} != sum of values {total}")
            if total > self.max_bytes:
                problems.append(f"{total} bytes stored, above max_bytes {self.max_bytes}")
            counted = self._counter(txn, b"pending")
            if counted != pending:
                problems.append(f"pending counter {counted} != pending records {pending}")
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
        """Every stored record that carries feedback (for the feedback metrics).

        Reads each record's header in place (no copy of the image) and decodes only the
        protected ones (feedback, not yet uploaded). Corrupt records are skipped.
        Raises StoreError.
        """
        if self._closed:
            raise StoreError(f"sample store {self.path}: feedback records after close")
        out: list[SampleRecord] = []
        try:
            with self._env.begin(buffers=True) as txn:
                for rid, raw in txn.cursor(db=self._records).iternext(keys=True, values=True):
                    try:
                        if not _header(raw).protected:  # type: ignore[arg-type]
                            continue
                        rec = _decode(bytes(rid), bytes(raw))
                    except _Corrupt:
                        continue
                    if rec.feedback is not None:
                        out.append(rec)
        except lmdb.Error as e:
            raise StoreError(f"sample store {self.path}: feedback records: LMDB error: {e}") from e
        return out
