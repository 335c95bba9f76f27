"""The persisted shadow report: ``<state_dir>/shadow.json``.

Written atomically (:func:`runtime._atomic.atomic_write_bytes`) by the service every
``shadow.report_interval_s`` and on every status change; read by ``leanloop shadow report``
with the service up or down. :meth:`ShadowReport.summary` is the part sent to the hub
(counts, matrices, histograms — never frames, never frame ids).

``history`` remembers how past candidates ended (promoted, rejected, disabled, ...), so a
device that restarts does not run a candidate again that it already judged.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime._atomic import atomic_write_bytes
from runtime._limits import MAX_STATE_BYTES, read_bounded
from runtime.shadow.compare import ShadowStats
from runtime.shadow.promotion import PromotionRule

__all__ = [
    "FINAL_STATUSES",
    "REPORT_NAME",
    "BundleRef",
    "HistoryEntry",
    "ShadowReport",
    "ShadowStatus",
    "load_report",
    "save_report",
]

log = logging.getLogger("leanloop.shadow")

REPORT_NAME = "shadow.json"
MAX_HISTORY = 20
MAX_SEEN = 2000

ShadowStatus = Literal[
    "idle",  # no candidate assigned
    "staging",  # fetching the candidate into the inactive slot
    "starting",  # worker loading the candidate
    "running",  # comparing
    "disabled",  # crashed, hung, errored too often, or would not load
    "promoting",  # handed to the frame loop: activation, trial, commit or rollback
    "promoted",  # committed after its trial
    "rolled_back",  # promoted, then failed its trial
    "rejected",  # the promotion rule failed
    "refused",  # could not be staged (not newer than production, not signed, ...)
    "cancelled",  # the hub withdrew the candidate
]
FINAL_STATUSES = frozenset(
    {"disabled", "promoted", "rolled_back", "rejected", "refused", "cancelled"}
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BundleRef(_Strict):
    bundle: str
    version: int
    slot: Literal["a", "b"] | None = None


class HistoryEntry(_Strict):
    bundle: str
    version: int
    outcome: ShadowStatus
    reason: str | None = None
    when: float


class ShadowReport(_Strict):
    """Everything the device knows about its shadow candidate."""

    format: Literal["leanloop.shadow/1"] = "leanloop.shadow/1"
    status: ShadowStatus = "idle"
    reason: str | None = Field(default=None, description="why the status is what it is")
    candidate: BundleRef | None = None
    production: BundleRef | None = None
    rule: PromotionRule | None = None
    verdict: str | None = Field(default=None, description="the promotion rule's last word")
    started: float | None = None
    updated: float = Field(default_factory=time.time)
    counters: dict[str, int] = Field(
        default_factory=dict,
        description="offered, shed, answered, errors, disagreements_stored",
    )
    stats: ShadowStats = Field(default_factory=ShadowStats)
    history: list[HistoryEntry] = Field(default_factory=list)
    seen: dict[str, list[str | None]] = Field(
        default_factory=dict,
        description="recent frame id -> candidate label per production item (for feedback)",
    )

    def summary(self) -> dict[str, Any]:
        """The telemetry form: no frame ids, no frames."""
        offered = self.counters.get("offered", 0)
        return {
            "status": self.status,
            "reason": self.reason,
            "candidate": self.candidate.model_dump() if self.candidate else None,
            "production": self.production.model_dump() if self.production else None,
            "rule": self.rule.model_dump() if self.rule else None,
            "verdict": self.verdict,
            "started": self.started,
            "updated": self.updated,
            "counters": dict(self.counters),
            "shed_fraction": round(self.counters.get("shed", 0) / offered, 6) if offered else 0.0,
            "agreement": self.stats.agreement,
            "stats": self.stats.model_dump(),
        }

    def remember(self, outcome: ShadowStatus, reason: str | None) -> None:
        """Record how the current candidate ended."""
        if self.candidate is None:
            return
        self.history.append(
            HistoryEntry(
                bundle=self.candidate.bundle,
                version=self.candidate.version,
                outcome=outcome,
                reason=reason,
                when=time.time(),
            )
        )
        del self.history[:-MAX_HISTORY]

    def judged(self, bundle: str, version: int) -> HistoryEntry | None:
        """How this candidate ended here before, if it did (a cancelled run does not count: the
        hub may assign it again, or a production update may have needed its slot)."""
        for h in reversed(self.history):
            if h.bundle == bundle and h.version == version:
                return None if h.outcome == "cancelled" else h
        return None

    def note_seen(self, frame_id: str, labels: list[str | None]) -> None:
        self.seen[frame_id] = labels
        if len(self.seen) > MAX_SEEN:
            for k in list(self.seen)[: len(self.seen) - MAX_SEEN]:
                del self.seen[k]


def load_report(state_dir: Path) -> ShadowReport:
    """The persisted report, or a fresh one if there is none or it does not parse."""
    path = Path(state_dir) / REPORT_NAME
    try:
        return ShadowReport.model_validate(json.loads(read_bounded(path, MAX_STATE_BYTES)))
    except FileNotFoundError:
        return ShadowReport()
    except (OSError, ValueError, ValidationError) as e:
        log.warning("%s unreadable, starting a fresh shadow report: %s", path, str(e)[:200])
        return ShadowReport()


def save_report(state_dir: Path, report: ShadowReport) -> None:
    """Write ``shadow.json`` atomically. Raises OSError."""
    report.updated = time.time()
    atomic_write_bytes(Path(state_dir) / REPORT_NAME, report.model_dump_json(indent=1).encode())
