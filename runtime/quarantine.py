"""Quarantine: records the hub refused for good, kept on the device with the reason.

A sample or a feedback that the hub answers with a 4xx meaning "never" (400, 403, 404, 413,
422: malformed, not this device's, unknown, too large) would otherwise stay first in line and be
sent again every cycle: every later upload waits behind it and the day's byte budget is spent on
the same refusal again and again. The uploader instead moves such a record here, with the hub's
reason, and goes on with the next one; a record the device itself can tell the hub would refuse
(it fails the shared message model, :mod:`runtime.protocol`) is quarantined before any byte is
sent. Nothing is lost: each entry is a JSON file (``<state>/quarantine/<kind>-<id>.json``, the
record's meta or the feedback, the reason, the HTTP status, when) plus the sample's image
beside it, written atomically. ``leanloop status`` shows the count and the latest reasons.

Bounded: past ``max_entries`` the oldest entries are deleted (with a warning in the log).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime._atomic import atomic_write_bytes
from runtime.errors import first_line

__all__ = [
    "QUARANTINE_DIR",
    "REFUSED_FOR_GOOD",
    "Quarantine",
    "QuarantineEntry",
    "QuarantineKind",
    "quarantine_summary",
]

log = logging.getLogger("leanloop.quarantine")

QUARANTINE_DIR = "quarantine"
REFUSED_FOR_GOOD = frozenset({400, 403, 404, 410, 413, 415, 422})
"""HTTP statuses after which sending the same record again cannot succeed."""

_RECENT = 5


class QuarantineKind(enum.StrEnum):
    SAMPLE = "sample"
    FEEDBACK = "feedback"


class QuarantineEntry(BaseModel):
    """``<state>/quarantine/<kind>-<id>.json``."""

    model_config = ConfigDict(extra="forbid")
    format: str = "leanloop.quarantine/1"
    kind: QuarantineKind
    id: str = Field(description="the sample id")
    reason: str = Field(description="why it was refused (the hub's answer, or the device's check)")
    http_status: int | None = Field(default=None, description="the hub's status; none: the device")
    time: float = Field(description="when it was quarantined (unix time)")
    record: dict[str, Any] = Field(description="the sample's meta, or the feedback")
    image: str | None = Field(default=None, description="file name of the image beside it")


class Quarantine:
    """The ``quarantine/`` folder of a state directory."""

    def __init__(self, folder: Path, max_entries: int = 1000) -> None:
        self.folder = Path(folder)
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._summary = summarize(read_entries(self.folder), self.folder)

    def add(
        self,
        kind: QuarantineKind,
        sample_id: str,
        reason: str,
        record: dict[str, Any],
        image: bytes | None = None,
        http_status: int | None = None,
    ) -> QuarantineEntry:
        """Keep a refused record (image first, then the entry that names it). Raises OSError."""
        stem = f"{kind.value}-{sample_id}"
        image_name = f"{stem}.img" if image is not None else None
        entry = QuarantineEntry(
            kind=kind,
            id=sample_id,
            reason=first_line(reason, 1000),
            http_status=http_status,
            time=time.time(),
            record=record,
            image=image_name,
        )
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            if image is not None and image_name is not None:
                atomic_write_bytes(self.folder / image_name, image)
            atomic_write_bytes(self.folder / f"{stem}.json", entry.model_dump_json().encode())
            self._trim()
            self._summary = summarize(read_entries(self.folder), self.folder)
        log.warning("%s %s quarantined: %s", kind.value, sample_id, entry.reason)
        return entry

    def _trim(self) -> None:
        files = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for p in files[: max(0, len(files) - self.max_entries)]:
            log.warning("quarantine full: %s deleted", p.name)
            p.with_suffix(".img").unlink(missing_ok=True)
            p.unlink(missing_ok=True)

    def entries(self) -> list[QuarantineEntry]:
        """Every readable entry, newest first."""
        return read_entries(self.folder)

    def summary(self) -> dict[str, Any]:
        """For ``status`` (kept in memory: the status is written every second)."""
        with self._lock:
            return dict(self._summary)


def read_entries(folder: Path) -> list[QuarantineEntry]:
    out: list[QuarantineEntry] = []
    for p in folder.glob("*.json") if folder.is_dir() else []:
        try:
            out.append(QuarantineEntry.model_validate_json(p.read_bytes()))
        except (OSError, ValueError, ValidationError):
            continue  # a torn file is skipped, the others still show
    out.sort(key=lambda e: e.time, reverse=True)
    return out


def quarantine_summary(state_dir: Path) -> dict[str, Any]:
    """For ``status``: how many records are quarantined and the latest reasons."""
    folder = Path(state_dir) / QUARANTINE_DIR
    return summarize(read_entries(folder), folder)


def summarize(entries: list[QuarantineEntry], folder: Path) -> dict[str, Any]:
    return {
        "count": len(entries),
        "samples": sum(e.kind is QuarantineKind.SAMPLE for e in entries),
        "feedback": sum(e.kind is QuarantineKind.FEEDBACK for e in entries),
        "folder": str(folder),
        "recent": [
            {
                "kind": e.kind.value,
                "id": e.id,
                "reason": e.reason,
                "http_status": e.http_status,
                "time": e.time,
            }
            for e in entries[:_RECENT]
        ],
    }
