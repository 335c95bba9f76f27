"""The annotation queue: pending samples ranked for a human across devices.

The database does the grouping and the tiers (one entry per near-duplicate group, or per exact
image when a sample has no signature; corrected before unreviewed before confirmed), and hands
a window of the best candidates, in that order, to :func:`hub.ranking.rank`, which orders
them by repeat / device round / uncertainty × novelty × class balance (docs/architecture.md,
"Hub annotation queue").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from hub.ranking import Candidate, References, decode_feature, is_random, label_of, rank
from hub.storage._db import Row
from hub.storage.samples import Sample, SampleTables

__all__ = ["QueueEntry", "QueueTables", "Tier"]

Tier = Literal["needs_review", "corrected", "unreviewed", "confirmed"]
_TIERS: tuple[Tier, ...] = ("needs_review", "corrected", "unreviewed", "confirmed")
REFERENCE_LIMIT = 5000
"""Annotated samples (newest first) that novelty and class balance compare against."""


@dataclass(frozen=True)
class QueueEntry:
    """A sample's place in the annotation queue and why (:meth:`QueueTables.annotation_queue`)."""

    sample: Sample
    tier: Tier
    device_rank: int  # 1: the device's best pending entry of this bundle
    copies: int  # pending samples of its group (this one stands for all)
    feedback: dict[str, Any] | None  # the latest feedback on the group, if any
    group: str | None = None  # near-duplicate group id (None: no signature, exact bytes)
    novelty: float | None = None  # 0..1 against annotated and earlier entries (None: unknown)
    similar_to: str | None = None  # a repeat: the annotated / earlier sample it resembles
    round: int = 0  # 0: the device's first entry in its tier


