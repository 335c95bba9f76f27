"""Embedded storage of the hub: one SQLite file for the rows and one folder for the bytes.

Bytes (bundle files, sample images) are content-addressed blobs, ``<data>/blobs/ab/abcdef…`` by
sha256: a blob is written to a temp file in ``<data>/blobs/tmp``, fsynced, and ``os.replace``d
into place only after its hash checked, so a reader never sees half a blob and a name always
matches its content. Rows live in ``<data>/hub.sqlite3`` (WAL journal, so readers never wait for
the writer):

- ``devices``: enrolled devices, their cohort, the sha256 of their token (never the token), the
  desired bundle/version a rollout set, and the last status they reported;
- ``samples``: uploaded or imported samples, ``pending`` until annotated, ranked by priority;
  each row keeps the key of its near-duplicate group, its needs-review flag and whether its
  image got a signature (migration 0014: the queue's index-only reads, the backfill);
- ``device_keys``, ``enroll_secrets``: each device's registered public key (identity), and
  admin-minted enrolment secrets (one-time or expiring; :mod:`hub.storage.identity`);
- ``sample_feedback``: the latest human feedback (confirm/correct) a device sent on a sample,
  with the label the model had predicted; it drives the annotation queue's ranking
  (:meth:`HubDB.annotation_queue`) and the per-device feedback metrics;
- ``bundles``: bundle versions that became current targets, with their manifest;
- ``jobs``: training jobs and their state ``queued → running → done | failed``;
- ``replay_reports``, ``blessings``, ``audit_log``, ``prediction_events``: the replay gate's
  records and the devices' prediction stream (:mod:`hub.storage.replay`).
- ``datasets``, ``dataset_items``: imported datasets, one immutable version per import
  (:mod:`hub.storage.datasets`);
- ``sample_signatures``, ``sample_hash_bands``: each sample image's perceptual hash, size,
  tiny image and near-duplicate group (:mod:`hub.storage.groups`, ranking in
  :mod:`hub.ranking` and :mod:`hub.storage.queue`);
- ``ontologies``: ontology versions with their explicit changes; a change remaps the samples
  in the same transaction (:mod:`hub.storage.ontologies`);
- ``upload_parts``: resumable sample uploads in progress, on PostgreSQL (replicas share them;
  :mod:`hub.storage.uploads`); the embedded hub keeps them as files in ``<data>/uploads``;
- ``hub_generations``: change counters bumped by triggers, for the hub's caches
  (:mod:`hub.fastpath`).

That is the embedded default. The same :class:`HubDB` runs on PostgreSQL (``database_url`` in
the hub config; :mod:`hub.storage._db` adapts placeholders and DDL) and the blobs in an
S3-compatible bucket (:mod:`hub.storage.blobs_s3`), so several hub replicas can share them.
The schema comes from the numbered migrations in ``hub/storage/migrations/``: a new table or
column is a new ``NNNN_<what>.sql`` file (portable SQL: SQLite's ``REAL`` and
``INTEGER PRIMARY KEY AUTOINCREMENT`` are translated for PostgreSQL). The app calls the
database off the event loop: ``await db.call(db.method, ...)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from hub.storage._db import Database, PostgresDatabase, SqliteDatabase, open_database
from hub.storage.blobs_fs import BlobStore, BlobWriter, PartialUploads, check_sha256
from hub.storage.blobs_s3 import S3BlobStore, S3Config
from hub.storage.bundles import BundleTables
from hub.storage.datasets import DatasetTables
from hub.storage.devices import FLEET, Device, DeviceTables
from hub.storage.identity import DeviceKey, EnrollSecret, IdentityTables
from hub.storage.jobs import Job, JobState, JobTables
from hub.storage.ontologies import OntologyTables
from hub.storage.queue import QueueEntry, QueueTables
from hub.storage.replay import ReplayTables
from hub.storage.rollouts import Rollout, RolloutTables
from hub.storage.samples import Sample, SampleState
from hub.storage.shadow import ShadowTables
from hub.storage.shared import SharedFileTables
from hub.storage.tokens import ApiToken, Role, TokenTables
from hub.storage.uploads import UploadPartTables
from hub.storage.web import WebSession, WebTables, Work

__all__ = [
    "FLEET",
    "ApiToken",
    "BlobStore",
    "BlobWriter",
    "Blobs",
    "Database",
    "Device",
    "DeviceKey",
    "EnrollSecret",
    "HubDB",
    "Job",
    "JobState",
    "PartialUploads",
    "PostgresDatabase",
    "QueueEntry",
    "Role",
    "Rollout",
    "S3BlobStore",
    "S3Config",
    "Sample",
    "SampleState",
    "SqliteDatabase",
    "WebSession",
    "Work",
    "check_sha256",
    "open_database",
]


class _Writer(Protocol):
    size: int

    def write(self, chunk: bytes) -> None: ...

    def commit(self, expected_sha256: str | None = None) -> tuple[str, bool]: ...

    def abort(self) -> None: ...


class Blobs(Protocol):
    """The blob store the app uses: a local folder (:class:`BlobStore`) or a bucket
    (:class:`S3BlobStore`). Blocking; called from worker threads."""

    def size(self, sha256: str) -> int | None: ...

    def has(self, sha256: str) -> bool: ...

    def read(self, sha256: str) -> bytes: ...

    def read_range(self, sha256: str, start: int, end: int) -> bytes: ...

    def writer(self) -> _Writer: ...

    def put(self, data: bytes, expected_sha256: str | None = None) -> tuple[str, bool]: ...


class HubDB(
    IdentityTables,
    DeviceTables,
    ShadowTables,
    QueueTables,
    BundleTables,
    JobTables,
    RolloutTables,
    ReplayTables,
    TokenTables,
    SharedFileTables,
    DatasetTables,
    OntologyTables,
    WebTables,
    UploadPartTables,
):
    """The hub's rows in SQLite or PostgreSQL: every table group's methods on one database.

    Every method is one short statement or transaction, blocking: the app runs it with
    :meth:`call` in the database's threads. ``HubDB(path)`` opens SQLite at ``path``.
    """

    def __init__(self, database: Database | Path) -> None:
        super().__init__(database)
