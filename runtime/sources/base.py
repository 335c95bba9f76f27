"""What every frame source gives the frame loop: :class:`Frame`, the :class:`Source` protocol and
the settings every source shares.

A source hands out one frame at a time (:meth:`Source.next`), each with an id that is stable for
that frame of that source (a file name, a frame number in a video file, the capture time of a
live frame) and the time it was captured. Live sources (cameras, streams) keep only the latest
frame: when the pipeline is slower than the camera, older frames are dropped and counted,
never queued. :meth:`Source.health` is what ``leanloop status`` and the metrics show.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Frame", "Source", "SourceHealth", "SourceSettingsBase"]


class SourceSettingsBase(BaseModel):
    """Settings every source has."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="cam0", min_length=1, description="source name in ids and metrics")
    poll_interval_s: float = Field(
        default=0.2, gt=0, description="how long the frame loop waits when no frame is ready"
    )
    fps_limit: float = Field(
        default=0.0, ge=0, description="frames per second handed to the pipeline at most; 0: all"
    )


@dataclass(slots=True)
class Frame:
    """One frame: encoded bytes (files) or a decoded BGR array (cameras, streams), or both."""

    id: str
    ts: float  # capture time, unix seconds
    data: bytes | None = None
    image: np.ndarray | None = None

    def encoded(self) -> bytes:
        """The frame as encoded bytes (JPEG at quality 95 when only pixels are held)."""
        if self.data is None:
            if self.image is None:
                return b""
            ok, buf = cv2.imencode(".jpg", self.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            self.data = buf.tobytes() if ok else b""
        return self.data


@dataclass
class SourceHealth:
    """Counters and state of one source, as ``status`` and the metrics show them.

    ``state``: ``connecting`` (first open), ``streaming`` (frames arrive), ``reconnecting``
    (lost, backing off), ``idle`` (a folder with nothing new), ``ended`` (a file read to its
    end), ``closed``.
    """

    kind: str
    name: str
    state: str = "connecting"
    frames: int = 0  # handed to the pipeline
    dropped: int = 0  # overwritten before the pipeline took them (pipeline slower than camera)
    capped: int = 0  # skipped by the frame-rate cap
    reconnects: int = 0
    errors: int = 0  # failed opens and reads
    last_error: str | None = None
    last_frame_at: float | None = None  # unix time of the last frame handed out
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        age = None if self.last_frame_at is None else round(time.time() - self.last_frame_at, 2)
        return {
            "kind": self.kind,
            "name": self.name,
            "state": self.state,
            "frames": self.frames,
            "dropped": self.dropped,
            "capped": self.capped,
            "reconnects": self.reconnects,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_frame_age_s": age,
        }


class Source(Protocol):
    """A frame source. ``next`` is called from the frame loop only."""

    #: True when ``next`` itself waits (up to ``poll_interval_s``) for a frame; the frame loop
    #: then does not sleep between empty polls.
    waits: bool

    def next(self) -> Frame | None:
        """The next frame, or None when none is ready now."""
        ...

    def done(self, frame: Frame) -> None:
        """The frame loop finished ``frame`` (its result is written)."""
        ...

    def persist(self) -> None:
        """Store the resume position now (at stop)."""
        ...

    def resume_after(self, frame_id: str) -> None:
        """Never hand out ``frame_id`` or a frame before it (the sample store's cursor: frames
        up to it were decided in a committed store transaction)."""
        ...

    def idle_for(self) -> float:
        """Seconds since the last frame was handed out (the uploader's idle gate)."""
        ...

    def health(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
