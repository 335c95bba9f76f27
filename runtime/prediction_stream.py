"""The prediction stream: every prediction's metadata (never pixels) on its way to the hub.

The hub measures the fleet (event rates, latency, errors per cohort and version) and replays
candidates on history; both need what every frame produced, not only the samples worth an
image. So the device keeps a small record of each prediction — when, which bundle version, the
final label and score, the item count, latency, the error if any — and ships them in
compressed batches inside the same upload windows and byte budget as samples:

1. the frame path calls :meth:`PredictionSpool.add`: one dict appended under a lock, or shed
   and counted when ``max_pending`` are already waiting (it never blocks a frame);
2. the uploader's thread calls :meth:`PredictionSpool.seal`: the pending events become one
   **segment**, ``<state>/predictions/<first id>.json.gz``, written atomically, whose bytes are
   exactly the request body; segments past ``max_bytes`` are dropped oldest first (counted);
3. the uploader sends sealed segments oldest first (:meth:`pending`), charging each to the
   budget before it goes, and deletes one only when the hub acknowledged it (:meth:`done`).
   A segment cut mid-way is sent again whole: event ids are unique per device, so the hub
   keeps each prediction once. Segments survive restarts.

:class:`PredictionEvent` is the wire format; the hub validates every event with it.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runtime._atomic import atomic_write_bytes

__all__ = ["PREDICTIONS_DIR", "PredictionBatch", "PredictionEvent", "PredictionSpool", "event_of"]

log = logging.getLogger("leanloop.predictions")

PREDICTIONS_DIR = "predictions"
_SUFFIX = ".json.gz"


class PredictionEvent(BaseModel):
    """One prediction's metadata as the device sends it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f]{16}-[0-9a-f]{1,8}$", description="time-ordered, unique")
    time: float = Field(description="unix time of the frame")
    bundle: str = Field(max_length=64)
    version: int = Field(ge=0)
    ontology_version: int = Field(default=0, ge=0)
    label: str | None = Field(default=None, max_length=200, description="best final item")
    score: float | None = None
    items: int = Field(default=0, ge=0, description="final items (e.g. detections)")
    latency_ms: float | None = None
    error: str | None = Field(default=None, max_length=500)


class PredictionBatch(BaseModel):
    """``POST /device/predictions`` (gzip-compressed JSON)."""

    model_config = ConfigDict(extra="forbid")

    events: list[PredictionEvent] = Field(max_length=5000)


def event_of(prediction: Any, now: float, seq: int) -> dict[str, Any]:
    """The metadata of one :class:`~runtime.pipeline.prediction.Prediction`."""
    items = prediction.final_items() if prediction.error is None else []
    best = max(items, key=lambda i: i.score, default=None)
    return {
        "id": f"{int(now * 1e9):016x}-{seq & 0xFFFFFFFF:x}",
        "time": now,
        "bundle": prediction.bundle,
        "version": prediction.bundle_version,
        "ontology_version": prediction.ontology_version,
        "label": best.label if best else None,
        "score": round(float(best.score), 5) if best else None,
        "items": len(items),
        "latency_ms": round(float(prediction.latency_ms), 3),
        "error": prediction.error[:500] if prediction.error else None,
    }


class PredictionSpool:
    """Pending prediction events in memory, sealed into compressed segments on disk."""

    def __init__(
        self,
        folder: Path,
        max_pending: int = 20_000,
        max_events_per_segment: int = 2_000,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        self.max_pending = max_pending
        self.max_events = max_events_per_segment
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._seq = 0
        self.shed = 0  # events dropped on the frame path (too many pending)
        self.dropped = 0  # events in segments dropped for the disk cap
        self.sent = 0  # events the hub acknowledged (since start)

    def add(self, prediction: Any, now: float | None = None) -> None:
        """Queue one prediction's metadata (frame path: never blocks, sheds when full)."""
        t = time.time() if now is None else now
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self.shed += 1
                return
            self._seq += 1
            self._pending.append(event_of(prediction, t, self._seq))

    def seal(self) -> int:
        """Write the pending events as segments; enforce the disk cap. Returns events sealed."""
        with self._lock:
            events, self._pending = self._pending, []
        for k in range(0, len(events), self.max_events):
            chunk = events[k : k + self.max_events]
            body = gzip.compress(json.dumps({"events": chunk}).encode(), mtime=0)
            atomic_write_bytes(self.folder / f"{chunk[0]['id']}{_SUFFIX}", body)
        self._enforce_cap()
        return len(events)

    def _segments(self) -> list[Path]:
        return sorted(self.folder.glob(f"*{_SUFFIX}"))

    def _enforce_cap(self) -> None:
        segs = self._segments()
        sizes = [p.stat().st_size for p in segs]
        total = sum(sizes)
        for p, size in zip(segs, sizes, strict=True):
            if total <= self.max_bytes:
                break
            self.dropped += _count(p)
            p.unlink(missing_ok=True)
            total -= size
            log.warning("prediction stream over %d bytes on disk: dropped %s", self.max_bytes, p)

    def pending(self, limit: int) -> list[tuple[Path, bytes]]:
        """Up to ``limit`` sealed segments, oldest first, with their body bytes."""
        out = []
        for p in self._segments()[:limit]:
            try:
                out.append((p, p.read_bytes()))
            except OSError:
                continue
        return out

    def done(self, segment: Path, events: int) -> None:
        """The hub acknowledged a segment: forget it."""
        segment.unlink(missing_ok=True)
        self.sent += events

    def stats(self) -> dict[str, int]:
        """Counts for ``status.json``."""
        with self._lock:
            waiting = len(self._pending)
        return {
            "pending": waiting,
            "segments": len(self._segments()),
            "sent": self.sent,
            "shed": self.shed,
            "dropped": self.dropped,
        }


def _count(segment: Path) -> int:
    try:
        return len(json.loads(gzip.decompress(segment.read_bytes()))["events"])
    except (OSError, ValueError, KeyError, EOFError):
        return 0