class QueueTables(SampleTables):
    """The ranked view over ``samples``, ``sample_feedback`` and ``sample_signatures``."""

    def annotation_queue(self, bundle: str | None, limit: int | None) -> list[QueueEntry]:
        """Pending samples ranked for a human, across devices (docs/architecture.md, "Hub
        annotation queue").

        1. **one group, one entry**: pending near duplicates (:mod:`hub.storage.groups`; for
           images without a signature, the same sha256) collapse to the best of them, and a
           group with an annotated member is not asked again (its members inherited it);
        2. **tiers**: needs review (an ontology split left the label to a human:
           ``meta.needs_review``, or the device's ``extra.needs_review``), then groups a human
           corrected on a device, then unreviewed ones, then confirmed ones;
        3. **within a tier** (:func:`hub.ranking.rank`): repeats of annotated or earlier-listed
           scenes last, then round robin by device, then uncertainty × novelty × class balance.
        """
        where, args = "", list[Any]()
        if bundle is not None:
            where, args = " WHERE s.bundle = ?", [bundle]
        sql = f"""
        WITH keyed AS (
            SELECT s.*, COALESCE(g.group_id, s.image_sha256) AS gkey, g.group_id AS grp,
                   g.feature AS feature
            FROM samples s LEFT JOIN sample_signatures g ON g.sample_id = s.id{where}
        ),
        fb AS (
            SELECT k.bundle, k.gkey,
                   MAX(CASE WHEN f.kind = 'correct' THEN 1 ELSE 0 END) AS corrected,
                   MAX(CASE WHEN f.kind = 'confirm' THEN 1 ELSE 0 END) AS confirmed
            FROM sample_feedback f JOIN keyed k ON k.id = f.sample_id
            GROUP BY k.bundle, k.gkey
        ),
        pending AS (
            SELECT k.*,
                   COUNT(*) OVER (PARTITION BY k.bundle, k.gkey) AS copies,
                   ROW_NUMBER() OVER (PARTITION BY k.bundle, k.gkey
                                      ORDER BY k.priority DESC, k.created, k.id) AS copy_rank
            FROM keyed k
            WHERE k.state = 'pending'
              AND NOT EXISTS (SELECT 1 FROM keyed a WHERE a.state = 'annotated'
                              AND a.bundle = k.bundle AND a.gkey = k.gkey)
              AND NOT EXISTS (SELECT 1 FROM samples a WHERE a.state = 'annotated'
                              AND a.bundle = k.bundle AND a.image_sha256 = k.image_sha256)
        ),
        ranked AS (
            SELECT p.*, COALESCE(fb.corrected, 0) AS corrected,
                   CASE WHEN p.meta_json LIKE ? THEN 1 ELSE 0 END AS needs_review,
                   COALESCE(fb.confirmed, 0) AS confirmed,
                   ROW_NUMBER() OVER (PARTITION BY p.bundle, p.device_id
                                      ORDER BY p.priority DESC, p.created, p.id) AS device_rank
            FROM pending p LEFT JOIN fb ON fb.bundle = p.bundle AND fb.gkey = p.gkey
            WHERE p.copy_rank = 1
        )
        SELECT * FROM ranked
        ORDER BY CASE WHEN needs_review = 1 THEN 0 WHEN corrected = 1 THEN 1
                      WHEN confirmed = 1 THEN 3 ELSE 2 END,
                 device_rank, priority DESC, created, id
        """
        # meta is stored as json.dumps writes it; a LIKE on the flag runs on both databases.
        args.append('%"needs_review": true%')
        if limit is not None:  # the window the ranking re-orders
            sql += " LIMIT ?"
            args.append(max(4 * limit, 200))
        rows = self._db.execute(sql, args).fetchall()
        feedback = [
            self._group_feedback(r) if r["corrected"] or r["confirmed"] else None for r in rows
        ]
        metas = [json.loads(r["meta_json"]) for r in rows]
        cands = [
            Candidate(
                id=r["id"],
                bundle=r["bundle"],
                device=r["device_id"],
                tier=_tier(r),
                priority=float(r["priority"]),
                order=i,
                feature=decode_feature(r["feature"]),
                label=label_of(meta, fb),
                plain=is_random(meta),
            )
            for i, (r, meta, fb) in enumerate(zip(rows, metas, feedback, strict=True))
        ]
        refs = self._references({r["bundle"] for r in rows})
        out = []
        for ranked in rank(cands, refs, limit):
            i = ranked.candidate.order
            r = rows[i]
            entry = QueueEntry(
                self._sample(r), _TIERS[ranked.candidate.tier], r["device_rank"], r["copies"],
                feedback[i], r["grp"], ranked.novelty, ranked.similar_to, ranked.round,
            )  # fmt: skip
            out.append(entry)
        return out

    def _references(self, bundles: set[str]) -> dict[str, References]:
        """Per bundle: the newest annotated samples' tiny images and class counts."""
        out: dict[str, References] = {}
        for b in sorted(bundles):
            ref = out.setdefault(b, References())
            rows = self._db.execute(
                "SELECT s.id, s.annotation_json, g.feature FROM samples s"
                " LEFT JOIN sample_signatures g ON g.sample_id = s.id"
                " WHERE s.bundle = ? AND s.state = 'annotated' ORDER BY s.created DESC LIMIT ?",
                (b, REFERENCE_LIMIT),
            )
            for r in rows:
                feature = decode_feature(r["feature"])
                if feature is not None:
                    ref.ids.append(r["id"])
                    ref.features.append(feature)
                try:
                    annotation = json.loads(r["annotation_json"] or "{}")
                except ValueError:
                    continue
                labels = [str(x[4]) for x in annotation.get("boxes") or [] if len(x) >= 5]
                if annotation.get("label"):
                    labels.append(str(annotation["label"]))
                for lbl in set(labels):
                    ref.counts[lbl] = ref.counts.get(lbl, 0) + 1
        return out

    def _group_feedback(self, row: Row) -> dict[str, Any] | None:
        """The latest feedback on any sample of this group, corrections first."""
        fb = self._db.execute(
            "SELECT f.feedback_json FROM sample_feedback f JOIN samples s ON s.id = f.sample_id"
            " LEFT JOIN sample_signatures g ON g.sample_id = s.id"
            " WHERE s.bundle = ? AND COALESCE(g.group_id, s.image_sha256) = ?"
            " ORDER BY f.kind = 'correct' DESC, f.received DESC LIMIT 1",
            (row["bundle"], row["gkey"]),
        ).fetchone()
        return json.loads(fb["feedback_json"]) if fb else None


def _tier(r: Row) -> int:
    if r["needs_review"]:
        return 0
    if r["corrected"]:
        return 1
    return 3 if r["confirmed"] else 2
