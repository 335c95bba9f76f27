"""Staged rollouts: their spec and state, and the devices each one ordered (and what those
devices were told before, so an abort can put it back)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from hub.errors import NotFound
from hub.rollouts import DeviceView, RolloutSpec, RolloutState
from hub.storage._db import DBBase, Row, loads
from hub.storage.devices import FLEET

_FAILURES = ("update_failed", "rolled_back")


@dataclass(frozen=True)
class Rollout:
    """A stored rollout."""

    id: int
    spec: RolloutSpec
    state: RolloutState
    created: float
    updated: float


class RolloutTables(DBBase):
    """Rows of ``rollouts`` and ``rollout_devices`` (migration 0002)."""

    def add_rollout(self, spec: RolloutSpec, supersede: bool = True) -> tuple[int, list[int]]:
        """Store a new running rollout; with ``supersede``, the unfinished rollouts of the same
        bundle that overlap it (same cohort, or either is fleet-wide) are aborted. Returns (id,
        the ids aborted)."""
        now = time.time()
        with self._transaction():
            aborted: list[int] = []
            if supersede:
                rows = self._db.execute(
                    "SELECT id, cohort FROM rollouts WHERE bundle = ? AND status IN "
                    "('running', 'paused', 'halted')",
                    (spec.bundle,),
                ).fetchall()
                aborted = [
                    r["id"]
                    for r in rows
                    if spec.cohort is None or r["cohort"] is None or r["cohort"] == spec.cohort
                ]
            row = self._db.execute(
                "INSERT INTO rollouts (bundle, version, cohort, spec_json, status, wave,"
                " wave_started, reason, created, updated)"
                " VALUES (?, ?, ?, ?, 'running', -1, NULL, NULL, ?, ?) RETURNING id",
                (spec.bundle, spec.version, spec.cohort, spec.model_dump_json(), now, now),
            ).fetchone()
            new_id = int(row["id"])
            for old in aborted:
                self._db.execute(
                    "UPDATE rollouts SET status = 'aborted', reason = ?, updated = ? WHERE id = ?",
                    (f"superseded by rollout {new_id}", now, old),
                )
        return new_id, aborted

    def _rollout(self, row: Row) -> Rollout:
        ordered = {
            r["device_id"]: int(r["wave"])
            for r in self._db.execute(
                "SELECT device_id, wave FROM rollout_devices WHERE rollout_id = ?", (row["id"],)
            )
        }
        state = RolloutState(
            status=row["status"],
            wave=int(row["wave"]),
            wave_started=row["wave_started"],
            reason=row["reason"],
            ordered=ordered,
        )
        return Rollout(
            id=int(row["id"]),
            spec=RolloutSpec.model_validate_json(row["spec_json"]),
            state=state,
            created=row["created"],
            updated=row["updated"],
        )

    def rollout(self, rollout_id: int) -> Rollout:
        """One rollout. Raises NotFound."""
        row = self._db.execute("SELECT * FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        if row is None:
            raise NotFound(f"no rollout {rollout_id}")
        return self._rollout(row)

    def rollouts(self, active_only: bool = False) -> list[Rollout]:
        """Rollouts, newest first (only ``running`` ones with ``active_only``)."""
        sql = "SELECT * FROM rollouts"
        if active_only:
            sql += " WHERE status = 'running'"
        return [self._rollout(r) for r in self._db.execute(sql + " ORDER BY id DESC").fetchall()]

    def rollout_views(self, spec: RolloutSpec) -> list[DeviceView]:
        """The devices a rollout targets, with what they run and whether they failed it."""
        where, args = ("cohort = ?", [spec.cohort]) if spec.cohort is not None else ("1 = 1", [])
        failed = set()
        for r in self._db.execute(
            "SELECT device_id, event_json FROM device_events WHERE kind IN (?, ?)", _FAILURES
        ):
            e = json.loads(r["event_json"])
            if e.get("bundle") == spec.bundle and e.get("version") == spec.version:
                failed.add(r["device_id"])
        out = []
        for r in self._db.execute(
            f"SELECT id, cohort, status_json FROM devices WHERE {where} ORDER BY id", args
        ):
            active = ((loads(r["status_json"]) or {}).get("active")) or {}
            runs = (
                active.get("bundle") == spec.bundle
                and active.get("version") == spec.version
                and active.get("status") == "committed"
            )
            out.append(DeviceView(r["id"], r["cohort"], runs, r["id"] in failed))
        return out

    def save_rollout(
        self,
        rollout_id: int,
        spec: RolloutSpec,
        state: RolloutState,
        order: list[str],
        revert: list[str] | None = None,
    ) -> None:
        """Store a rollout's new state; order ``order`` (their desired bundle becomes the
        rollout's, their previous one is kept); put back the previous desired bundle of
        ``revert`` (an abort). A rollout that is done also becomes what its cohort (or the
        fleet) wants, so devices that join later get it."""
        now = time.time()
        with self._transaction():
            self._db.execute(
                "UPDATE rollouts SET status = ?, wave = ?, wave_started = ?, reason = ?,"
                " updated = ? WHERE id = ?",
                (state.status, state.wave, state.wave_started, state.reason, now, rollout_id),
            )
            for device_id in order:
                prev = self._db.execute(
                    "SELECT desired_bundle, desired_version FROM devices WHERE id = ?",
                    (device_id,),
                ).fetchone()
                if prev is None:
                    continue  # removed since the tick read it
                self._db.execute(
                    "INSERT INTO rollout_devices (rollout_id, device_id, wave, ordered,"
                    " prev_bundle, prev_version) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (
                        rollout_id,
                        device_id,
                        state.ordered.get(device_id, state.wave),
                        now,
                        prev["desired_bundle"],
                        prev["desired_version"],
                    ),
                )
                self._db.execute(
                    "UPDATE devices SET desired_bundle = ?, desired_version = ? WHERE id = ?",
                    (spec.bundle, spec.version, device_id),
                )
            for device_id in revert or []:
                self._db.execute(
                    "UPDATE devices SET desired_bundle = (SELECT prev_bundle FROM"
                    " rollout_devices WHERE rollout_id = ? AND device_id = ?),"
                    " desired_version = (SELECT prev_version FROM rollout_devices"
                    " WHERE rollout_id = ? AND device_id = ?) WHERE id = ?",
                    (rollout_id, device_id, rollout_id, device_id, device_id),
                )
            if state.status == "done":
                self._db.execute(
                    "INSERT INTO cohorts (name, desired_bundle, desired_version) VALUES (?, ?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET desired_bundle = excluded.desired_bundle,"
                    " desired_version = excluded.desired_version",
                    (spec.cohort if spec.cohort is not None else FLEET, spec.bundle, spec.version),
                )

    def bundle_manifest(self, name: str, version: int) -> dict[str, Any]:
        """The manifest of a published bundle version. Raises NotFound."""
        row = self._db.execute(
            "SELECT manifest_json FROM bundles WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        if row is None:
            raise NotFound(f"bundle {name} version {version} is not published")
        return dict(json.loads(row["manifest_json"]))
