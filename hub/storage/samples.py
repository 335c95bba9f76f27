"""Samples, human feedback on them, and annotations (the queue: :mod:`hub.storage.queue`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from hub.errors import NotFound
from hub.storage._db import Row, loads
from hub.storage.groups import GroupTables

SampleState = Literal["pending", "annotated"]


def needs_review(meta_json: str) -> int:
    """1 when a sample's meta (as ``json.dumps`` wrote it) asks for a human's review: an
    ontology split left its label open (``needs_review``), or the device asked
    (``extra.needs_review``). Kept in ``samples.needs_review`` for the queue's first tier."""
    return int('"needs_review": true' in meta_json)


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


class SampleTables(GroupTables):
    """Rows of ``samples`` and ``sample_feedback``."""

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
        """Insert a sample; return False (and change nothing) if the id is already stored. It
        stands in the queue by its image bytes until :meth:`add_signature` groups it."""
        meta_json = json.dumps(meta)
        cur = self._db.execute(
            "INSERT INTO samples (id, bundle, device_id, priority, meta_json, image_sha256, state,"
            " annotation_json, created, group_key, needs_review)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
            (
                sample_id,
                bundle,
                device_id,
                priority,
                meta_json,
                image_sha256,
                "pending" if annotation is None else "annotated",
                None if annotation is None else json.dumps(annotation),
                time.time(),
                image_sha256,
                needs_review(meta_json),
            ),
        )
        return cur.rowcount == 1

    def _sample(self, row: Row) -> Sample:
        return Sample(
            id=row["id"],
            bundle=row["bundle"],
            device_id=row["device_id"],
            priority=row["priority"],
            meta=json.loads(row["meta_json"]),
            image_sha256=row["image_sha256"],
            state=row["state"],
            annotation=loads(row["annotation_json"]),
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

    def annotate(self, sample_id: str, annotation: dict[str, Any]) -> list[str]:
        """Store a sample's annotation and mark it annotated (a new one replaces the old); its
        near duplicates inherit it (:meth:`propagate_annotation`). Returns their ids.

        Raises NotFound.
        """
        with self._transaction():
            cur = self._db.execute(
                "UPDATE samples SET annotation_json = ?, state = 'annotated' WHERE id = ?",
                (json.dumps(annotation), sample_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no sample {sample_id!r}")
            return self.propagate_annotation(sample_id, annotation)

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
