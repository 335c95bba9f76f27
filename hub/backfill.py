"""Backfill of image signatures: samples stored before migration 0013 join their groups.

A sample stored before the hub computed signatures at ingest (migration 0013), or one whose
ingest stopped between the row and its signature (the hub killed in between), has no
signature: the queue groups it by its exact bytes only, and it never meets its near
duplicates. Migration 0014 marks every sample that has a signature (``signature_state =
'done'``); this module gives the others theirs.

At start-up (:func:`backfill_ctx`, in the app's ``cleanup_ctx``) the leader replica walks the
samples created before it started whose ``signature_state`` is unset, ``batch`` at a time
(oldest id first, through the partial index ``samples_unsigned``): for each one it reads the
image blob, computes the signature (:func:`hub.ranking.signature_of`) and joins the group
(``add_signature``: the same rules, locking and annotation sharing as at ingest). An image
Pillow cannot decode, or a blob that is gone, is marked ``none`` and not tried again. Every
step is idempotent (``add_signature`` of a sample already grouped changes nothing), so a crash
or two replicas at once cost repeated work, never a wrong group. The work runs in a worker
thread, one batch per call, one image in memory at a time, with a pause between batches so
ingest and the pages keep their share of the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from hub.errors import NotFound
from hub.ranking import signature_of
from hub.storage import Blobs, HubDB

__all__ = ["BackfillCounts", "backfill_batch", "backfill_ctx", "run_backfill"]

log = logging.getLogger("leanloop.hub.backfill")


@dataclass
class BackfillCounts:
    """What one or more batches did."""

    tried: int = 0
    grouped: int = 0  # got a signature and joined (or opened) a group
    joined: int = 0  # of those, joined an existing group of near duplicates
    unsigned: int = 0  # no signature: an image Pillow cannot decode, or its blob is gone

    def add(self, other: BackfillCounts) -> None:
        self.tried += other.tried
        self.grouped += other.grouped
        self.joined += other.joined
        self.unsigned += other.unsigned


def backfill_batch(db: HubDB, blobs: Blobs, before: float, batch: int) -> BackfillCounts:
    """Give up to ``batch`` unsigned samples created before ``before`` their signature and
    group. Blocking (a worker thread's job); returns what it did (``tried`` 0: nothing left)."""
    counts = BackfillCounts()
    for sample_id, bundle, sha256 in db.unsigned_samples(before, batch):
        counts.tried += 1
        try:
            image = blobs.read(sha256)
        except NotFound as e:
            log.warning("backfill: sample %s has no image blob (%s)", sample_id, e)
            image = b""
        sig = signature_of(image) if image else None
        if sig is None:
            db.mark_unsigned(sample_id)
            counts.unsigned += 1
            continue
        join = db.add_signature(sample_id, bundle, sig)
        counts.grouped += 1
        counts.joined += join.distance is not None
    return counts


async def run_backfill(
    db: HubDB,
    blobs: Blobs,
    before: float,
    batch: int,
    pause_s: float = 0.05,
    may_run: Callable[[], bool] = lambda: True,
) -> BackfillCounts:
    """Batches until none is left, off the event loop; ``may_run`` false (not the leader)
    waits. Returns the total."""
    total = BackfillCounts()
    while True:
        if not may_run():
            await asyncio.sleep(1.0)
            continue
        counts = await asyncio.to_thread(backfill_batch, db, blobs, before, batch)
        total.add(counts)
        if counts.tried < batch:
            return total
        await asyncio.sleep(pause_s)


async def backfill_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's start-up backfill (``HubConfig.backfill_batch``; 0 turns it off)."""
    from hub.api._common import BLOBS, CONFIG, DB, LEADER

    batch = app[CONFIG].backfill_batch
    task: asyncio.Task[None] | None = None
    if batch > 0:
        started = time.time()

        async def backfill() -> None:
            try:
                total = await run_backfill(
                    app[DB], app[BLOBS], started, batch, may_run=lambda: app[LEADER].is_leader
                )
            except Exception:  # the queue still works without: samples stay grouped by bytes
                log.exception("signature backfill failed; it retries at the next start")
                return
            if total.tried:
                log.info(
                    "signature backfill: %d samples, %d grouped (%d joined a group), %d unsigned",
                    total.tried, total.grouped, total.joined, total.unsigned,
                )  # fmt: skip

        task = asyncio.create_task(backfill(), name="leanloop-backfill")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
