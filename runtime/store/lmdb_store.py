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
A disk that fills first lowers the cap in force (:mod:`runtime.store._disk`).

The parts: this module is the store's public face (locking, transactions, errors, what to
accept); :mod:`runtime.store._tables` the sub-databases (layout) and the steps one transaction
takes on them; :mod:`runtime.store._evict` the eviction order (what makes room);
:mod:`runtime.store._disk` the cap on a full disk; :mod:`runtime.store._check` the invariants;
:mod:`runtime.store._codec` the record's bytes, the priority key and the footprint arithmetic.
Top-K walks ``prio`` from the high end (O(log n + K), plus records of the other upload state it
skips).

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
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import lmdb

from runtime.errors import StoreError
from runtime.store import _walks
from runtime.store._check import find_problems
from runtime.store._codec import (
    _LAG_TXNS,
    _MAX_CLASS,
    _PAGE_HEADER,
    FORMAT,
    _chunks_of,
    _class_bytes,
    _Corrupt,
    _Entry,
    _flags,
    _footprint,
    _u64,
    decode_priority_key,
    priority_key,
    record_footprint,
    reserve_bytes,
)
from runtime.store._disk import DiskGuard, full_disk_note
from runtime.store._evict import ClassQuota, evict, evict_down_to, plan_room
from runtime.store._tables import Tables
from runtime.store.record import Feedback, SampleRecord

