"""The store writer: scoring, encoding and storing, off the frame path.

The frame loop calls :meth:`StoreWriter.offer` after each prediction. ``offer`` only puts a
reference to the frame, its prediction and the frame's time into a bounded queue with
``put_nowait``; when the queue is full the frame is **dropped and counted** — the production
path never waits for the disk. A single worker thread then takes what is queued, up to
``batch`` frames at a time, and per frame:

1. builds the :class:`~runtime.sampling.SampleContext` — the frame's time and, only when a
   configured strategy needs it (novelty), the 64-bit perceptual hash of the pixels;
2. scores it (:class:`~runtime.sampling.Scorer`);
3. draws whether it joins the **random slice** (probability ``random_slice``, from a seeded
   generator, independent of the score): such a frame is kept whatever its priority and
   flagged ``random_slice`` in the record, for unbiased evaluation on the hub;
4. skips it if it is not in the random slice and its priority is below ``min_priority``, or
   (counted as rejected) if the store is full and its :meth:`~runtime.store.lmdb_store.
   SampleStore.floor` is at least the priority — once the store is full, most frames are
   refused this way without paying for encoding or a disk sync;
5. encodes it as JPEG (``jpeg_quality``) or PNG (``png_compression``).

The batch's records then go to :meth:`~runtime.store.lmdb_store.SampleStore.put_many` in one
durable transaction (one disk sync for the batch, which is what lets a slow disk keep up), and
the scorer is told which frames were kept (novelty remembers their hashes). Near-duplicates
inside one batch — only under a backlog — are therefore not collapsed against each other.

**Write slots** (``max_rate`` > 0, the device default: ``store.max_rate``). Encoding a frame
and writing it is what costs (≈1 ms of JPEG and a transaction per 640×480 frame, against
≈0.1 ms to score it), and on a device it also wears the flash. With a rate, every frame is
still scored, but at most ``max_rate`` frames a second are encoded and written: the first frame
opens a *slot* of ``1 / max_rate`` seconds; the writer holds the highest-priority frame of the
slot (a reference, no copy) and, for the random slice, one frame drawn uniformly from the slot
(reservoir sampling). When the slot ends, a draw with probability ``random_slice`` gives the
write to the uniform pick (flagged ``random_slice``: unbiased over frames), otherwise to the best
frame; steps 4–5 then apply to that one frame. The others are counted ``outranked``. A shadow
copy of a frame the slot holds replaces it (same pixels, more to say); a shadow copy of a frame
already stored rewrites that record outside the slots (at most one per stored frame). So the
store keeps the best frame of every second rather than the first frames of a burst, and the
writer's cost on the frame path is the scoring only. ``max_rate=0`` writes every frame that
passes steps 3–4 (the constructor's default; what tests, replays and benches of the store use).

The worker thread runs at ``nice`` +10 (Linux schedules threads individually), so on a busy
device the frame path gets the cores first. The writer keeps a reference to the frame array,
not a copy: a caller that reuses its frame
buffer must pass a copy. Counters are each written by one thread only (``offered``/``dropped``
by the caller, the rest by the worker), so no lock is needed on the hot path.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import cv2
import numpy as np

from runtime.errors import LeanloopError
from runtime.pipeline.prediction import Prediction
from runtime.sampling import SampleContext, Scorer, make_scorer
from runtime.sampling.novelty import dhash
from runtime.sources import source_key
from runtime.store.lmdb_store import ClassQuota, SampleStore
from runtime.store.record import SampleRecord, new_sample_id

if TYPE_CHECKING:
    from runtime.config import DeviceConfig

__all__ = ["StoreWriter", "open_store_and_writer"]

log = logging.getLogger("leanloop.store.writer")

_Job = tuple[np.ndarray, Prediction, float]
_T = TypeVar("_T")


@dataclass
class _Candidate:
    """A scored frame, before the decision to encode and store it."""

    frame: np.ndarray
    prediction: Prediction
    ts: float
    ctx: SampleContext
    scores: dict[str, float]
    priority: float
    earlier: tuple[str, bool] | None = None  # (sample id, in slice) of the record it replaces
    kept: SampleRecord | None = None  # that record
    in_slice: bool = False


_NICE = 10
_RECENT = 1024  # frame ids remembered for replacing a frame's record with its shadow copy


class StoreWriter:
    """Background scorer + writer fed through a bounded, shedding queue."""

    def __init__(
        self,
        store: SampleStore,
        scorer: Scorer,
        device_id: str,
        jpeg_quality: int = 90,
        queue_size: int = 64,
        min_priority: float = 0.0,
        *,
        encoding: Literal["jpeg", "png"] = "jpeg",
        png_compression: int = 3,
        random_slice: float = 0.0,
        seed: int = 0,
        batch: int = 4,
        max_rate: float = 0.0,
        source: str | None = None,
        camera: str | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if encoding not in ("jpeg", "png"):
            raise ValueError(f"encoding must be jpeg or png, got {encoding!r}")
        if not 0.0 <= random_slice <= 1.0:
            raise ValueError(f"random_slice must be in [0, 1], got {random_slice}")
        if not (math.isfinite(max_rate) and max_rate >= 0.0):
            raise ValueError(f"max_rate must be a finite rate >= 0, got {max_rate}")
        self.store = store
        self.scorer = scorer
        self.device_id = device_id
        self.encoding = encoding
        self.jpeg_quality = int(min(100, max(1, jpeg_quality)))
        self.png_compression = int(min(9, max(0, png_compression)))
        self.min_priority = float(min_priority)
        self.random_slice = float(random_slice)
        self.batch = max(1, int(batch))
        self.max_rate = float(max_rate)
        # The frame source's key: each write carries the newest frame decided, so the store
        # persists the source cursor in the same transaction (SampleStore.put_many).
        self.source = source
        # The source's name, kept on every record (``extra.camera``): replay slices by camera.
        self.camera = camera
        self._slot_through: str | None = None
        self._rng = random.Random(seed)
        # The open write slot (max_rate > 0): its end (monotonic), its best frame, its uniform
        # pick and how many distinct frames it has seen.
        self._slot_end: float | None = None
        self._best: _Candidate | None = None
        self._pick: _Candidate | None = None
        self._seen = 0
        self._floor: float | None = None
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._closing = False
        self._abandon = threading.Event()
        # Caller-side counters (the frame loop and the shadow feeder both offer).
        self._count_lock = threading.Lock()
        self.offered = 0
        self.dropped = 0
        # Recently stored frames: frame id -> (sample id, in the random slice). A shadow
        # comparison arrives after the production copy of the same frame was offered; its
        # record (same frame, now with ``Prediction.shadow``) replaces that one rather than
        # storing the frame twice.
        self._recent: OrderedDict[str, tuple[str, bool]] = OrderedDict()
        # Worker-side counters.
        self.stored = 0
        self.stored_random = 0
        self.rejected = 0
        self.skipped = 0
        self.errors = 0
        self.outranked = 0
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def offer(
        self, frame: np.ndarray, prediction: Prediction, timestamp: float | None = None
    ) -> bool:
        """Hand a frame over without blocking; False if it was dropped (queue full or closed).

        ``timestamp`` is the frame's time (unix seconds; default: now), which time-of-day rules
        read and the record keeps as ``created``.
        """
        with self._count_lock:
            self.offered += 1
        if self._closing:
            with self._count_lock:
                self.dropped += 1
            return False
        try:
            self._queue.put_nowait(
                (frame, prediction, time.time() if timestamp is None else timestamp)
            )
        except queue.Full:
            with self._count_lock:
                self.dropped += 1
            return False
        return True

    def _run(self) -> None:
        # Linux schedules threads as tasks: a nicer writer thread yields the cores to the
        # frame path whenever both want them (raising one's own niceness needs no privilege).
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICE)
        if self.max_rate > 0.0:
            self._run_slots()
            return
        while True:
            job = self._queue.get()
            if job is None or self._abandon.is_set():
                return
            jobs = [job]
            last = False
            while len(jobs) < self.batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    last = True
                    break
                jobs.append(more)
            self._handle(jobs)
            if last:
                return

    def _run_slots(self) -> None:
        """The loop with write slots: score every frame, write one per slot (module story)."""
        while True:
            left = None if self._slot_end is None else max(0.0, self._slot_end - time.monotonic())
            try:
                job = self._queue.get(timeout=left)
            except queue.Empty:
                self._close_slot()  # the slot is over: write its frame
                continue
            if self._abandon.is_set():
                return
            if job is None:
                self._close_slot()
                return
            self._guarded(partial(self._offer_to_slot, *job))
            if self._slot_end is not None and time.monotonic() >= self._slot_end:
                self._close_slot()

    def _guarded(self, fn: Callable[[], _T]) -> _T | None:
        """Run ``fn``; the worker must survive anything a frame can cause (counted, logged)."""
        try:
            return fn()
        except LeanloopError as e:
            self.errors += 1
            log.warning("store writer: %s", e)
        except Exception as e:
            self.errors += 1
            log.exception("store writer: unexpected %s", e)
        return None

    def _offer_to_slot(self, frame: np.ndarray, prediction: Prediction, ts: float) -> None:
        c = self._score(frame, prediction, ts)
        if c.earlier is not None:
            # The shadow copy of a frame already stored: rewrite that record now (at most one
            # per stored frame, so still bounded by the rate).
            if self._admit(c):
                self._write([c])
            return
        fid = prediction.frame_id
        best, pick = self._best, self._pick
        if (best is not None and best.prediction.frame_id == fid) or (
            pick is not None and pick.prediction.frame_id == fid
        ):
            # A later copy (the shadow's) of a frame this slot holds: same pixels, more to say.
            self.outranked += 1
            if pick is not None and pick.prediction.frame_id == fid:
                self._pick = c
            if best is not None and best.prediction.frame_id == fid:
                c.priority = max(c.priority, best.priority)
                self._best = c
            elif best is None or c.priority > best.priority:
                self._best = c
            return
        if self._slot_end is None:
            self._slot_end = time.monotonic() + 1.0 / self.max_rate
        if prediction.shadow is None and (self._slot_through or "") < fid:
            self._slot_through = fid
        self._seen += 1
        if best is None or c.priority > best.priority:
            self._best = c
        if self._rng.random() * self._seen < 1.0:  # reservoir of one: uniform over the slot
            self._pick = c

    def _close_slot(self) -> None:
        best, pick, seen = self._best, self._pick, self._seen
        through, self._slot_through = self._slot_through, None
        self._slot_end, self._best, self._pick, self._seen = None, None, None, 0
        if best is None:
            return
        chosen = best
        if pick is not None and self.random_slice > 0.0 and self._rng.random() < self.random_slice:
            chosen = pick
            chosen.in_slice = True
        self.outranked += seen - 1
        self._refresh_floor()
        if self._admit(chosen):
            self._guarded(lambda: self._write([chosen], through))

    def _handle(self, jobs: list[_Job]) -> None:
        """Without write slots: score, admit and write a batch of frames."""
        self._refresh_floor()
        admitted: list[_Candidate] = []
        through = max((p.frame_id for _, p, _ in jobs if p.shadow is None), default=None)
        for frame, prediction, ts in jobs:
            if self._abandon.is_set():
                return
            c = self._guarded(partial(self._score, frame, prediction, ts))
            if c is None:
                continue
            if c.earlier is None:
                c.in_slice = self.random_slice > 0.0 and self._rng.random() < self.random_slice
            if self._admit(c):
                admitted.append(c)
        if admitted:
            self._guarded(lambda: self._write(admitted, through))

    def _refresh_floor(self) -> None:
        """Read the store's floor once before admitting frames (None: room, or unreadable)."""
        try:
            self._floor = self.store.floor()
        except LeanloopError:
            self._floor = None

    def _score(self, frame: np.ndarray, prediction: Prediction, ts: float) -> _Candidate:
        """Score a frame; for a shadow copy of a frame still stored, find the record it
        replaces."""
        image_hash = None
        if self.scorer.needs_image_hash:
            try:
                image_hash = dhash(frame)
            except (cv2.error, ValueError, TypeError):
                image_hash = None  # novelty reads "unknown"
        ctx = SampleContext(timestamp=ts, image_hash=image_hash)
        scores, priority = self.scorer.score(prediction, ctx)
        c = _Candidate(frame, prediction, ts, ctx, scores, priority)
        earlier = self._recent.get(prediction.frame_id) if prediction.shadow is not None else None
        if earlier is not None:
            try:
                kept = self.store.get(earlier[0])
            except LeanloopError:
                kept = None
            if kept is not None and kept.upload_state == "pending":
                c.earlier, c.kept, c.in_slice = earlier, kept, earlier[1]
                c.priority = max(priority, kept.priority)
            # else: gone home or evicted: this copy is a new sample
        return c

    def _admit(self, c: _Candidate) -> bool:
        """Whether ``c`` is worth encoding: in the random slice, or above ``min_priority`` and
        the full store's floor (counted skipped / rejected otherwise)."""
        if c.in_slice:
            return True
        if c.priority < self.min_priority:
            self.skipped += 1
            return False
        if self._floor is not None and c.priority <= self._floor:
            self.rejected += 1  # the full store would refuse it: do not pay for encoding
            return False
        return True

    def _write(self, cands: list[_Candidate], through: str | None = None) -> None:
        """Encode ``cands`` and store them in one transaction (with the source cursor
        ``through``: the newest frame decided)."""
        built: list[tuple[SampleRecord, _Candidate]] = []
        for c in cands:
            if self._abandon.is_set():
                return
            data = self._encode(c.frame)
            if data is None:
                self.errors += 1
                log.warning(
                    "store writer: frame %s does not encode as %s",
                    c.prediction.frame_id,
                    self.encoding,
                )
                continue
            p = c.prediction
            record = SampleRecord(
                id=c.earlier[0] if c.earlier is not None else new_sample_id(),
                device_id=self.device_id,
                created=c.ts,
                frame_id=p.frame_id,
                bundle=p.bundle,
                bundle_version=p.bundle_version,
                ontology_version=p.ontology_version,
                image=data,
                image_format=self.encoding,
                prediction=p.to_dict(),
                scores=c.scores,
                priority=c.priority,
                random_slice=c.in_slice,
                # A human's word on the earlier copy stays with the frame.
                feedback=c.kept.feedback if c.kept is not None else None,
                extra={"camera": self.camera} if self.camera else {},
            )
            built.append((record, c))
        if not built:
            return
        try:
            done = self.store.put_many([r for r, _ in built], self.source, through)
        except LeanloopError as e:
            self.errors += len(built)
            log.warning("store writer: %s", e)
            return
        for (record, c), ok in zip(built, done, strict=True):
            if ok:
                self.stored += 1
                self.stored_random += record.random_slice
                self.scorer.kept(c.prediction, c.ctx)
                self._recent[record.frame_id] = (record.id, record.random_slice)
                self._recent.move_to_end(record.frame_id)
                while len(self._recent) > _RECENT:
                    self._recent.popitem(last=False)
            else:
                self.rejected += 1

    def _encode(self, frame: np.ndarray) -> bytes | None:
        if self.encoding == "png":
            ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, self.png_compression]
        else:
            ext, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        try:
            ok, buf = cv2.imencode(ext, frame, params)
        except cv2.error:
            return None
        return buf.tobytes() if ok else None

    def stats(self) -> dict[str, Any]:
        """Counters since start: offered, dropped, stored (of which stored_random), rejected,
        skipped, errors, outranked (lost their write slot), held (in the open slot), queued."""
        return {
            "offered": self.offered,
            "dropped": self.dropped,
            "stored": self.stored,
            "stored_random": self.stored_random,
            "rejected": self.rejected,
            "skipped": self.skipped,
            "errors": self.errors,
            "outranked": self.outranked,
            "held": self._seen,
            "queued": self._queue.qsize(),
        }

    def close(self, timeout: float = 5.0) -> bool:
        """Stop accepting frames and drain the queue; True if everything queued was handled.

        After ``timeout`` seconds the rest is abandoned (the worker stops at the next frame), so
        the store can be closed right after.
        """
        if self._closing and not self._thread.is_alive():
            return not self._abandon.is_set()
        self._closing = True
        deadline = time.monotonic() + max(0.0, timeout)
        with contextlib.suppress(queue.Full):  # full until the deadline: abandoned below
            self._queue.put(None, timeout=max(0.0, timeout))
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._abandon.set()
            log.warning("store writer: %d frame(s) abandoned at close", self._queue.qsize())
            return False
        return True


