"""``type: video`` — frames of a video file (MP4, AVI, MKV, ...), each once, in order.

Unlike a live capture, a file does not run away from a slow pipeline: every frame is read, on
the frame loop's thread (``fps_limit`` paces them, e.g. at the recording's rate to replay it
as a camera would). The frame id is the file name and the frame number (``gate.mp4#00001234``,
with ``~000N`` after the name on the N-th pass when ``loop`` is on). The next frame number is
persisted every ``persist_every`` frames and on close, with the file's size and mtime, so a
restart resumes where it stopped unless the file was replaced. At the end of the file the
source is ``ended`` (or starts again with ``loop``).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Literal

import cv2
from pydantic import Field

from runtime._atomic import atomic_write_json
from runtime.sources.base import Frame, SourceHealth, SourceSettingsBase

__all__ = ["VideoFileSource", "VideoSourceSettings"]


class VideoSourceSettings(SourceSettingsBase):
    """``type: video`` — a video file, read once (or in a loop)."""

    type: Literal["video"]
    path: Path = Field(description="the video file")
    loop: bool = Field(default=False, description="start again at the end of the file")


class VideoFileSource:
    waits = False

    def __init__(
        self,
        path: Path,
        cursor_file: Path,
        *,
        name: str = "video",
        loop: bool = False,
        fps_limit: float = 0.0,
        persist_every: int = 25,
    ) -> None:
        self.path = Path(path)
        self.cursor_file = cursor_file
        self.loop = loop
        self.fps_limit = fps_limit
        self.persist_every = persist_every
        self._health = SourceHealth("video", name)
        self._cap: cv2.VideoCapture | None = None
        self._index = 0  # next frame number to hand out
        self._pass = 0
        self._since_persist = 0
        self._next_at = 0.0
        self._last_out = time.monotonic()
        self._resume = self._load_cursor()

    @classmethod
    def from_settings(cls, s: VideoSourceSettings, state_dir: Path) -> VideoFileSource:
        return cls(
            s.path,
            state_dir / "source_cursor.json",
            name=s.name,
            loop=s.loop,
            fps_limit=s.fps_limit,
        )

    def _identity(self) -> dict[str, Any] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return {"file": str(self.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def _load_cursor(self) -> tuple[int, int]:
        try:
            d = json.loads(self.cursor_file.read_text())
            if d.get("identity") == self._identity():
                return int(d["next"]), int(d.get("pass", 0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        return 0, 0

    def _open(self) -> bool:
        h = self._health
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            h.errors += 1
            h.state, h.last_error = "error", f"{self.path}: cannot open"
            return False
        start, self._pass = self._resume
        self._resume = (0, self._pass)
        self._index = 0
        # Seek by reading: frame-accurate for every codec (POS_FRAMES seeks to key frames).
        while self._index < start and cap.grab():
            self._index += 1
        self._cap = cap
        h.state = "streaming"
        return True

    def next(self) -> Frame | None:
        now = time.monotonic()
        if self.fps_limit > 0 and now < self._next_at:
            return None
        h = self._health
        if h.state == "ended":
            return None
        if self._cap is None and not self._open():
            return None
        assert self._cap is not None
        ok, img = self._cap.read()
        if not ok or img is None:
            self._cap.release()
            self._cap = None
            if self.loop and self._index > 0:
                self._pass += 1
                self._resume = (0, self._pass)
                self._since_persist += 1
                return None
            h.state = "ended"
            self._since_persist += 1
            self.persist()
            return None
        idx = self._index
        self._index += 1
        self._next_at = now + (1.0 / self.fps_limit if self.fps_limit > 0 else 0.0)
        self._last_out = now
        h.frames += 1
        h.last_frame_at = time.time()
        tag = f"~{self._pass:04d}" if self._pass else ""  # ids sort in reading order
        return Frame(id=f"{self.path.name}{tag}#{idx:08d}", ts=h.last_frame_at, image=img)

    def done(self, frame: Frame | None = None) -> None:
        self._since_persist += 1
        if self._since_persist >= self.persist_every:
            self.persist()

    def persist(self) -> None:
        if self._since_persist:
            nxt = self._index if self._cap is not None or self._health.state == "ended" else 0
            atomic_write_json(
                self.cursor_file,
                {"identity": self._identity(), "next": nxt, "pass": self._pass},
            )
            self._since_persist = 0

    def resume_after(self, frame_id: str) -> None:
        """Skip to after ``frame_id`` (``<name>[~pass]#<frame>``) of this file."""
        m = re.fullmatch(re.escape(self.path.name) + r"(?:~(\d+))?#(\d+)", frame_id)
        if m is None or self._cap is not None:
            return
        after = (int(m.group(1) or 0), int(m.group(2)) + 1)
        start, npass = self._resume
        if (after[0], after[1]) > (npass, start):
            self._resume = (after[1], after[0])

    def idle_for(self) -> float:
        return time.monotonic() - self._last_out

    def health(self) -> dict[str, Any]:
        return self._health.as_dict()

    def close(self) -> None:
        self.persist()
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._health.state = "closed"
