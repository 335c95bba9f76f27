"""The sample store's read walks: ranked lists, listings and counts, inside one transaction.

Each function walks one sub-database of :class:`~runtime.store._tables.Tables` in the caller's
read transaction: :func:`top` and :func:`ranked` walk ``prio`` from the high end (O(log n + K),
plus records of the other upload state they skip; ``ranked`` decodes no record),
:func:`ids_with_prefix` walks ``records`` from a prefix, :func:`feedback_records` decodes only
the protected entries, :func:`class_stats` reads the per-class counters. A corrupt record is
skipped and handed to ``on_corrupt`` (the store counts and logs it once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from runtime.store._codec import _FLAG_PENDING, _Corrupt, _unpack_entry, decode_priority_key
from runtime.store._tables import Tables
from runtime.store.record import SampleRecord

if TYPE_CHECKING:
    from runtime.store._tables import Txn

OnCorrupt = Callable[[bytes, str], None]


def ids_with_prefix(t: Tables, txn: Txn, want: bytes, limit: int) -> list[str]:
    """Up to ``limit`` ids of stored records that start with ``want``, in id order."""
    out: list[str] = []
    cursor = txn.cursor(db=t.records)
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


def top(
    t: Tables,
    txn: Txn,
    n: int,
    state: str | None,
    with_image: bool,
    on_corrupt: OnCorrupt,
) -> list[SampleRecord]:
    """Up to ``n`` records, highest priority first, whose ``upload_state`` is ``state``."""
    out: list[SampleRecord] = []
    if n <= 0:
        return out
    for key, raw in txn.cursor(db=t.prio).iterprev(keys=True, values=True):
        rid = key[8:]
        if (
            state in ("pending", "uploaded")
            and len(raw) >= 1
            and bool(raw[0] & _FLAG_PENDING) != (state == "pending")
        ):
            continue
        try:
            rec = t.read(txn, rid, with_image)
        except _Corrupt as e:
            on_corrupt(rid, str(e))
            continue
        if state is None or rec.upload_state == state:
            out.append(rec)
            if len(out) >= n:
                break
    return out


def ranked(t: Tables, txn: Txn, n: int, state: str | None) -> list[tuple[str, float]]:
    """``(id, priority)`` of the ``n`` best records in ``state``, from the index alone."""
    out: list[tuple[str, float]] = []
    if n <= 0:
        return out
    for key, raw in txn.cursor(db=t.prio).iterprev(keys=True, values=True):
        if state is not None and bool(raw[:1] and raw[0] & _FLAG_PENDING) != (state == "pending"):
            continue
        out.append((bytes(key[8:]).decode(errors="replace"), decode_priority_key(key)))
        if len(out) >= n:
            break
    return out


def feedback_records(t: Tables, txn: Txn) -> list[SampleRecord]:
    """Every record with feedback not uploaded yet, without images (corrupt ones skipped)."""
    out: list[SampleRecord] = []
    for key, raw in txn.cursor(db=t.prio).iternext(keys=True, values=True):
        try:
            if not _unpack_entry(bytes(raw)).protected:
                continue
            rec = t.read(txn, bytes(key[8:]), with_image=False)
        except _Corrupt:
            continue
        if rec.feedback is not None:
            out.append(rec)
    return out


def class_stats(t: Tables, txn: Txn) -> dict[str, dict[str, int]]:
    """Per final class of the ranked records: ``count`` and ``bytes`` (footprints)."""
    out: dict[str, dict[str, int]] = {}
    cursor = txn.cursor(db=t.meta)
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
