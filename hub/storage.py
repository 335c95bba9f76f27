"""Embedded storage of the hub: one SQLite file for the rows and one folder for the bytes.

Bytes (bundle files, sample images) are content-addressed blobs, ``<data>/blobs/ab/abcdef…`` by
sha256: a blob is written to a temp file in ``<data>/blobs/tmp``, fsynced, and ``os.replace``d
into place only after its hash checked, so a reader never sees half a blob and a name always
matches its content. Rows live in ``<data>/hub.sqlite3`` (WAL journal, so readers never wait for
the writer):

- ``devices``: enrolled devices, their cohort, the sha256 of their token (never the token), the
  desired bundle/version a rollout set, and the last status they reported;
- ``samples``: uploaded or imported samples, ``pending`` until annotated, ranked by priority;
- ``sample_feedback``: the latest human feedback (confirm/correct) a device sent on a sample,
  with the label the model had predicted; it drives the annotation queue's ranking
  (:meth:`HubDB.annotation_queue`) and the per-device feedback metrics;
- ``bundles``: bundle versions that became current targets, with their manifest;
- ``jobs``: training jobs and their state ``queued → running → done | failed``.

Queries are tiny and indexed, so the app calls :class:`HubDB` straight from the event loop; only
blob writes (fsync of megabytes) go to a thread. One-hub scale by design; a fleet that outgrows
it runs the same code on PostgreSQL and an object store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from hub.errors import BadRequest, NotFound
from runtime._atomic import fsync_dir

__all__ = [
    "BlobStore",
    "BlobWriter",
    "Device",
    "HubDB",
    "Job",
    "JobState",
    "PartialUploads",
    "QueueEntry",
    "Sample",
    "SampleState",
    "check_sha256",
]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

SampleState = Literal["pending", "annotated"]
JobState = Literal["queued", "running", "done", "failed"]


def check_sha256(value: str) -> str:
    """Return ``value`` if it is 64 lower-case hex digits; raise BadRequest otherwise."""
    if not _SHA256_RE.match(value):
        raise BadRequest(f"{value[:80]!r} is not a lower-case hex sha256")
    return value


class BlobWriter:
    """A blob being written: feed chunks, then :meth:`commit` (checks the hash) or :meth:`abort`."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        fd, tmp = tempfile.mkstemp(prefix="blob.", suffix=".tmp", dir=store.tmp_dir)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._tmp = Path(tmp)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Append a chunk (hashed as it goes)."""
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self, expected_sha256: str | None = None) -> tuple[str, bool]:
        """Fsync and move the blob into place; return (sha256, newly stored).

        Raises BadRequest (and keeps nothing) if the content does not hash to
        ``expected_sha256``. Storing a blob that already exists is a no-op.
        """
        sha256 = self._hash.hexdigest()
        try:
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise BadRequest(f"content hashes to {sha256}, not {expected_sha256}")
            final = self._store.path(sha256)
            if final.exists():
                return sha256, False
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, final)
            fsync_dir(final.parent)
            return sha256, True
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the temp file (safe to call more than once)."""
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


class BlobStore:
    """Content-addressed files under ``root``: ``root/ab/abcdef…`` named by their sha256."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp_dir.glob("*.tmp"):  # left by a crash mid-upload
            stale.unlink(missing_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the blob with this hash lives (whether or not it exists)."""
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256

    def size(self, sha256: str) -> int | None:
        """Size in bytes of a stored blob, or None if it is not stored."""
        try:
            return self.path(sha256).stat().st_size
        except (FileNotFoundError, BadRequest):
            return None

    def has(self, sha256: str) -> bool:
        """True if a blob with this hash is stored."""
        return self.size(sha256) is not None

    def read(self, sha256: str) -> bytes:
        """The blob's bytes. Raises NotFound."""
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no blob {sha256}") from None

    def writer(self) -> BlobWriter:
        """Start writing a blob whose hash is known only at the end."""
        return BlobWriter(self)

    def put(self, data: bytes, expected_sha256: str | None = None) -> tuple[str, bool]:
        """Store ``data``; return (sha256, newly stored). Raises BadRequest on a hash mismatch."""
        w = self.writer()
        try:
            w.write(data)
        except BaseException:
            w.abort()
            raise
        return w.commit(expected_sha256)


class PartialUploads:
    """Sample payloads being uploaded in parts: ``<root>/<device>/<id>.<sha256>.<length>.part``.

    The file name carries everything the hub must remember about an upload, and the file's size
    *is* the offset the device resumes from, so there is no second state to disagree with. A
    new payload for the same sample id (its meta changed on the device) replaces the old one.
    Files untouched for ``max_age_s`` are removed at start (a device that never came back).
    """

    def __init__(self, root: Path, max_age_s: float = 7 * 86400, per_device: int = 16) -> None:
        self.root = Path(root)
        self.per_device = per_device
        self.root.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - max_age_s
        for stale in self.root.glob("*/*.part"):
            with contextlib.suppress(OSError):
                if stale.stat().st_mtime < cutoff:
                    stale.unlink()

    def path(self, device_id: str, sample_id: str, sha256: str, length: int) -> Path:
        check_sha256(sha256)
        return self.root / device_id / f"{sample_id}.{sha256}.{int(length)}.part"

    def offset(self, device_id: str, sample_id: str, sha256: str) -> int:
        """Bytes held of this payload (0: none)."""
        for p in (self.root / device_id).glob(f"{sample_id}.{check_sha256(sha256)}.*.part"):
            with contextlib.suppress(OSError):
                return p.stat().st_size
        return 0

    def drop(self, device_id: str, sample_id: str, keep: Path | None = None) -> None:
        """Remove the partial uploads of a sample (all but ``keep``)."""
        for p in (self.root / device_id).glob(f"{sample_id}.*.part"):
            if p != keep:
                p.unlink(missing_ok=True)

    def make_room(self, device_id: str, keep: Path) -> None:
        """Keep at most ``per_device`` partial uploads of a device: the oldest others go.

        A device uploads one sample at a time, so more means abandoned uploads (or a device
        misbehaving); this bounds the disk a device can hold with partial bytes.
        """
        parts = []
        for p in (self.root / device_id).glob("*.part"):
            with contextlib.suppress(OSError):
                parts.append((p.stat().st_mtime, p))
        parts.sort()
        for _, p in parts[: max(0, len(parts) - self.per_device + 1)]:
            if p != keep:
                p.unlink(missing_ok=True)


@dataclass(frozen=True)
class Device:
    """An enrolled device as the hub knows it."""

    id: str
    cohort: str | None
    desired_bundle: str | None
    desired_version: int | None
    status: dict[str, Any] | None
    last_seen: float | None


@dataclass(frozen=True)
class Sample:
    """A stored sample: the device's meta, its image blob, and the annotation once there."""

    id: str
    bundle: str
    device_id: str
    priority: float
    meta: dict[str, Any]
    image_sha256: str
    state: SampleState
    annotation: dict[str, Any] | None
    created: float


@dataclass(frozen=True)
class QueueEntry:
    """A sample's place in the annotation queue and why (see :meth:`HubDB.annotation_queue`)."""

    sample: Sample
    tier: Literal["corrected", "unreviewed", "confirmed"]
    device_rank: int  # 1: the device's best pending sample of this bundle
    copies: int  # pending samples with the same image (this one stands for all)
    feedback: dict[str, Any] | None  # the latest feedback on this image, if any


@dataclass(frozen=True)
class Job:
    """A training job."""

    id: int
    state: JobState
    params: dict[str, Any]
    error: str | None
    log_path: str | None
    artifact_path: str | None


# The cohorts row that a fleet-wide rollout (no devices, no cohort) writes.
FLEET = "*"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    cohort TEXT,
    token_hash TEXT NOT NULL UNIQUE,
    desired_bundle TEXT,
    desired_version INTEGER,
    status_json TEXT,
    last_seen REAL
);
CREATE INDEX IF NOT EXISTS devices_cohort ON devices(cohort);
CREATE TABLE IF NOT EXISTS device_events (
    device_id TEXT NOT NULL,
    id TEXT NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    event_json TEXT NOT NULL,
    PRIMARY KEY (device_id, id)
);
CREATE TABLE IF NOT EXISTS cohorts (
    name TEXT PRIMARY KEY,
    desired_bundle TEXT NOT NULL,
    desired_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    id TEXT PRIMARY KEY,
    bundle TEXT NOT NULL,
    device_id TEXT NOT NULL,
    priority REAL NOT NULL,
    meta_json TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'annotated')),
    annotation_json TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_queue ON samples(bundle, state, priority DESC, created);