if TYPE_CHECKING:
    from runtime.store._tables import Txn

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
        self._disk = DiskGuard(self.path, self.max_bytes)
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
        self._run(True, "open", lambda t: t.put(b"format", _u64(FORMAT), db=self._t.meta))

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
            self._t = Tables(self._env)
        except OSError as e:
            raise StoreError(f"sample store {self.path}: cannot open: {e}") from e
        except lmdb.Error as e:
            raise StoreError(f"sample store {self.path}: LMDB cannot open it: {e}") from e
        self.page_size = int(self._env.stat()["psize"])
        self._chunk_size = self.page_size - _PAGE_HEADER
        self._closed = False

    def _legacy(self) -> bool:
        def look(txn: Txn) -> bool:
            fmt = txn.get(b"format", db=self._t.meta)
            return fmt is None and txn.stat(self._t.records)["entries"] > 0

        return self._run(False, "open", look)

    # ---- plumbing ----------------------------------------------------------------------

    def _run(self, write: bool, what: str, fn: Callable[[Txn], T]) -> T:
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

    # ---- a full disk (runtime.store._disk) -----------------------------------------------

    def _check_disk(self, writing: int = 0) -> None:
        """Before a write of ``writing`` bytes: lower the cap in force if the disk fills."""
        need = reserve_bytes(max(self._largest, self._largest_record), self.page_size)
        self._disk.check(need + writing)

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
            room = self._disk.room()
            if room is None or not self._disk.full:
                return None  # not a full disk
            evicted = self._shrink()
            return full_disk_note(room[0], self._disk.cap(), evicted)
        finally:
            self._recovering = False

    def _shrink(self) -> int:
        """Evict the lowest unprotected ranked records down to the cap in force, in a
        transaction of its own (an insert that must evict *and* take new pages cannot get them
        from what it frees itself), then commit ``_LAG_TXNS`` empty-ish transactions so the
        freed pages can be reused. Returns how many were evicted (0 if that failed too: the
        next failed write tries again)."""
        budget = self._disk.cap() - reserve_bytes(self._largest, self.page_size)
        try:
            n = self._run(
                True, "make room on a full disk", lambda t: evict_down_to(self._t, t, budget)
            )
            for _ in range(_LAG_TXNS):
                self._run(True, "make room on a full disk", lambda t: self._t.bump(t, b"full", 1))
        except StoreError as e:
            log.warning("sample store %s: %s", self.path, e)
            with contextlib.suppress(StoreError, lmdb.Error):
                self._env.close()
                self._open()  # that failure left LMDB unusable too
            return 0
        return n

    def _note_corrupt(self, rid: bytes, why: str) -> None:
        sid = rid.decode(errors="replace")
        if sid not in self._corrupt:
            self._corrupt.add(sid)
            log.warning("sample store %s: record %s is corrupt (%s); skipped", self.path, sid, why)

    def _write_record(self, txn: Txn, record: SampleRecord, below: bytes | None) -> bool:
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
        fp = _footprint(len(rid), len(chunks), len(cls), record.random_slice, self.page_size)
        budget = self._disk.cap() - reserve_bytes(
            max(self._largest, self._txn_bytes + fp), self.page_size
        )
        if fp > budget:
            return False
        old = self._t.entry_of(txn, rid)
        old_key, old_entry = old if old is not None else (None, None)
        victims = plan_room(
            self._t,
            txn,
            rid=rid,
            footprint=fp,
            cls=cls,
            random_slice=record.random_slice,
            below=below,
            old=old_entry,
            budget=budget,
            random_budget=int(self.random_share * self.max_bytes),
            quota=self.quotas.get(cls, self.quotas.get(b"*")),
            max_bytes=self.max_bytes,
        )
        if victims is None:
            return False
        evict(self._t, txn, victims)
        if old_key is not None and old_entry is not None:
            self._t.remove(txn, old_key, old_entry)
        else:
            self._t.sweep_chunks(txn, rid)  # leftovers of an unindexed record with this id
        self._t.put_chunks(txn, rid, chunks)
        self._t.index(
            txn, priority_key(record.priority) + rid, _Entry(_flags(record), len(chunks), fp, cls)
        )
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

        def write(txn: Txn) -> list[bool]:
            self._txn_bytes = 0
            out = []
            floor = txn.get(ckey, db=self._t.meta) if ckey is not None else None
            for r in records:
                if (
                    floor is not None
                    and r.frame_id.encode() <= bytes(floor)
                    and not r.prediction.get("shadow")
                    and txn.get(r.id.encode() + b"\0\0", db=self._t.records) is None
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
                    txn.put(ckey, new, db=self._t.meta)
            return out

        if not records and through is None:
            return []
        what = f"put {records[0].id}" if records else f"source cursor of {source}"
        with self._lock:
            self._check_disk(sum(len(r.image) for r in records))
            done = self._run(True, what, write)
            self._largest = max(self._largest, self._txn_bytes)
            self._rejected += done.count(False)
            return done

    def source_cursor(self, source: str) -> str | None:
        """The newest frame id of ``source`` decided in a committed transaction (see
        :meth:`put_many`), or None."""
        key = _CURSOR + source.encode()

        def read(txn: Txn) -> str | None:
            raw = txn.get(key, db=self._t.meta)
            return None if raw is None else bytes(raw).decode(errors="replace")

        return self._run(False, "source cursor", read)

    def ids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to ``limit`` ids of stored records that start with ``prefix`` (in id order), so
        an operator may type any unique prefix of an id."""
        want = prefix.encode()
        return self._run(
            False, f"ids {prefix}", lambda txn: _walks.ids_with_prefix(self._t, txn, want, limit)
        )

    def get(self, sample_id: str) -> SampleRecord | None:
        """The record with this id, or None. Raises StoreError if it is stored but corrupt."""
        rid = sample_id.encode()

        def read(txn: Txn) -> SampleRecord | None:
            if txn.get(rid + b"\0\0", db=self._t.records) is None:
                return None
            try:
                return self._t.read(txn, rid, with_image=True)
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
        return self._run(
            False,
            "top",
            lambda txn: _walks.top(self._t, txn, n, state, with_image, self._note_corrupt),
        )

    def floor(self) -> float | None:
        """The priority a ranked newcomer must beat to get in, or None while there is room.

        "Room" is judged against the largest record written since open, and the floor is the
        lowest unprotected ranked record's priority (ignoring quotas) — an estimate the writer
        uses to skip encoding frames the store would reject anyway; :meth:`put` decides.
        O(log n). Raises StoreError.
        """
        if self._largest_record == 0:
            return None
        budget = self._disk.cap() - reserve_bytes(self._largest, self.page_size)

        def look(txn: Txn) -> float | None:
            if self._t.counter(txn, b"bytes") + self._largest_record <= budget:
                return None
            cursor = txn.cursor(db=self._t.evict)
            return decode_priority_key(cursor.key()) if cursor.first() else None

        return self._run(False, "floor", look)

    def ranked(self, n: int, state: str | None = "pending") -> list[tuple[str, float]]:
        """``(id, priority)`` of the ``n`` best records whose ``upload_state`` is ``state``
        ("pending", "uploaded" or None: any), best first, read from the priority index alone:
        no record is decoded, so it costs O(log n + n) cursor steps. Raises StoreError."""
        if state not in (None, "pending", "uploaded"):
            raise StoreError(f"sample store {self.path}: unknown upload state {state!r}")
        return self._run(False, "ranked", lambda txn: _walks.ranked(self._t, txn, n, state))

    def set_feedback(self, sample_id: str, feedback: Feedback) -> SampleRecord:
        """Attach a human's feedback; the record becomes protected and top priority.

        The first feedback lifts the priority to ``1 + old`` (above every scored record, whose
        priority is at most 1); later feedback replaces the earlier one and keeps the priority.
        A correction may move the record to another class (quotas are not enforced against
        feedback). Raises StoreError if the id is unknown or corrupt, or if the store is so
        full of protected records that the slightly larger record cannot be kept.
        """
        rid = sample_id.encode()

        def change(txn: Txn) -> SampleRecord:
            if txn.get(rid + b"\0\0", db=self._t.records) is None:
                raise StoreError(f"sample store {self.path}: no sample {sample_id}")
            try:
                old = self._t.read(txn, rid, with_image=True)
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

        def change(txn: Txn) -> SampleRecord | None:
            if txn.get(rid + b"\0\0", db=self._t.records) is None:
                return None
            try:
                old = self._t.read(txn, rid, with_image=True)
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

        def drop(txn: Txn) -> int:
            n = 0
            for sid in wanted:
                rid = sid.encode()
                found = self._t.entry_of(txn, rid)
                if found is None:
                    if txn.get(rid + b"\0\0", db=self._t.records) is not None:
                        self._t.sweep_chunks(txn, rid)  # unindexed leftovers
                        n += 1
                    continue
                key, entry = found
                expected = expected_priority.get(sid) if expected_priority is not None else None
                if expected is not None and key[:8] != priority_key(expected):
                    continue  # changed since it was sent (feedback): keep it for the next cycle
                self._t.remove(txn, key, entry)
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

        def read(txn: Txn) -> dict[str, int]:
            return {
                "count": txn.stat(self._t.prio)["entries"],
                "bytes": self._t.counter(txn, b"bytes"),
                "pending": self._t.counter(txn, b"pending"),
                "evicted": self._t.counter(txn, b"evicted"),
                "random": txn.stat(self._t.rslice)["entries"],
                "random_bytes": self._t.counter(txn, b"random_bytes"),
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
            cap=self._disk.cap(),
        )
        return out

    def class_stats(self) -> dict[str, dict[str, int]]:
        """Per final class of the ranked records: ``count`` and ``bytes`` (footprints)."""
        return self._run(False, "class stats", lambda txn: _walks.class_stats(self._t, txn))

    def check(self) -> list[str]:
        """Verify the invariants; returns one line per problem (empty: consistent).

        Every record decodes and is indexed exactly once under its own priority with the
        entry its meta implies, in ``cprio`` (ranked) or ``rslice`` (random slice); every index
        entry points at a record; the counters equal the sums over the records; ``bytes`` is
        at most ``max_bytes``. Raises StoreError on an LMDB failure.
        """

        def scan(txn: Txn) -> list[str]:
            return find_problems(
                self._t,
                txn,
                chunk_size=self._chunk_size,
                page_size=self.page_size,
                max_bytes=self.max_bytes,
            )

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
        return self._run(
            False, "feedback records", lambda txn: _walks.feedback_records(self._t, txn)
        )
