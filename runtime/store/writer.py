"""The store writer: scoring, JPEG encoding and storing, off the frame path.

The frame loop calls :meth:`StoreWriter.offer` after each prediction. ``offer`` only puts a
reference to the frame and its prediction into a bounded queue with ``put_nowait``; when the
queue is full the frame is **dropped and counted** — the production path never waits for the
disk. A single worker thread then, per frame: scores it (:class:`~runtime.sampling.Scorer`),
skips it if the priority is below ``min_priority``, encodes it as JPEG, builds a
:class:`~runtime.store.record.SampleRecord` and puts it in the
:class:`~runtime.store.lmdb_store.SampleStore`, which may evict or reject it.

The writer keeps a reference to the frame array, not a copy: a caller that reuses its frame
buffer must pass a copy. Counters are each written by one thread only (``offered``/``dropped``
by the caller, the rest by the worker), so no lock is needed on the hot path.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import Any

import cv2
import numpy as np

from runtime.errors import LeanloopError
from runtime.pipeline.prediction import Prediction
from runtime.sampling import Scorer
from runtime.store.lmdb_store import SampleStore
from runtime.store.record import SampleRecord, new_sample_id

__all__ = ["StoreWriter"]

log = logging.getLogger("leanloop.store.writer")

_Job = tuple[np.ndarray, Prediction]


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
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.store = store
        self.scorer = scorer
        self.device_id = device_id
        self.jpeg_quality = int(min(100, max(1, jpeg_quality)))
        self.min_priority = float(min_priority)
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._closing = False
        self._abandon = threading.Event()
        # Caller-side counters.
        self.offered = 0
        self.dropped = 0
        # Worker-side counters.
        self.stored = 0
        self.rejected = 0
        self.skipped = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def offer(self, frame: np.ndarray, prediction: Prediction) -> bool:
        """Hand a frame over without blocking; False if it was dropped (queue full or closed)."""
        self.offered += 1
        if self._closing:
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait((frame, prediction))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None or self._abandon.is_set():
                return
            try:
                self._handle(*job)
            except LeanloopError as e:
                self.errors += 1
                log.warning("store writer: %s", e)
            except Exception as e:  # the worker must survive anything a frame can cause
                self.errors += 1
                log.exception("store writer: unexpected %s", e)

    def _handle(self, frame: np.ndarray, prediction: Prediction) -> None:
        scores, priority = self.scorer.score(prediction)
        if priority < self.min_priority:
            self.skipped += 1
            return
        try:
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        except cv2.error:
            ok = False
        if not ok:
            self.errors += 1
            log.warning("store writer: frame %s does not encode as JPEG", prediction.frame_id)
            return
        record = SampleRecord(
            id=new_sample_id(),
            device_id=self.device_id,
            created=time.time(),
            frame_id=prediction.frame_id,
            bundle=prediction.bundle,
            bundle_version=prediction.bundle_version,
            ontology_version=prediction.ontology_version,
            image=buf.tobytes(),
            image_format="jpeg",
            prediction=prediction.to_dict(),
            scores=scores,
            priority=priority,
        )
        if self.store.put(record):
            self.stored += 1
        else:
            self.rejected += 1

    def stats(self) -> dict[str, Any]:
        """Counters since start: offered, dropped, stored, rejected, skipped, errors, queued."""
        return {
            "offered": self.offered,
            "dropped": self.dropped,
            "stored": self.stored,
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
