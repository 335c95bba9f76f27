"""Update outcomes (failures, rollbacks) waiting to reach the hub with the next heartbeat.

Kept in ``<state>/reports.json`` (atomic) so a rollback decided at start-up after a crash is
still reported; each has an id so the hub ignores a report sent twice. Bounded: the oldest are
dropped past :data:`MAX_REPORTS`. Each report is a :class:`runtime.protocol.UpdateReport`, the
model the hub parses the heartbeat's ``events`` with.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path

from pydantic import ValidationError

from runtime._atomic import atomic_write_json
from runtime._limits import MAX_STATE_BYTES, read_bounded
from runtime.protocol import ReportKind, UpdateReport

__all__ = ["MAX_REPORTS", "UpdateReports"]

log = logging.getLogger("leanloop.update")

MAX_REPORTS = 50


class UpdateReports:
    """The persisted queue of :class:`UpdateReport` for the hub."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._items: list[UpdateReport] = []
        try:
            data = json.loads(read_bounded(path, MAX_STATE_BYTES))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("%s unreadable, update reports not yet sent are lost: %s", path, e)
            return
        for d in data if isinstance(data, list) else []:
            try:
                self._items.append(UpdateReport.model_validate(d))
            except ValidationError:
                continue  # one bad entry does not lose the others

    def _save(self) -> None:
        atomic_write_json(self.path, [r.model_dump(mode="json") for r in self._items])

    def add(
        self, kind: ReportKind, cause: str, bundle: str | None, version: int | None, reason: str
    ) -> UpdateReport:
        """Queue a report (persisted before returning)."""
        report = UpdateReport(
            id=uuid.uuid4().hex,
            time=time.time(),
            kind=kind,
            cause=cause[:64],
            bundle=bundle,
            version=version,
            reason=reason[:2000],
        )
        with self._lock:
            self._items.append(report)
            del self._items[:-MAX_REPORTS]
            self._save()
        return report

    def pending(self) -> list[UpdateReport]:
        with self._lock:
            return list(self._items)

    def sent(self, items: list[UpdateReport]) -> None:
        """Forget reports the hub acknowledged."""
        if not items:
            return
        ids = {r.id for r in items}
        with self._lock:
            self._items = [r for r in self._items if r.id not in ids]
            self._save()
