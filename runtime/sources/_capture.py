"""A live capture (camera or stream) read on its own thread, keeping only the latest frame.

A reader thread opens the capture (OpenCV's FFmpeg or V4L2 backend), reads frames as fast as
the camera sends them — a live stream must be drained or it stalls or lags — and leaves the
newest one in a one-frame slot. The frame loop takes the slot when it is ready for a frame;
a frame that is overwritten before it was taken is **dropped and counted** (the pipeline is
slower than the camera), never queued. With ``fps_limit``, frames closer together than
``1 / fps_limit`` are skipped at the reader (counted as ``capped``) so the pipeline is not
woken for them.

When the capture fails to open or a read fails (the stream stopped, the camera was unplugged),
the reader releases it and tries again after a backoff that doubles from ``backoff_min_s`` up
to ``backoff_max_s`` and resets once frames flow again. Each frame id is the source name and
the capture time in nanoseconds (``cam0@1733312345123456789``): stable, and in time order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from runtime.sources.base import Frame, SourceHealth

__all__ = ["LiveCapture"]

log = logging.getLogger("leanloop.source")

Opener = Callable[[], "cv2.VideoCapture"]


class LiveCapture:
    """The latest frame of a live capture; see the module story."""

    waits = True

    def __init__(
        self,
        kind: str,
        name: str,
        opener: Opener,
        *,
        fps_limit: float = 0.0,
        poll_interval_s: float = 0.2,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        describe: str = "",
    ) -> None:
        self.kind = kind
        self.name = name
        self._opener = opener
        self._fps_limit = fps_limit
        self._poll = poll_interval_s
        self._backoff_min = backoff_min_s
        self._backoff_max = backoff_max_s
        self._describe = describe or name
        self._health = SourceHealth(kind, name)
        self._cond = threading.Condition()
        self._slot: tuple[np.ndarray, int] | None = None
        self._stop = threading.Event()
        self._opened_once = threading.Event()
        self._first_attempt = threading.Event()
        self._last_out = time.monotonic()
        self._thread = threading.Thread(target=self._read_loop, name=f"source-{name}", daemon=True)
        self._thread.start()

    # ---- reader thread ----------------------------------------------------------------

    def _fail(self, what: str) -> None:
        h = self._health
        h.errors += 1
        if h.last_error != what:
            log.warning("source %s (%s): %s", self.name, self._describe, what)
        h.last_error = what

    def _read_loop(self) -> None:
        backoff = self._backoff_min
        h = self._health
        while not self._stop.is_set():
            try:
                cap = self._opener()
            except Exception as e:  # a backend may raise on a bad URL or device
                cap = None
                self._fail(f"cannot open: {type(e).__name__}: {e}")
            if cap is not None and not cap.isOpened():
                cap.release()
                cap = None
                self._fail("cannot open")
            self._first_attempt.set()
            if cap is None:
                h.state = "reconnecting" if self._opened_once.is_set() else "connecting"
                self._stop.wait(backoff)
                backoff = min(self._backoff_max, backoff * 2)
                continue
            if self._opened_once.is_set():
                h.reconnects += 1
                log.info("source %s: reconnected", self.name)
            self._opened_once.set()
            h.state = "streaming"
            got_frames = self._drain(cap)
            cap.release()
            if self._stop.is_set():
                break
            self._fail("stream lost" if got_frames else "no frame after open")
            h.state = "reconnecting"
            if got_frames:
                backoff = self._backoff_min
            self._stop.wait(backoff)
            backoff = min(self._backoff_max, backoff * 2)
        h.state = "closed"

    def _drain(self, cap: cv2.VideoCapture) -> bool:
        """Read until the capture fails or we stop; True if any frame came."""
        h = self._health
        min_gap_ns = int(1e9 / self._fps_limit) if self._fps_limit > 0 else 0
        next_ns = 0
        got = False
        while not self._stop.is_set():
            ok, img = cap.read()
            if not ok or img is None or img.size == 0:
                return got
            got = True
            now_ns = time.time_ns()
            if min_gap_ns and now_ns < next_ns:
                h.capped += 1
                continue
            next_ns = now_ns + min_gap_ns
            with self._cond:
                if self._slot is not None:
                    h.dropped += 1
                self._slot = (img, now_ns)
                self._cond.notify()
        return got

    # ---- frame loop side --------------------------------------------------------------

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the first open attempt ended; True if the capture is open."""
        self._first_attempt.wait(timeout)
        return self._opened_once.is_set()

    @property
    def tried(self) -> bool:
        """True once the first open attempt ended (opened or not)."""
        return self._first_attempt.is_set()

    def next(self) -> Frame | None:
        with self._cond:
            if self._slot is None:
                self._cond.wait(self._poll)
            got, self._slot = self._slot, None
        if got is None:
            return None
        img, ts_ns = got
        h = self._health
        h.frames += 1
        h.last_frame_at = ts_ns / 1e9
        self._last_out = time.monotonic()
        return Frame(id=f"{self.name}@{ts_ns}", ts=ts_ns / 1e9, image=img)

    def done(self, frame: Frame | None = None) -> None:
        pass

    def persist(self) -> None:
        pass

    def resume_after(self, frame_id: str) -> None:
        pass  # a live frame is never read twice

    def idle_for(self) -> float:
        return time.monotonic() - self._last_out

    def health(self) -> dict[str, Any]:
        return self._health.as_dict()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        # A reader blocked in an open or read gives up within the capture's own timeout; the
        # service does not wait for that (its stop must stay quick): the daemon thread ends by
        # itself or with the process.
        self._thread.join(timeout=1.0)
