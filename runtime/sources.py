"""Frame sources and result sinks of the device service.

``FolderSource`` reads image files from a folder in name order, as a camera dropping files or a
test harness would; the name of the last processed file is persisted (every ``persist_every``
frames and on close) so a restart resumes after it. Delivery is at-least-once: a crash between
two persists re-reads at most that many frames, and results carry the frame id so consumers can
de-duplicate.

``JsonlSink`` appends one JSON line per prediction (the stable ``Prediction.to_dict`` form).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO

from runtime._atomic import atomic_write_json
from runtime.pipeline.prediction import Prediction

__all__ = ["FolderSource", "JsonlSink", "NullSink"]

MAX_FRAME_BYTES = 64 << 20


class FolderSource:
    """Frames from image files in a folder, in name order, each once."""

    def __init__(self, folder: Path, pattern: str, cursor_file: Path, persist_every: int = 25):
        self.folder = Path(folder)
        self.pattern = pattern
        self.cursor_file = Path(cursor_file)
        self.persist_every = persist_every
        self._last = self._load_cursor()
        self._pending: list[Path] = []
        self._since_persist = 0
        self.last_frame_at = time.monotonic()
        self.oversized = 0

    def _load_cursor(self) -> str:
        try:
            return str(json.loads(self.cursor_file.read_text())["last"])
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def _scan(self) -> None:
        if not self.folder.is_dir():
            return
        names = sorted(
            p
            for p in self.folder.glob(self.pattern)
            if p.is_file() and not p.name.startswith(".") and p.name > self._last
        )
        self._pending = names

    def next(self) -> tuple[str, bytes] | None:
        """The next unread frame as (frame id, file bytes), or None when there is none now."""
        while True:
            if not self._pending:
                self._scan()
                if not self._pending:
                    return None
            p = self._pending.pop(0)
            self._last = p.name
            try:
                size = p.stat().st_size
                if size > MAX_FRAME_BYTES:
                    self.oversized += 1
                    data = b""
                else:
                    data = p.read_bytes()
            except OSError:
                continue  # vanished between scan and read
            self.last_frame_at = time.monotonic()
            return p.name, data

    def done(self) -> None:
        """Mark the last returned frame processed (persisted every ``persist_every``)."""
        self._since_persist += 1
        if self._since_persist >= self.persist_every:
            self.persist()

    def persist(self) -> None:
        if self._since_persist:
            atomic_write_json(self.cursor_file, {"last": self._last})
            self._since_persist = 0

    def idle_for(self) -> float:
        return time.monotonic() - self.last_frame_at


class JsonlSink:
    """Append predictions to a JSON-lines file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, pred: Prediction) -> None:
        self._f.write(json.dumps(pred.to_dict(), separators=(",", ":")) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class NullSink:
    def write(self, pred: Prediction) -> None:
        pass

    def close(self) -> None:
        pass
