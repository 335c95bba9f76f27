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

The worker thread runs at ``nice`` +10 (Linux schedules threads individually), so on a busy
device the frame path gets the cores first. The writer keeps a reference to the frame array,
not a copy: a caller that reuses its frame
buffer must pass a copy. Counters are each written by one thread only (``offered``/``dropped``
by the caller, the rest by the worker), so no lock is needed on the hot path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from runtime.errors import LeanloopError
from runtime.pipeline.prediction import Prediction
from runtime.sampling import SampleContext, Scorer, make_scorer
from runtime.sampling.novelty import dhash
from runtime.store.lmdb_store import ClassQuota, SampleStore
from runtime.store.record import SampleRecord, new_sample_id

if TYPE_CHECKING:
    from runtime.config import DeviceConfig

__all__ = ["StoreWriter", "open_store_and_writer"]

log = logging.getLogger("leanloop.store.writer")

_Job = tuple[np.ndarray, Prediction, float]
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
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if encoding not in ("jpeg", "png"):
            raise ValueError(f"encoding must be jpeg or png, got {encoding!r}")
        if not 0.0 <= random_slice <= 1.0:
            raise ValueError(f"random_slice must be in [0, 1], got {random_slice}")
        self.store = store
        self.scorer = scorer
        self.device_id = device_id
        self.encoding = encoding
        self.jpeg_quality = int(min(100, max(1, jpeg_quality)))
        self.png_compression = int(min(9, max(0, png_compression)))
        self.min_priority = float(min_priority)
        self.random_slice = float(random_slice)
        self.batch = max(1, int(batch))
        self._rng = random.Random(seed)
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

    def _handle(self, jobs: list[_Job]) -> None:
        built: list[tuple[SampleRecord, Prediction, SampleContext]] = []
        try:
            self._floor = self.store.floor()
        except LeanloopError:
            self._floor = None
        for frame, prediction, ts in jobs:
            if self._abandon.is_set():
                return
            try:
                one = self._build(frame, prediction, ts)
            except LeanloopError as e:
                self.errors += 1
                log.warning("store writer: %s", e)
                continue
            except Exception as e:  # the worker must survive anything a frame can cause
                self.errors += 1
                log.exception("store writer: unexpected %s", e)
                continue
            if one is not None:
                built.append(one)
        if not built:
            return
        try:
            done = self.store.put_many([r for r, _, _ in built])
        except LeanloopError as e:
            self.errors += len(built)
            log.warning("store writer: %s", e)
            return
        for (record, prediction, ctx), ok in zip(built, done, strict=True):
            if ok:
                self.stored += 1
                self.stored_random += record.random_slice
                self.scorer.kept(prediction, ctx)
                self._recent[record.frame_id] = (record.id, record.random_slice)
                self._recent.move_to_end(record.frame_id)
                while len(self._recent) > _RECENT:
                    self._recent.popitem(last=False)
            else:
                self.rejected += 1

    def _build(
        self, frame: np.ndarray, prediction: Prediction, ts: float
    ) -> tuple[SampleRecord, Prediction, SampleContext] | None:
        image_hash = None
        if self.scorer.needs_image_hash:
            try:
                image_hash = dhash(frame)
            except (cv2.error, ValueError, TypeError):
                image_hash = None  # novelty reads "unknown"
        ctx = SampleContext(timestamp=ts, image_hash=image_hash)
        scores, priority = self.scorer.score(prediction, ctx)
        earlier = self._recent.get(prediction.frame_id) if prediction.shadow is not None else None
        kept: SampleRecord | None = None
        if earlier is not None:
            try:
                kept = self.store.get(earlier[0])
            except LeanloopError:
                kept = None
            if kept is None or kept.upload_state != "pending":
                earlier = None  # gone home or evicted: this copy is a new sample
        if earlier is not None:
            in_slice = earlier[1]
            priority = max(priority, kept.priority) if kept is not None else priority
        else:
            in_slice = self.random_slice > 0.0 and self._rng.random() < self.random_slice
        if not in_slice and priority < self.min_priority:
            self.skipped += 1
            return None
        if not in_slice and self._floor is not None and priority <= self._floor:
            self.rejected += 1  # the full store would refuse it: do not pay for encoding
            return None
        data = self._encode(frame)
        if data is None:
            self.errors += 1
            log.warning(
                "store writer: frame %s does not encode as %s", prediction.frame_id, self.encoding
            )
            return None
        record = SampleRecord(
            id=earlier[0] if earlier is not None else new_sample_id(),
            device_id=self.device_id,
            created=ts,
            frame_id=prediction.frame_id,
            bundle=prediction.bundle,
            bundle_version=prediction.bundle_version,
            ontology_version=prediction.ontology_version,
            image=data,
            image_format=self.encoding,
            prediction=prediction.to_dict(),
            scores=scores,
            priority=priority,
            random_slice=in_slice,
            # A human's word on the earlier copy stays with the frame.
            feedback=kept.feedback if kept is not None and earlier is not None else None,
        )
        return record, prediction, ctx

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
        skipped, errors, queued."""
        return {
            "offered": self.offered,
            "dropped": self.dropped,
            "stored": self.stored,
            "stored_random": self.stored_random,
            "rejected": self.rejected,
            "skipped": self.skipped,
            "errors": self.errors,
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
        )
    except BaseException:
        store.close()
        raise
    return store, writer
