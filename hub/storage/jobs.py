"""Training jobs and their state ``queued → running → done | failed``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from hub.errors import NotFound
from hub.storage._db import DBBase

JobState = Literal["queued", "running", "done", "failed"]


@dataclass(frozen=True)
class Job:
    """A training job."""

    id: int
    state: JobState
    params: dict[str, Any]
    error: str | None
    log_path: str | None
    artifact_path: str | None


class JobTables(DBBase):
    """Rows of ``jobs``."""

    # -- jobs ----------------------------------------------------------------------------------

    def add_job(self, params: dict[str, Any]) -> int:
        """Create a queued job and return its id."""
        row = self._db.execute(
            "INSERT INTO jobs (state, params, created) VALUES ('queued', ?, ?) RETURNING id",
            (json.dumps(params), time.time()),
        ).fetchone()
        return int(row["id"])

    def set_job(self, job_id: int, state: JobState, **fields: str | None) -> None:
        """Move a job to ``state``; ``fields`` may set error, log_path, artifact_path."""
        allowed = {"error", "log_path", "artifact_path"}
        if not set(fields) <= allowed:
            raise ValueError(f"unknown job fields {set(fields) - allowed}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._db.execute(
            f"UPDATE jobs SET state = ?{', ' + cols if cols else ''} WHERE id = ?",
            [state, *fields.values(), job_id],
        )

    def job(self, job_id: int) -> Job:
        """One job. Raises NotFound."""
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return Job(
            id=row["id"],
            state=row["state"],
            params=json.loads(row["params"]),
            error=row["error"],
            log_path=row["log_path"],
            artifact_path=row["artifact_path"],
        )

    def jobs_in(self, state: JobState) -> list[int]:
        """Ids of the jobs in ``state``, oldest first."""
        return [
            r["id"]
            for r in self._db.execute("SELECT id FROM jobs WHERE state = ? ORDER BY id", (state,))
        ]
