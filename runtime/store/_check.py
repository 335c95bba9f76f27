"""The sample store's invariants, checked from scratch (what the kill -9 tests run).

:func:`find_problems` rebuilds, inside one read transaction, every index entry and counter the
records imply and compares them with what is stored; it never trusts an index to find a record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.store._codec import (
    _FLAG_PROTECTED,
    _chunks_of,
    _class_bytes,
    _class_prefix,
    _Corrupt,
    _Entry,
    _flags,
    _footprint,
    priority_key,
)
from runtime.store._tables import Tables

if TYPE_CHECKING:
    from runtime.store._tables import Txn


def find_problems(
    t: Tables, txn: Txn, *, chunk_size: int, page_size: int, max_bytes: int
) -> list[str]:
    """One line per broken invariant (empty: consistent).

    Every record decodes and is indexed exactly once under its own priority with the entry its
    meta implies, in ``cprio`` (ranked) or ``rslice`` (random slice); every index entry points
    at a record; the counters equal the sums over the records; ``bytes`` is at most
    ``max_bytes``.
    """
    problems: list[str] = []
    ids: list[bytes] = []
    for k in txn.cursor(db=t.records).iternext(keys=True, values=False):
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
            rec = t.read(txn, rid, with_image=True)
            nchunks = len(_chunks_of(rec, chunk_size))
            stored = len(t.blob(txn, rid)) // chunk_size
            if stored != nchunks:
                raise _Corrupt(f"{stored} chunks stored, {nchunks} expected")
        except _Corrupt as e:
            problems.append(f"record {rid.decode(errors='replace')}: {e}")
            continue
        cls = _class_bytes(rec)
        fp = _footprint(len(rid), nchunks, len(cls), rec.random_slice, page_size)
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
    prio = dict(txn.cursor(db=t.prio).iternext(keys=True, values=True))
    for key in sorted(set(want_prio) - set(prio)):
        problems.append(f"record {key[8:].decode()}: not in the priority index")
    for key in sorted(set(prio) - set(want_prio)):
        problems.append(f"index entry {key[8:].decode(errors='replace')}: no such record")
    for key in sorted(set(prio) & set(want_prio)):
        if prio[key] != want_prio[key]:
            problems.append(f"record {key[8:].decode()}: index entry disagrees with it")
    cprio = set(txn.cursor(db=t.cprio).iternext(keys=True, values=False))
    if cprio != want_cprio:
        problems.append(f"class index: {len(cprio ^ want_cprio)} entries differ")
    evict = set(txn.cursor(db=t.evict).iternext(keys=True, values=False))
    if evict != want_evict:
        problems.append(f"eviction index: {len(evict ^ want_evict)} entries differ")
    rslice = dict(txn.cursor(db=t.rslice).iternext(keys=True, values=True))
    if rslice != want_rslice:
        problems.append("random-slice index disagrees with the records")
    for name, value in (
        (b"bytes", total),
        (b"pending", pending),
        (b"random_bytes", rbytes),
    ):
        counted = t.counter(txn, name)
        if counted != value:
            problems.append(f"{name.decode()} counter {counted} != sum {value}")
    for cls, (n, b) in classes.items():
        if t.class_counts(txn, cls) != (n, b):
            problems.append(f"class {cls.decode(errors='replace')!r}: counters disagree")
    cursor = txn.cursor(db=t.meta)
    if cursor.set_range(b"c:"):
        for k in cursor.iternext(keys=True, values=False):
            if not k.startswith(b"c:"):
                break
            if bytes(k[2:]) not in classes:
                problems.append(f"class {k[2:].decode(errors='replace')!r}: stale counter")
    if total > max_bytes:
        problems.append(f"{total} bytes stored, above max_bytes {max_bytes}")
    return problems
