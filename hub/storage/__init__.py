"""Embedded storage of the hub: one SQLite file for the rows and one folder for the bytes.

Bytes (bundle files, sample images) are content-addressed blobs, ``<data>/blobs/ab/abcdef…`` by
sha256: a blob is written to a temp file in ``<data>/blobs/tmp``, fsynced, and ``os.replace``d
into place only after its hash checked, so a reader never sees half a blob and a name always
matches its content. Rows live in ``<data>/hub.sqlite3`` (WAL journal, so readers never wait for
the writer):

- ``devices``: enrolled devices, their cohort, the sha256 of their token (never the token), the
  desired bundle/version a rollout set, and the last status they reported;
- ``samples``: uploaded or imported samples, ``pending`` until annotated, ranked by priority;
- ``device_keys``, ``enroll_secrets``: each device's registered public key (identity), and
  admin-minted enrolment secrets (one-time or expiring; :mod:`hub.storage.identity`);
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

from pathlib import Path

from hub.storage.blobs_fs import BlobStore, BlobWriter, PartialUploads, check_sha256
from hub.storage.bundles import BundleTables
from hub.storage.devices import FLEET, Device, DeviceTables
from hub.storage.identity import DeviceKey, EnrollSecret, IdentityTables
from hub.storage.jobs import Job, JobState, JobTables
from hub.storage.samples import QueueEntry, Sample, SampleState, SampleTables
from hub.storage.shadow import ShadowTables

__all__ = [
    "FLEET",
    "BlobStore",
    "BlobWriter",
    "Device",
    "DeviceKey",
    "EnrollSecret",
    "HubDB",
    "Job",
    "JobState",
    "PartialUploads",
    "QueueEntry",
    "Sample",
    "SampleState",
    "check_sha256",
]


class HubDB(IdentityTables, DeviceTables, ShadowTables, SampleTables, BundleTables, JobTables):
    """The hub's rows in SQLite: every table group's methods on one connection.

    Every method is one short statement or transaction.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
