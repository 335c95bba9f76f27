"""Replay reports, blessings, the release audit log, and the devices' prediction stream.

- ``replay_reports``: a report (JSON and HTML kept as blobs) by its digest;
- ``blessings``: one per candidate bundle digest: the baseline, the spec and report digests,
  who blessed it and when. Publishing and rolling out need one (:mod:`hub.replay.blessing`);
- ``audit_log``: every release decision that skipped the gate (``--force --reason``) and every
  blessing, with who and why;
- ``prediction_events``: every prediction's metadata the devices sent (no pixels), one row per
  prediction, kept ``history_retention_s`` (:meth:`ReplayTables.prune_predictions`).

The tables come from migration ``0006_replay.sql``: portable SQL (text keys, ``ON CONFLICT``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from hub.storage._db import DBBase, loads

__all__ = ["ReplayTables"]


def _id() -> str:
    return f"{time.time_ns():016x}-{os.urandom(4).hex()}"


class ReplayTables(DBBase):
    """Rows of ``replay_reports``, ``blessings``, ``audit_log`` and ``prediction_events``."""

    # -- reports and blessings ------------------------------------------------------------------

    def add_report(
        self,
        digest: str,
        bundle: str,
        version: int,
        candidate_digest: str,
        decision: str,
        json_sha256: str,
        html_sha256: str | None,
    ) -> None:
        """Keep a replay report (the same digest again: no-op)."""
        self._db.execute(
            "INSERT INTO replay_reports (digest, bundle, version, candidate_digest, decision,"
            " json_sha256, html_sha256, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(digest) DO NOTHING",
            (digest, bundle, version, candidate_digest, decision, json_sha256, html_sha256,
             time.time()),
        )  # fmt: skip

    def report(self, digest: str) -> dict[str, Any] | None:
        """A report's row, or None."""
        row = self._db.execute(
            "SELECT * FROM replay_reports WHERE digest = ?", (digest,)
        ).fetchone()
        return dict(row) if row else None

    def reports(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest reports, newest first."""
        rows = self._db.execute(
            "SELECT * FROM replay_reports ORDER BY created DESC LIMIT ?", (limit,)
        )
        return [dict(r) for r in rows]

    def add_blessing(self, blessing: dict[str, Any]) -> None:
        """Record (or renew) the blessing of a candidate digest."""
        self._db.execute(
            "INSERT INTO blessings (candidate_digest, bundle, version, baseline_json, spec_digest,"
            " report_digest, who, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(candidate_digest) DO UPDATE SET baseline_json = excluded.baseline_json,"
            " spec_digest = excluded.spec_digest, report_digest = excluded.report_digest,"
            " who = excluded.who, created = excluded.created",
            (
                blessing["candidate_digest"],
                blessing["bundle"],
                blessing["version"],
                json.dumps(blessing["baseline"]),
                blessing["spec_digest"],
                blessing["report_digest"],
                blessing["who"],
                blessing["time"],
            ),
        )

    def _blessing(self, row: Any) -> dict[str, Any]:
        return {
            "candidate_digest": row["candidate_digest"],
            "bundle": row["bundle"],
            "version": row["version"],
            "baseline": loads(row["baseline_json"]),
            "spec_digest": row["spec_digest"],
            "report_digest": row["report_digest"],
            "who": row["who"],
            "time": row["created"],
        }

    def blessing(self, candidate_digest: str) -> dict[str, Any] | None:
        """The blessing of a bundle digest, or None."""
        row = self._db.execute(
            "SELECT * FROM blessings WHERE candidate_digest = ?", (candidate_digest,)
        ).fetchone()
        return self._blessing(row) if row else None

    def blessed_version(self, bundle: str, version: int) -> dict[str, Any] | None:
        """The blessing of a bundle version (any digest of it), or None."""
        row = self._db.execute(
            "SELECT * FROM blessings WHERE bundle = ? AND version = ? ORDER BY created DESC",
            (bundle, version),
        ).fetchone()
        return self._blessing(row) if row else None

    def blessings(self) -> list[dict[str, Any]]:
        """Every blessing, newest first."""
        rows = self._db.execute("SELECT * FROM blessings ORDER BY created DESC")
        return [self._blessing(r) for r in rows]

    # -- audit log --------------------------------------------------------------------------------

    def audit(
        self,
        action: str,
        bundle: str | None,
        version: int | None,
        who: str | None,
        reason: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one entry to the audit log."""
        self._db.execute(
            "INSERT INTO audit_log (id, time, action, bundle, version, who, reason, detail_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (_id(), time.time(), action, bundle, version, who, reason, json.dumps(detail or {})),
        )

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        """The latest audit entries, newest first."""
        rows = self._db.execute("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", (limit,))
        out = []
        for r in rows:
            entry = dict(r)
            entry["detail"] = loads(entry.pop("detail_json"))
            out.append(entry)
        return out

    # -- the prediction stream ------------------------------------------------------------------

    def add_predictions(self, device_id: str, events: list[dict[str, Any]]) -> int:
        """Store prediction metadata a device sent; a repeated (device, id) is ignored (the
        device resends a batch it is not sure arrived). Returns how many were new."""
        new = 0
        with self._transaction():
            for e in events:
                cur = self._db.execute(
                    "INSERT INTO prediction_events (device_id, id, time, bundle, version, label,"
                    " score, latency_ms, error, event_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(device_id, id) DO NOTHING",
                    (
                        device_id, e["id"], e["time"], e["bundle"], e["version"], e.get("label"),
                        e.get("score"), e.get("latency_ms"), 1 if e.get("error") else 0,
                        json.dumps(e),
                    ),
                )  # fmt: skip
                new += cur.rowcount
        return new

    def predictions(
        self, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Prediction rows (with the device's cohort) in a time window, oldest first."""
        sql = (
            "SELECT p.device_id, d.cohort, p.time, p.bundle, p.version, p.label, p.score,"
            " p.latency_ms, p.error FROM prediction_events p"
            " LEFT JOIN devices d ON d.id = p.device_id WHERE 1 = 1"
        )
        args: list[Any] = []
        if since is not None:
            sql += " AND p.time >= ?"
            args.append(since)
        if until is not None:
            sql += " AND p.time < ?"
            args.append(until)
        return [dict(r) for r in self._db.execute(sql + " ORDER BY p.time", args)]

    def feedback_rows(self) -> list[dict[str, Any]]:
        """Every stored feedback with its time, device, cohort, bundle and version."""
        rows = self._db.execute(
            "SELECT f.device_id, d.cohort, f.kind, f.feedback_json, f.received, s.bundle"
            " FROM sample_feedback f JOIN samples s ON s.id = f.sample_id"
            " LEFT JOIN devices d ON d.id = f.device_id"
        )
        out = []
        for r in rows:
            fb = loads(r["feedback_json"]) or {}
            out.append(
                {
                    "device_id": r["device_id"],
                    "cohort": r["cohort"],
                    "kind": r["kind"],
                    "time": float(fb.get("when") or r["received"]),
                    "bundle": r["bundle"],
                    "version": fb.get("bundle_version"),
                }
            )
        return out

    def prune_predictions(self, older_than: float) -> int:
        """Drop prediction rows older than ``older_than`` (unix time); how many went."""
        return self._db.execute(
            "DELETE FROM prediction_events WHERE time < ?", (older_than,)
        ).rowcount