def open_store_and_writer(cfg: DeviceConfig, path: Path) -> tuple[SampleStore, StoreWriter]:
    """The device's sample store at ``path`` and its writer, as ``cfg`` (``store``, ``sampling``,
    ``device_id``) configures them. Raises StoreError or ConfigError."""
    st, sa = cfg.store, cfg.sampling
    quotas = {k: ClassQuota(q.max_share, q.max_count) for k, q in st.quotas.items()}
    store = SampleStore(
        path,
        max_bytes=st.max_bytes,
        quotas=quotas,
        random_share=st.random_slice_share,
        metasync=st.sync == "full",
    )
    try:
        scorer = make_scorer(sa.weights, sa.reducer, sa.seed, sa.strategy_options())
        writer = StoreWriter(
            store,
            scorer,
            device_id=cfg.device_id,
            jpeg_quality=st.jpeg_quality,
            queue_size=st.queue_size,
            min_priority=st.min_priority,
            encoding=st.encoding,
            png_compression=st.png_compression,
            random_slice=st.random_slice if st.random_slice_share > 0 else 0.0,
            seed=sa.seed,
            max_rate=st.max_rate,
            source=source_key(cfg.source),
            camera=cfg.source.name,
        )
    except BaseException:
        store.close()
        raise
    return store, writer