CREATE TABLE IF NOT EXISTS sample_feedback (
    sample_id TEXT PRIMARY KEY REFERENCES samples(id),
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('confirm', 'correct')),
    label TEXT,
    predicted TEXT NOT NULL,
    feedback_json TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_image ON samples(image_sha256);
CREATE TABLE IF NOT EXISTS bundles (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest_json TEXT NOT NULL,
    published REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS shadow_rollouts (
    scope TEXT NOT NULL CHECK (scope IN ('device', 'cohort', 'fleet')),
    name TEXT NOT NULL,
    bundle TEXT NOT NULL,
    version INTEGER NOT NULL,
    rule_json TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (scope, name)
);
CREATE TABLE IF NOT EXISTS shadow_reports (
    device_id TEXT PRIMARY KEY,
    bundle TEXT,
    version INTEGER,
    status TEXT,
    report_json TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    params TEXT NOT NULL,
    error TEXT,
    log_path TEXT,
    artifact_path TEXT,
    created REAL NOT NULL
);
"""


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class HubDB:
    """The hub's rows in SQLite. Every method is one short statement or transaction."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        self._db.close()

    # -- devices -------------------------------------------------------------------------------

    def enroll_device(self, device_id: str, cohort: str | None, token_hash: str) -> None:
        """Add a device, or give an enrolled one a new token (its old token stops working).

        A re-enrolment keeps the device's desired bundle; ``cohort`` replaces the old one only
        when given.
        """
        self._db.execute(
            "INSERT INTO devices (id, cohort, token_hash) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET token_hash = excluded.token_hash, "
            "cohort = COALESCE(excluded.cohort, devices.cohort)",
            (device_id, cohort, token_hash),
        )

    def device_by_token_hash(self, token_hash: str) -> tuple[str, str] | None:
        """(device id, stored token hash) for a token hash, or None."""
        row = self._db.execute(
            "SELECT id, token_hash FROM devices WHERE token_hash = ?", (token_hash,)
        ).fetchone()
        return (row["id"], row["token_hash"]) if row else None

    def _device(self, row: sqlite3.Row) -> Device:
        return Device(
            id=row["id"],
            cohort=row["cohort"],
            desired_bundle=row["desired_bundle"],
            desired_version=row["desired_version"],
            status=_loads(row["status_json"]),
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

    def add_device_events(self, device_id: str, events: list[dict[str, Any]]) -> int:
        """Store update outcomes a device reported (failures, rollbacks); a repeated id is
        ignored (the device resends what it is not sure arrived). Returns how many were new."""
        new = 0
        with self._transaction():
            for e in events:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO device_events (device_id, id, time, kind, event_json) "
                    "VALUES (?, ?, ?, ?, ?)",
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

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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

    # -- samples -------------------------------------------------------------------------------

    def add_sample(
        self,
        sample_id: str,
        bundle: str,
        device_id: str,
        priority: float,
        meta: dict[str, Any],
        image_sha256: str,
        annotation: dict[str, Any] | None = None,
    ) -> bool:
        """Insert a sample; return False (and change nothing) if the id is already stored."""
        cur = self._db.execute(
            "INSERT INTO samples (id, bundle, device_id, priority, meta_json, image_sha256, state,"
            " annotation_json, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO NOTHING",
            (
                sample_id,
                bundle,
                device_id,
                priority,
                json.dumps(meta),
                image_sha256,
                "pending" if annotation is None else "annotated",
                None if annotation is None else json.dumps(annotation),
                time.time(),
            ),
        )
        return cur.rowcount == 1

    def _sample(self, row: sqlite3.Row) -> Sample:
        return Sample(
            id=row["id"],
            bundle=row["bundle"],
            device_id=row["device_id"],
            priority=row["priority"],
            meta=json.loads(row["meta_json"]),
            image_sha256=row["image_sha256"],
            state=row["state"],
            annotation=_loads(row["annotation_json"]),
            created=row["created"],
        )

    def sample(self, sample_id: str) -> Sample:
        """One sample. Raises NotFound."""
        row = self._db.execute("SELECT * FROM samples WHERE id = ?", (sample_id,)).fetchone()
        if row is None:
            raise NotFound(f"no sample {sample_id!r}")
        return self._sample(row)

    def samples(
        self, bundle: str | None, state: SampleState | None, limit: int | None
    ) -> list[Sample]:
        """Samples ranked for annotation: highest priority first, then oldest first."""
        where: list[str] = []
        args: list[Any] = []
        if bundle is not None:
            where.append("bundle = ?")
            args.append(bundle)
        if state is not None:
            where.append("state = ?")
            args.append(state)
        sql = "SELECT * FROM samples"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY priority DESC, created, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [self._sample(r) for r in self._db.execute(sql, args)]

    def annotate(self, sample_id: str, annotation: dict[str, Any]) -> None:
        """Store a sample's annotation and mark it annotated (a new one replaces the old).

        Raises NotFound.
        """
        cur = self._db.execute(
            "UPDATE samples SET annotation_json = ?, state = 'annotated' WHERE id = ?",
            (json.dumps(annotation), sample_id),
        )
        if cur.rowcount == 0:
            raise NotFound(f"no sample {sample_id!r}")

    # -- feedback and the annotation queue -----------------------------------------------------

    def set_feedback(
        self, sample_id: str, device_id: str, feedback: dict[str, Any], predicted: str
    ) -> None:
        """Store (or replace) the feedback on a sample. Raises NotFound."""
        self.sample(sample_id)
        self._db.execute(
            "INSERT INTO sample_feedback (sample_id, device_id, kind, label, predicted,"
            " feedback_json, received) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(sample_id) DO UPDATE SET kind = excluded.kind, label = excluded.label,"
            " predicted = excluded.predicted, feedback_json = excluded.feedback_json,"
            " received = excluded.received",
            (
                sample_id,
                device_id,
                feedback["kind"],
                feedback.get("label"),
                predicted,
                json.dumps(feedback),
                time.time(),
            ),
        )

    def feedback(self, sample_id: str) -> dict[str, Any] | None:
        """The latest feedback stored for a sample, or None."""
        row = self._db.execute(
            "SELECT feedback_json FROM sample_feedback WHERE sample_id = ?", (sample_id,)
        ).fetchone()
        return json.loads(row["feedback_json"]) if row else None

    def feedback_entries(self, bundle: str | None = None) -> list[tuple[str, str, str, str | None]]:
        """(device id, predicted label, kind, corrected label) of every stored feedback."""
        sql = (
            "SELECT f.device_id, f.predicted, f.kind, f.label FROM sample_feedback f"
            " JOIN samples s ON s.id = f.sample_id"
        )
        args: list[Any] = []
        if bundle is not None:
            sql += " WHERE s.bundle = ?"
            args.append(bundle)
        return [
            (r["device_id"], r["predicted"], r["kind"], r["label"])
            for r in self._db.execute(sql + " ORDER BY f.device_id", args)
        ]

    def annotation_queue(self, bundle: str | None, limit: int | None) -> list[QueueEntry]:
        """Pending samples ranked for a human, across devices (docs/architecture.md, "Hub
        annotation queue").

        1. **One image, one entry**: pending samples with the same image sha256 (in a bundle)
           collapse to the best of them, and an image already annotated under another sample
           is not asked again;
        2. **tiers**: an image a human corrected on a device comes first (the model was wrong
           and the label is half done), then unreviewed ones, then confirmed ones (a human
           already agreed with the model: they teach least);
        3. **per-device rank**: within a tier, each device's k-th best sample competes in round
           k (round-robin by rank), so a device that uploads many samples, or scores all of
           them high, cannot push the other devices' best ones down; ties within a round go
           to the higher raw priority, then the older sample.
        """
        where, args = "", list[Any]()
        if bundle is not None:
            where, args = " AND s.bundle = ?", [bundle]
        sql = f"""
        WITH fb AS (
            SELECT s.bundle, s.image_sha256,
                   MAX(f.kind = 'correct') AS corrected, MAX(f.kind = 'confirm') AS confirmed,
                   MAX(f.received) AS last_received
            FROM sample_feedback f JOIN samples s ON s.id = f.sample_id
            GROUP BY s.bundle, s.image_sha256
        ),
        pending AS (
            SELECT s.*,
                   COUNT(*) OVER (PARTITION BY s.bundle, s.image_sha256) AS copies,
                   ROW_NUMBER() OVER (PARTITION BY s.bundle, s.image_sha256
                                      ORDER BY s.priority DESC, s.created, s.id) AS copy_rank
            FROM samples s
            WHERE s.state = 'pending'{where}
              AND NOT EXISTS (SELECT 1 FROM samples a WHERE a.state = 'annotated'
                              AND a.bundle = s.bundle AND a.image_sha256 = s.image_sha256)
        ),
        ranked AS (
            SELECT p.*, COALESCE(fb.corrected, 0) AS corrected,
                   COALESCE(fb.confirmed, 0) AS confirmed,
                   ROW_NUMBER() OVER (PARTITION BY p.bundle, p.device_id
                                      ORDER BY p.priority DESC, p.created, p.id) AS device_rank
            FROM pending p LEFT JOIN fb ON fb.bundle = p.bundle
                                       AND fb.image_sha256 = p.image_sha256
            WHERE p.copy_rank = 1
        )
        SELECT * FROM ranked
        ORDER BY CASE WHEN corrected THEN 0 WHEN confirmed THEN 2 ELSE 1 END,
                 device_rank, priority DESC, created, id
        """
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        out: list[QueueEntry] = []
        for r in self._db.execute(sql, args).fetchall():
            tier: Literal["corrected", "unreviewed", "confirmed"] = (
                "corrected" if r["corrected"] else "confirmed" if r["confirmed"] else "unreviewed"
            )
            out.append(
                QueueEntry(
                    self._sample(r), tier, r["device_rank"], r["copies"], self._image_feedback(r)
                )
            )
        return out

    def _image_feedback(self, row: sqlite3.Row) -> dict[str, Any] | None:
        """The latest feedback on any sample with this image, corrections first."""
        fb = self._db.execute(
            "SELECT f.feedback_json FROM sample_feedback f JOIN samples s ON s.id = f.sample_id"
            " WHERE s.bundle = ? AND s.image_sha256 = ?"
            " ORDER BY f.kind = 'correct' DESC, f.received DESC LIMIT 1",
            (row["bundle"], row["image_sha256"]),
        ).fetchone()
        return json.loads(fb["feedback_json"]) if fb else None

    # -- bundles -------------------------------------------------------------------------------

    def add_bundle(self, name: str, version: int, manifest: dict[str, Any]) -> None:
        """Record a bundle version that became a current target (again: no-op)."""
        self._db.execute(
            "INSERT INTO bundles (name, version, manifest_json, published) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(name, version) DO NOTHING",
            (name, version, json.dumps(manifest), time.time()),
        )

    def has_bundle(self, name: str, version: int) -> bool:
        """True if this bundle version was published."""
        return (
            self._db.execute(
                "SELECT 1 FROM bundles WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
            is not None
        )

    def bundles(self) -> list[tuple[str, int, dict[str, Any]]]:
        """Every published bundle version: (name, version, manifest)."""
        return [
            (r["name"], r["version"], json.loads(r["manifest_json"]))
            for r in self._db.execute("SELECT * FROM bundles ORDER BY name, version")
        ]

    # -- jobs ----------------------------------------------------------------------------------

    def add_job(self, params: dict[str, Any]) -> int:
        """Create a queued job and return its id."""
        cur = self._db.execute(
            "INSERT INTO jobs (state, params, created) VALUES ('queued', ?, ?)",
            (json.dumps(params), time.time()),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

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
