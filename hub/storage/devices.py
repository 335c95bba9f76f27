"""Devices, their update events, and the desired bundle of devices, cohorts and the fleet."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from hub.errors import NotFound
from hub.storage._db import DBBase, Row, loads


@dataclass(frozen=True)
class Device:
    """An enrolled device as the hub knows it."""

    id: str
    cohort: str | None
    desired_bundle: str | None
    desired_version: int | None
    status: dict[str, Any] | None
    last_seen: float | None


# The cohorts row that a fleet-wide rollout (no devices, no cohort) writes.
FLEET = "*"


class DeviceTables(DBBase):
    """Rows of ``devices``, ``device_events`` and ``cohorts``."""

    # -- devices -------------------------------------------------------------------------------

    def device_by_token_hash(self, token_hash: str) -> tuple[str, str] | None:
        """(device id, stored token hash) for a token hash, or None."""
        row = self._db.execute(
            "SELECT id, token_hash FROM devices WHERE token_hash = ?", (token_hash,)
        ).fetchone()
        return (row["id"], row["token_hash"]) if row else None

    def _device(self, row: Row) -> Device:
        return Device(
            id=row["id"],
            cohort=row["cohort"],
            desired_bundle=row["desired_bundle"],
            desired_version=row["desired_version"],
            status=loads(row["status_json"]),
            last_seen=row["last_seen"],
        )

    def cohort_desired(self, cohort: str | None) -> tuple[str | None, int | None]:
        """What the last rollout to this cohort (else to the whole fleet) named, or Nones."""
        for name in (cohort, FLEET):
            if name is None:
                continue
            row = self._db.execute(
                "SELECT desired_bundle, desired_version FROM cohorts WHERE name = ?", (name,)
            ).fetchone()
            if row:
                return row["desired_bundle"], row["desired_version"]
        return None, None

    def device(self, device_id: str) -> Device:
        """One device. Raises NotFound."""
        row = self._db.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchone()
        if row is None:
            raise NotFound(f"no device {device_id!r}")
        return self._device(row)

    def devices(self) -> list[Device]:
        """All devices, by id."""
        return [self._device(r) for r in self._db.execute("SELECT * FROM devices ORDER BY id")]

    def touch_device(self, device_id: str, status: dict[str, Any] | None = None) -> None:
        """Record that a device was seen now, with its reported status if given."""
        if status is None:
            self._db.execute(
                "UPDATE devices SET last_seen = ? WHERE id = ?", (time.time(), device_id)
            )
        else:
            self._db.execute(
                "UPDATE devices SET last_seen = ?, status_json = ? WHERE id = ?",
                (time.time(), json.dumps(status), device_id),
            )

    def touch_devices(self, seen: list[tuple[str, float, dict[str, Any] | None]]) -> None:
        """Record many devices' last contact at once: (device id, when, status or None to keep
        the stored status). One transaction: what the hub's heartbeat write-behind flushes."""
        bare = [(when, d) for d, when, status in seen if status is None]
        full = [(when, json.dumps(s), d) for d, when, s in seen if s is not None]
        with self._transaction():
            if bare:
                self._db.executemany("UPDATE devices SET last_seen = ? WHERE id = ?", bare)
            if full:
                self._db.executemany(
                    "UPDATE devices SET last_seen = ?, status_json = ? WHERE id = ?", full
                )

    def generations(self) -> dict[str, int]:
        """The change counters the triggers of migration 0011 bump (``tokens``, ``desired``)."""
        rows = self._db.execute("SELECT name, value FROM hub_generations")
        return {r["name"]: int(r["value"]) for r in rows}

    def add_device_events(self, device_id: str, events: list[dict[str, Any]]) -> int:
        """Store update outcomes a device reported (failures, rollbacks); a repeated id is
        ignored (the device resends what it is not sure arrived). Returns how many were new."""
        new = 0
        with self._transaction():
            for e in events:
                cur = self._db.execute(
                    "INSERT INTO device_events (device_id, id, time, kind, event_json) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (device_id, e["id"], e["time"], e["kind"], json.dumps(e)),
                )
                new += cur.rowcount
        return new

    def device_events(self, device_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """A device's latest reported events, newest first."""
        rows = self._db.execute(
            "SELECT event_json FROM device_events WHERE device_id = ? ORDER BY time DESC LIMIT ?",
            (device_id, limit),
        )
        return [json.loads(r["event_json"]) for r in rows]

    def set_desired(
        self, bundle: str, version: int, devices: list[str] | None, cohort: str | None
    ) -> int:
        """Point devices at a bundle version: the listed ones, a cohort, or (neither) all.

        Returns how many devices now want it. Raises NotFound if a listed device is unknown
        (and then changes nothing).
        """
        with self._transaction():
            if devices is not None:
                known = {
                    r["id"]
                    for r in self._db.execute(
                        f"SELECT id FROM devices WHERE id IN ({','.join('?' * len(devices))})",
                        devices,
                    )
                }
                missing = sorted(set(devices) - known)
                if missing:
                    raise NotFound(f"unknown devices: {', '.join(missing[:5])}")
                where, args = f"id IN ({','.join('?' * len(devices))})", list(devices)
                if cohort is not None:
                    where, args = where + " AND cohort = ?", [*args, cohort]
            else:
                where, args = ("cohort = ?", [cohort]) if cohort is not None else ("1 = 1", [])
                # Devices that join later start from the cohort's (or the fleet's) rollout.
                self._db.execute(
                    "INSERT INTO cohorts (name, desired_bundle, desired_version) "
                    "VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                    "desired_bundle = excluded.desired_bundle, "
                    "desired_version = excluded.desired_version",
                    (cohort if cohort is not None else FLEET, bundle, version),
                )
            cur = self._db.execute(
                f"UPDATE devices SET desired_bundle = ?, desired_version = ? WHERE {where}",
                [bundle, version, *args],
            )
            return cur.rowcount
