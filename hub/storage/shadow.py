"""Shadow candidates assigned to devices, cohorts or the fleet, and the devices' shadow reports."""

from __future__ import annotations

import json
import time
from typing import Any

from hub.errors import NotFound
from hub.storage._db import DBBase
from hub.storage.devices import FLEET, Device


class ShadowTables(DBBase):
    """Rows of ``shadow_rollouts`` and ``shadow_reports``."""

    # -- shadow candidates ----------------------------------------------------------------------

    def _known_devices(self, devices: list[str], cohort: str | None) -> list[str]:
        marks = ",".join("?" * len(devices))
        known = {
            r["id"]: r["cohort"]
            for r in self._db.execute(
                f"SELECT id, cohort FROM devices WHERE id IN ({marks})", devices
            )
        }
        missing = sorted(set(devices) - set(known))
        if missing:
            raise NotFound(f"unknown devices: {', '.join(missing[:5])}")
        return [d for d in devices if cohort is None or known[d] == cohort]

    def set_shadow(
        self,
        bundle: str,
        version: int,
        rule: dict[str, Any],
        devices: list[str] | None,
        cohort: str | None,
    ) -> int:
        """Assign a shadow candidate to listed devices, a cohort, or (neither) the fleet.

        Returns how many enrolled devices it now reaches. Raises NotFound for an unknown listed
        device (and changes nothing).
        """
        with self._transaction():
            if devices is not None:
                targets = [("device", d) for d in self._known_devices(devices, cohort)]
            elif cohort is not None:
                targets = [("cohort", cohort)]
            else:
                targets = [("fleet", FLEET)]
            for scope, name in targets:
                self._db.execute(
                    "INSERT INTO shadow_rollouts (scope, name, bundle, version, rule_json, created)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(scope, name) DO UPDATE SET "
                    "bundle = excluded.bundle, version = excluded.version, "
                    "rule_json = excluded.rule_json, created = excluded.created",
                    (scope, name, bundle, version, json.dumps(rule), time.time()),
                )
            if devices is not None:
                return len(targets)
            where, args = ("cohort = ?", [cohort]) if cohort is not None else ("1 = 1", [])
            row = self._db.execute(f"SELECT COUNT(*) AS n FROM devices WHERE {where}", args)
            return int(row.fetchone()["n"])

    def clear_shadow(self, devices: list[str] | None, cohort: str | None) -> int:
        """Withdraw shadow assignments (listed devices, a cohort, or the fleet's); how many rows."""
        if devices is not None:
            marks = ",".join("?" * len(devices))
            cur = self._db.execute(
                f"DELETE FROM shadow_rollouts WHERE scope = 'device' AND name IN ({marks})",
                devices,
            )
        elif cohort is not None:
            cur = self._db.execute(
                "DELETE FROM shadow_rollouts WHERE scope = 'cohort' AND name = ?", (cohort,)
            )
        else:
            cur = self._db.execute("DELETE FROM shadow_rollouts WHERE scope = 'fleet'")
        return cur.rowcount

    def shadow_candidate(self, device: Device) -> dict[str, Any] | None:
        """The candidate for a device: its own assignment, else its cohort's, else the fleet's."""
        for scope, name in (("device", device.id), ("cohort", device.cohort), ("fleet", FLEET)):
            if name is None:
                continue
            row = self._db.execute(
                "SELECT bundle, version, rule_json FROM shadow_rollouts "
                "WHERE scope = ? AND name = ?",
                (scope, name),
            ).fetchone()
            if row:
                return {
                    "bundle": row["bundle"],
                    "version": row["version"],
                    "rule": json.loads(row["rule_json"]),
                }
        return None

    def put_shadow_report(self, device_id: str, report: dict[str, Any]) -> None:
        """Keep a device's latest shadow telemetry (one row per device)."""
        cand = report.get("candidate") or {}
        self._db.execute(
            "INSERT INTO shadow_reports (device_id, bundle, version, status, report_json, updated)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET "
            "bundle = excluded.bundle, version = excluded.version, status = excluded.status, "
            "report_json = excluded.report_json, updated = excluded.updated",
            (
                device_id,
                cand.get("bundle"),
                cand.get("version"),
                report.get("status"),
                json.dumps(report),
                time.time(),
            ),
        )

    def shadow_reports(
        self, cohort: str | None = None
    ) -> list[tuple[str, str | None, dict[str, Any], float]]:
        """(device id, cohort, report, updated) of every device that reported, by id."""
        sql = (
            "SELECT r.device_id, d.cohort, r.report_json, r.updated FROM shadow_reports r "
            "LEFT JOIN devices d ON d.id = r.device_id"
        )
        args: list[Any] = []
        if cohort is not None:
            sql += " WHERE d.cohort = ?"
            args.append(cohort)
        sql += " ORDER BY r.device_id"
        return [
            (r["device_id"], r["cohort"], json.loads(r["report_json"]), r["updated"])
            for r in self._db.execute(sql, args)
        ]
