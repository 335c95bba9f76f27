"""Samples, human feedback on them, annotations, and the ranked annotation queue."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from hub.errors import NotFound
from hub.storage._db import DBBase, Row, loads

SampleState = Literal["pending", "annotated"]


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
    tier: Literal["needs_review", "corrected", "unreviewed", "confirmed"]
    device_rank: int  # 1: the device's best pending sample of this bundle
    copies: int  # pending samples with the same image (this one stands for all)
    feedback: dict[str, Any] | None  # the latest feedback on this image, if any


class SampleTables(DBBase):
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
        2. **tiers**: a sample that needs review comes first (an ontology change split its
           label and only a human can choose: ``meta.needs_review``, or the device's
           ``extra.needs_review`` for feedback it could not convert), then an image a human
           corrected on a device (the model was wrong and the label is half done), then
           unreviewed ones, then confirmed ones (a human already agreed with the model: they
           teach least);
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
                   MAX(CASE WHEN f.kind = 'correct' THEN 1 ELSE 0 END) AS corrected,
                   MAX(CASE WHEN f.kind = 'confirm' THEN 1 ELSE 0 END) AS confirmed,
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
                   CASE WHEN p.meta_json LIKE ? THEN 1 ELSE 0 END AS needs_review,
                   COALESCE(fb.confirmed, 0) AS confirmed,
                   ROW_NUMBER() OVER (PARTITION BY p.bundle, p.device_id
                                      ORDER BY p.priority DESC, p.created, p.id) AS device_rank
            FROM pending p LEFT JOIN fb ON fb.bundle = p.bundle
                                       AND fb.image_sha256 = p.image_sha256
            WHERE p.copy_rank = 1
        )
        SELECT * FROM ranked
        ORDER BY CASE WHEN needs_review = 1 THEN 0 WHEN corrected = 1 THEN 1
                      WHEN confirmed = 1 THEN 3 ELSE 2 END,
                 device_rank, priority DESC, created, id
        """
        # meta is stored as json.dumps writes it; a LIKE on the flag runs on both databases.
        args.append('%"needs_review": true%')
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        out: list[QueueEntry] = []
        for r in self._db.execute(sql, args).fetchall():
            tier: Literal["needs_review", "corrected", "unreviewed", "confirmed"] = (
                "needs_review"
                if r["needs_review"]
                else "corrected"
                if r["corrected"]
                else "confirmed"
                if r["confirmed"]
                else "unreviewed"
            )
            out.append(
                QueueEntry(
                    self._sample(r), tier, r["device_rank"], r["copies"], self._image_feedback(r)
                )
            )
        return out

    def _image_feedback(self, row: Row) -> dict[str, Any] | None:
        """The latest feedback on any sample with this image, corrections first."""
        fb = self._db.execute(
            "SELECT f.feedback_json FROM sample_feedback f JOIN samples s ON s.id = f.sample_id"
            " WHERE s.bundle = ? AND s.image_sha256 = ?"
            " ORDER BY f.kind = 'correct' DESC, f.received DESC LIMIT 1",
            (row["bundle"], row["image_sha256"]),
        ).fetchone()
        return json.loads(fb["feedback_json"]) if fb else None
