"""Which records make room for a newcomer: the sample store's eviction order.

:func:`plan_room` decides, inside the caller's write transaction and without changing
anything, which stored records must go for a newcomer of a given footprint to fit under the
random slice's share, its class quota and the cap (or that it cannot fit: None);
:func:`evict` removes them, and :func:`evict_down_to` removes the lowest records until the
stored bytes fit a smaller budget (a full disk). The rules themselves — who may evict whom —
are told in :mod:`runtime.store.lmdb_store`.

The priority key is the IEEE-754 double mapped to 8 bytes whose byte order is the number order;
ties sort by id, which is time-ordered, so among equals the oldest is evicted first and a
newcomer beats an older record of the same priority. Eviction and quota eviction walk
``evict``/``cprio`` from the low end, which hold only records that may be evicted, so the
victims are the first keys: O(log n) to reach, O(1) per victim, whatever the number of
protected or random-slice records. The oldest random record is the first key of ``rslice`` (a
protected one there is skipped). The entries carry everything eviction needs, so it never
parses a record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.store._codec import _class_prefix, _Entry
from runtime.store._tables import Tables

if TYPE_CHECKING:
    from runtime.store._tables import Txn


@dataclass(frozen=True)
class ClassQuota:
    """Most a final class may hold: a share of ``max_bytes`` and/or a record count."""

    max_share: float | None = None
    max_count: int | None = None


def plan_room(
    t: Tables,
    txn: Txn,
    *,
    rid: bytes,
    footprint: int,
    cls: bytes,
    random_slice: bool,
    below: bytes | None,
    old: _Entry | None,
    budget: int,
    random_budget: int,
    quota: ClassQuota | None,
    max_bytes: int,
) -> dict[bytes, _Entry] | None:
    """The records (index key -> entry) to evict so the newcomer ``rid`` fits; None: no room.

    ``old`` is the entry of the record the newcomer replaces (same id), if any: its bytes count
    as free. ``below`` None marks a protected write (feedback): no quota applies and any
    unprotected record may go, the random slice's last; otherwise only records whose index key
    is below ``below`` may go, except that a random-slice newcomer (``random_slice``) evicts
    the oldest random records over ``random_budget`` and may claim its reserved share from
    ranked records whatever their priority. ``budget`` is what the records may take in all.
    """
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
            if db is t.rslice:
                pk = txn.get(k, db=t.rslice)
                key = bytes(pk[:8]) + bytes(k) if pk is not None else b"\0" * 8 + bytes(k)
            else:
                key = bytes(k[len(prefix) :])
                if limit is not None and key >= limit:
                    return False
            if key[8:] == rid or key in victims:
                continue
            entry = t.entry_at(txn, key)
            if entry.protected or not ok(entry):
                continue
            victims[key] = entry
            freed += entry.footprint
            if not need():
                return True
        return False

    if random_slice:
        rused = t.counter(txn, b"random_bytes")
        if old is not None and old.random:
            rused -= old.footprint

        def over_random() -> bool:
            return rused + footprint - sum(e.footprint for e in victims.values()) > random_budget

        if not walk(t.rslice, b"", over_random, lambda e: e.random, None):
            return None
    elif below is not None and quota is not None:
        count, cbytes = t.class_counts(txn, cls)
        if old is not None and not old.random and old.cls == cls:
            count, cbytes = count - 1, cbytes - old.footprint
        cap_b = quota.max_share * max_bytes if quota.max_share is not None else None
        cap_n = quota.max_count

        def over_quota() -> bool:
            gone = [e for e in victims.values()]
            n = count + 1 - len(gone)
            b = cbytes + footprint - sum(e.footprint for e in gone)
            return (cap_n is not None and n > cap_n) or (cap_b is not None and b > cap_b)

        if not walk(t.cprio, _class_prefix(cls), over_quota, lambda e: True, below):
            return None
    used = t.counter(txn, b"bytes") - (old.footprint if old else 0)

    def over_cap() -> bool:
        return used + footprint - freed > budget

    # ``evict`` holds exactly the unprotected ranked records, so this walk skips nothing.
    # A random newcomer claims its reserved share from them whatever their priority.
    anything: Callable[[_Entry], bool] = lambda e: True  # noqa: E731
    limit = None if random_slice or below is None else below
    if not walk(t.evict, b"", over_cap, anything, limit):
        if below is not None or random_slice:
            return None
        # Feedback: the random slice's unprotected records may go too, oldest first.
        if not walk(t.rslice, b"", over_cap, lambda e: e.random, None):
            return None
    return victims


def evict(t: Tables, txn: Txn, victims: dict[bytes, _Entry]) -> None:
    """Remove the planned victims and count them as evicted."""
    for key, entry in victims.items():
        t.remove(txn, key, entry)
    t.bump(txn, b"evicted", len(victims))


def evict_down_to(t: Tables, txn: Txn, budget: int) -> int:
    """Evict the lowest unprotected ranked records until the stored bytes fit ``budget`` (or
    none is left). Returns how many went."""
    used = t.counter(txn, b"bytes")
    victims: dict[bytes, _Entry] = {}
    cursor = txn.cursor(db=t.evict)
    if cursor.first():
        for k in cursor.iternext(keys=True, values=False):
            if used <= budget:
                break
            entry = t.entry_at(txn, bytes(k))
            victims[bytes(k)] = entry
            used -= entry.footprint
    evict(t, txn, victims)
    return len(victims)
