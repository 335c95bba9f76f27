"""Frames from image files dropped in a folder (a camera writing files, a test harness).

Files are read in name order, each once; the frame id is the file name and its time the file's
modification time. The name of the last
processed file is persisted (every ``persist_every`` frames and on close) so a restart resumes
after it. Delivery is at-least-once: a crash between two persists re-reads at most that many
frames, and results carry the frame id so consumers can de-duplicate.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from runtime._atomic import atomic_write_json
from runtime.sources.base import Frame, SourceHealth, SourceSettingsBase

__all__ = ["MAX_FRAME_BYTES", "FolderSource", "FolderSourceSettings"]

MAX_FRAME_BYTES = 64 << 20


class FolderSourceSettings(SourceSettingsBase):
    """``type: folder`` — image files in a folder, in name order."""

    type: Literal["folder"] = "folder"
    path: Path = Field(default=Path("/var/lib/leanloop/inbox"), description="image folder")
    pattern: str = Field(default="*", description="glob of frame files, in name order")


class FolderSource:
    """Frames from image files in a folder, in name order, each once."""

    waits = False

    def __init__(
        self,
        folder: Path,
        pattern: str,
        cursor_file: Path,
        persist_every: int = 25,
        name: str = "folder",
        fps_limit: float = 0.0,
    ) -> None:
        self.folder = Path(folder)
        self.pattern = pattern
        self.cursor_file = Path(cursor_file)
        self.persist_every = persist_every
        self.fps_limit = fps_limit
        self._last = self._load_cursor()
        self._pending: list[Path] = []
        self._since_persist = 0
        self._next_at = 0.0
        self.last_frame_at = time.monotonic()
        self.oversized = 0
        self._health = SourceHealth("folder", name, state="idle")

    @classmethod
    def from_settings(cls, s: FolderSourceSettings, state_dir: Path) -> FolderSource:
        return cls(
            s.path, s.pattern, state_dir / "source_cursor.json", name=s.name, fps_limit=s.fps_limit
        )

    def _load_cursor(self) -> str:
        try:
            return str(json.loads(self.cursor_file.read_text())["last"])
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def _scan(self) -> None:
        if not self.folder.is_dir():
            self._health.state = "error"
            self._health.last_error = f"{self.folder}: no such folder"
            return
        names = sorted(
            p
            for p in self.folder.glob(self.pattern)
            if p.is_file() and not p.name.startswith(".") and p.name > self._last
        )
        self._pending = names

    def next(self) -> Frame | None:
        """The next unread frame, or None when there is none now (or the rate cap says wait)."""
        if self.fps_limit > 0 and time.monotonic() < self._next_at:
            return None
        while True:
            if not self._pending:
                self._scan()
                if not self._pending:
                    if self._health.state != "error":
                        self._health.state = "idle"
                    return None
            p = self._pending.pop(0)
            self._last = p.name
            try:
                st = p.stat()
                size = st.st_size
                if size > MAX_FRAME_BYTES:
                    self.oversized += 1
                    data = b""
                else:
                    data = p.read_bytes()
            except OSError:
                continue  # vanished between scan and read
            now = time.monotonic()
            self.last_frame_at = now
            if self.fps_limit > 0:
                self._next_at = now + 1.0 / self.fps_limit
            h = self._health
            h.state, h.frames, h.last_frame_at = "streaming", h.frames + 1, time.time()
            # The file's modification time is when the camera (or whoever) wrote the frame.
            return Frame(id=p.name, ts=st.st_mtime, data=data)

    def done(self, frame: Frame | None = None) -> None:
        """Mark the last returned frame processed (persisted every ``persist_every``)."""
        self._since_persist += 1
        if self._since_persist >= self.persist_every:
            self.persist()

    def persist(self) -> None:
        if self._since_persist:
            atomic_write_json(self.cursor_file, {"last": self._last})
            self._since_persist = 0

    def resume_after(self, frame_id: str) -> None:
        if frame_id > self._last:
            self._last = frame_id
            self._pending = []

    def idle_for(self) -> float:
        return time.monotonic() - self.last_frame_at

    def health(self) -> dict[str, Any]:
        return self._health.as_dict()

    def close(self) -> None:
        self.persist()
        self._health.state = "closed"
