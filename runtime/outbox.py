"""Feedback on samples that already went home: what the device remembers of them, and the outbox
that carries such feedback to the hub.

A sample leaves the store as soon as the hub acknowledged it, so on a good link an operator who
looks at a frame and corrects it a minute later would otherwise meet "no sample". The device
therefore keeps, in its own small LMDB environment (``<state>/sent/``, separate from the sample
store so the store's byte cap stays exact):

- **sent**: for each of the last ``keep`` samples it uploaded (default 20,000, ~150 bytes each),
  the final stage's item labels, the bundle version and the feedback last given on it. The
  uploader writes the entry *before* it releases the record, so there is no moment when a
  sample is in neither place. Oldest first out (a sequence index keeps the trim O(log n)).
- **outbox**: feedback given on a sent sample, waiting for the hub (sample id -> the feedback
  JSON; a newer feedback on the same sample replaces the queued one).

:class:`~runtime.uploader.Uploader` drains the outbox at the start of each cycle, inside the
upload window and the byte budget like everything else (``PUT /device/samples/{id}/feedback``,
one request each, oldest first), and deletes an entry only after the hub acknowledged *that*
feedback (compare-and-delete: a replacement queued meanwhile stays). An entry the hub refuses
for good (404: it no longer has the sample; 403: not this device's) is dropped with a warning
and counted. A crash anywhere loses nothing: an entry not yet deleted is sent again, and the
hub's route replaces feedback idempotently.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import lmdb

from runtime.errors import StoreError

if TYPE_CHECKING:
    from runtime.store.record import Feedback, SampleRecord

__all__ = ["SENT_DIR", "FeedbackOutbox", "SentSample"]

log = logging.getLogger("leanloop.outbox")

SENT_DIR = "sent"
_MIB = 1 << 20
_MAX_VALUE = 16 * 1024  # a sent entry or a queued feedback is never larger
T = TypeVar("T")


@dataclass(frozen=True)
class SentSample:
    """What the device remembers of a sample it uploaded."""

    labels: tuple[str, ...]  # the final stage's item labels, in order
    bundle_version: int
    feedback: dict[str, Any] | None  # the feedback last given on it (counted in the ledger)

    def predicted(self, item: int | None) -> str:
        """The label the model gave item ``item`` (None: item 0), or "?" if it has none."""
        i = item if item is not None else 0
        return self.labels[i] if 0 <= i < len(self.labels) else "?"


def _labels(prediction: dict[str, Any]) -> tuple[str, ...]:
    stages = prediction.get("stages") or {}
    if not isinstance(stages, dict) or not stages:
        return ()
    items = list(stages.values())[-1].get("items") or []
    return tuple(str(i.get("label", "?")) for i in items if isinstance(i, dict))


def _sent_sample(data: dict[str, Any]) -> SentSample:
    labels, fb, version = data.get("labels"), data.get("feedback"), data.get("bundle_version")
    return SentSample(
        labels=tuple(str(x) for x in labels) if isinstance(labels, list) else (),
        bundle_version=version if isinstance(version, int) else 0,
        feedback=fb if isinstance(fb, dict) else None,
    )


class FeedbackOutbox:
    """The sent-samples index and the feedback outbox, in one LMDB environment at ``path``.

    Thread-safe (LMDB serialises writers; readers have their own transactions). Raises
    StoreError on any LMDB failure, with the path and what was being done.
    """

    def __init__(self, path: Path, keep: int = 20_000, map_size: int = 64 * _MIB) -> None:
        if keep < 1:
            raise StoreError(f"feedback outbox {path}: keep must be >= 1, got {keep}")
        self.path = Path(path)
        self.keep = int(keep)
        self._lock = threading.Lock()
        self._map_size = map_size
        try:
            self._open()
        except lmdb.Error as e:
            # Not an LMDB environment any more (a torn card, a stray write): what it held is
            # lost either way, and the device must keep running; set it aside, start empty.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.warning("feedback outbox %s unreadable (%s): moved to %s", self.path, e, aside)
            try:
                os.replace(self.path, aside)
                self._open()
            except (OSError, lmdb.Error) as e2:
                raise StoreError(f"feedback outbox {self.path}: cannot open: {e2}") from e2
        except OSError as e:
            raise StoreError(f"feedback outbox {self.path}: cannot open: {e}") from e
        self._closed = False

    def _open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(
            str(self.path), subdir=True, max_dbs=4, map_size=self._map_size, mode=0o700
        )
        self._env.reader_check()
        self._sent = self._env.open_db(b"sent")  # id -> entry JSON
        self._order = self._env.open_db(b"order")  # u64 seq + id -> b""
        self._queue = self._env.open_db(b"outbox")  # id -> feedback JSON
        self._meta = self._env.open_db(b"meta")

    def _run(self, write: bool, what: str, fn: Callable[[lmdb.Transaction[bytes]], T]) -> T:
        if self._closed:
            raise StoreError(f"feedback outbox {self.path}: {what} after close")
        try:
            with self._env.begin(write=write) as txn:
                return fn(txn)
        except lmdb.MapFullError as e:
            raise StoreError(f"feedback outbox {self.path}: {what}: LMDB map full") from e
        except lmdb.Error as e:
            raise StoreError(f"feedback outbox {self.path}: {what}: LMDB error: {e}") from e

    @staticmethod
    def _load(raw: bytes | None) -> dict[str, Any] | None:
        if raw is None or len(raw) > _MAX_VALUE:
            return None
        try:
            data = json.loads(bytes(raw))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    # ---- the sent index ------------------------------------------------------------------

    def remember(self, record: SampleRecord) -> None:
        """Note that ``record`` is going home (call before releasing it from the store)."""
        rid = record.id.encode()
        entry = json.dumps(
            {
                "labels": list(_labels(record.prediction)),
                "bundle_version": record.bundle_version,
                "feedback": record.feedback.to_dict() if record.feedback else None,
            }
        ).encode()[:_MAX_VALUE]

        def put(txn: lmdb.Transaction[bytes]) -> None:
            raw = txn.get(b"seq", db=self._meta)
            seq = int.from_bytes(raw, "big") + 1 if raw is not None else 1
            txn.put(b"seq", seq.to_bytes(8, "big"), db=self._meta)
            old = txn.get(rid, db=self._sent)
            txn.put(rid, entry, db=self._sent)
            if old is None:
                txn.put(seq.to_bytes(8, "big") + rid, b"", db=self._order)
            over = txn.stat(self._sent)["entries"] - self.keep
            if over > 0:
                cursor = txn.cursor(db=self._order)
                gone: list[bytes] = []
                if cursor.first():
                    for key in cursor.iternext(keys=True, values=False):
                        gone.append(bytes(key))
                        if len(gone) >= over:
                            break
                for key in gone:  # feedback still queued on them is still sent
                    txn.delete(key, db=self._order)
                    txn.delete(key[8:], db=self._sent)

        with self._lock:
            self._run(True, f"remember {record.id}", put)

    def sent(self, sample_id: str) -> SentSample | None:
        """What the device remembers of an uploaded sample, or None."""
        rid = sample_id.encode()
        data = self._run(False, "look up", lambda t: self._load(t.get(rid, db=self._sent)))
        return _sent_sample(data) if data is not None else None

    # ---- the outbox ----------------------------------------------------------------------

    def enqueue(self, sample_id: str, feedback: Feedback) -> SentSample:
        """Queue ``feedback`` for the hub on a sent sample; returns the sample as it was *before*
        (its ``feedback`` is the one this replaces, for the metrics). Raises StoreError if the
        device has no record of sending ``sample_id``."""
        rid = sample_id.encode()
        fb = feedback.to_dict()
        raw_fb = json.dumps(fb).encode()

        def put(txn: lmdb.Transaction[bytes]) -> SentSample:
            data = self._load(txn.get(rid, db=self._sent))
            if data is None:
                raise StoreError(
                    f"no sample {sample_id}: not in the sample store, and not among the "
                    f"{self.keep} samples this device uploaded last"
                )
            before = _sent_sample(data)
            txn.put(rid, json.dumps({**data, "feedback": fb}).encode(), db=self._sent)
            txn.put(rid, raw_fb, db=self._queue)
            return before

        with self._lock:
            return self._run(True, f"queue feedback on {sample_id}", put)

    def pending(self, n: int) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``n`` queued (sample id, feedback), in id order (ids start with their time)."""

        def walk(txn: lmdb.Transaction[bytes]) -> list[tuple[str, dict[str, Any]]]:
            out: list[tuple[str, dict[str, Any]]] = []
            for key, raw in txn.cursor(db=self._queue):
                fb = self._load(raw)
                if fb is None:
                    log.warning("feedback outbox: unreadable entry for %s, skipped", bytes(key))
                    continue
                out.append((bytes(key).decode(errors="replace"), fb))
                if len(out) >= n:
                    break
            return out

        return self._run(False, "read the outbox", walk)

    def done(self, sample_id: str, feedback: dict[str, Any]) -> bool:
        """The hub acknowledged ``feedback`` on ``sample_id``: delete it from the outbox unless a
        newer feedback replaced it meanwhile. True if deleted."""
        rid = sample_id.encode()

        def delete(txn: lmdb.Transaction[bytes]) -> bool:
            if self._load(txn.get(rid, db=self._queue)) != feedback:
                return False
            return bool(txn.delete(rid, db=self._queue))

        with self._lock:
            return self._run(True, f"acknowledge feedback on {sample_id}", delete)

    def drop(self, sample_id: str) -> None:
        """Forget the queued feedback on ``sample_id`` (the hub refused it for good)."""
        rid = sample_id.encode()
        with self._lock:
            self._run(True, f"drop {sample_id}", lambda t: t.delete(rid, db=self._queue))

    def rewrite_all(
        self,
        sent_fn: Callable[[dict[str, Any]], dict[str, Any]],
        queued_fn: Callable[[str, dict[str, Any]], dict[str, Any] | None],
    ) -> int:
        """Rewrite every remembered sample (``sent_fn(entry)``) and every queued feedback
        (``queued_fn(id, feedback)``; None drops it) in one transaction, e.g. to remap labels
        after an ontology change. Returns how many queued feedbacks were dropped."""

        def change(txn: lmdb.Transaction[bytes]) -> int:
            for key, raw in list(txn.cursor(db=self._sent)):
                data = self._load(raw)
                if data is not None:
                    txn.put(bytes(key), json.dumps(sent_fn(data)).encode(), db=self._sent)
            dropped = 0
            for key, raw in list(txn.cursor(db=self._queue)):
                fb = self._load(raw)
                if fb is None:
                    continue
                new = queued_fn(bytes(key).decode(errors="replace"), fb)
                if new is None:
                    txn.delete(bytes(key), db=self._queue)
                    dropped += 1
                elif new != fb:
                    txn.put(bytes(key), json.dumps(new).encode(), db=self._queue)
            return dropped

        with self._lock:
            return self._run(True, "rewrite", change)

    def stats(self) -> dict[str, int]:
        """``queued`` feedback and ``remembered`` sent samples."""

        def read(txn: lmdb.Transaction[bytes]) -> dict[str, int]:
            return {
                "queued": int(txn.stat(self._queue)["entries"]),
                "remembered": int(txn.stat(self._sent)["entries"]),
            }

        return self._run(False, "stats", read)

    def ids(self) -> Sequence[str]:
        """Every remembered sample id, oldest first."""

        def walk(txn: lmdb.Transaction[bytes]) -> list[str]:
            keys = txn.cursor(db=self._order).iternext(values=False)
            return [bytes(k[8:]).decode() for k in keys]

        return self._run(False, "list", walk)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._env.close()

    def __enter__(self) -> FeedbackOutbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
