"""Near-duplicate groups of sample images (migration 0013; the rules in :mod:`hub.ranking`).

At ingest the app computes the image's :class:`~hub.ranking.ImageSignature` (off the event
loop) and calls :meth:`GroupTables.add_signature`: in one transaction (on PostgreSQL under an
advisory lock per bundle, so two replicas cannot open two groups for one scene) the sample
joins the group of its nearest stored near duplicate (:func:`~hub.ranking.is_duplicate`), or
opens its own. A group shows once in the annotation queue. When any member is annotated
(:meth:`propagate_annotation`, called by ``annotate``), every pending member, and every member
whose annotation was inherited, takes the same annotation (boxes scaled to its image size,
``inherited_from`` naming the sample a human annotated); a member that joins later inherits it
at ingest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from hub.ranking import (
    ImageSignature,
    bands,
    decode_feature,
    encode_feature,
    hamming,
    is_duplicate,
    scale_boxes,
)
from hub.storage._db import DBBase

__all__ = ["GroupJoin", "GroupTables"]


@dataclass(frozen=True)
class GroupJoin:
    """Where an image landed: its group, how far it is from the nearest member (None: it
    opened the group), and the sample it inherited an annotation from (if any)."""

    group_id: str
    distance: int | None
    inherited_from: str | None


def _lock_key(bundle: str) -> int:
    return int.from_bytes(hashlib.sha256(b"group:" + bundle.encode()).digest()[:7], "big")


class GroupTables(DBBase):
    """Rows of ``sample_signatures`` and ``sample_hash_bands``."""

    def add_signature(self, sample_id: str, bundle: str, sig: ImageSignature) -> GroupJoin:
        """Record a stored sample's signature and put it in its near-duplicate group (the same
        sample again changes nothing). A pending sample joining a group with an annotated
        member inherits that annotation."""
        with self._transaction():
            if self.dialect == "postgresql":
                self._db.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key(bundle),))
            row = self._db.execute(
                "SELECT group_id FROM sample_signatures WHERE sample_id = ?", (sample_id,)
            ).fetchone()
            if row is not None:  # grouped already (a retry, or the backfill after a crash)
                self._db.execute(
                    "UPDATE samples SET group_key = ?, signature_state = 'done' WHERE id = ?",
                    (row["group_id"], sample_id),
                )
                return GroupJoin(row["group_id"], None, None)
            keys = bands(sig.phash)
            where = " OR ".join("(b.band = ? AND b.value = ?)" for _ in keys)
            rows = self._db.execute(
                "SELECT DISTINCT g.sample_id, g.phash, g.feature, g.group_id, s.created"
                " FROM sample_hash_bands b JOIN sample_signatures g ON g.sample_id = b.sample_id"
                f" JOIN samples s ON s.id = g.sample_id WHERE b.bundle = ? AND ({where})",
                (bundle, *[v for k in keys for v in k]),
            ).fetchall()
            near = sorted(
                (hamming(sig.phash, int(r["phash"], 16)), r["created"], r["group_id"])
                for r in rows
                if is_duplicate(sig, int(r["phash"], 16), decode_feature(r["feature"]))
            )
            distance = near[0][0] if near else None
            group_id = near[0][2] if distance is not None else sample_id
            self._db.execute(
                "INSERT INTO sample_signatures (sample_id, bundle, phash, width, height, feature,"
                " group_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sample_id, bundle, f"{sig.phash:016x}", sig.width, sig.height,
                 encode_feature(sig.feature), group_id),
            )  # fmt: skip
            self._db.execute(
                "UPDATE samples SET group_key = ?, signature_state = 'done' WHERE id = ?",
                (group_id, sample_id),
            )
            for band, value in keys:
                self._db.execute(
                    "INSERT INTO sample_hash_bands (bundle, band, value, sample_id)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (bundle, band, value, sample_id),
                )
            inherited = None
            if distance is not None:
                me = self._db.execute(
                    "SELECT state, annotation_json FROM samples WHERE id = ?", (sample_id,)
                ).fetchone()
                if me["state"] == "pending":
                    inherited = self._inherit(sample_id, bundle, group_id)
                else:  # an annotated seed: its pending near duplicates take its annotation
                    self.propagate_annotation(sample_id, json.loads(me["annotation_json"]))
        return GroupJoin(group_id, distance, inherited)

    def unsigned_samples(self, before: float, limit: int) -> list[tuple[str, str, str]]:
        """(id, bundle, image sha256) of up to ``limit`` samples created before ``before`` that
        have no signature and were not found unsigned yet (oldest id first; :mod:`hub.backfill`)."""
        rows = self._db.execute(
            "SELECT id, bundle, image_sha256 FROM samples WHERE signature_state IS NULL"
            " AND created < ? ORDER BY id LIMIT ?",
            (before, limit),
        )
        return [(r["id"], r["bundle"], r["image_sha256"]) for r in rows]

    def mark_unsigned(self, sample_id: str) -> None:
        """Record that a sample's image has no signature (Pillow cannot decode it): it stays
        grouped by its bytes, and the backfill (:mod:`hub.backfill`) does not try it again."""
        self._db.execute(
            "UPDATE samples SET signature_state = 'none' WHERE id = ? AND signature_state IS NULL",
            (sample_id,),
        )

    def _inherit(self, sample_id: str, bundle: str, group_id: str) -> str | None:
        """A pending sample takes its group's annotation (a human's own first)."""
        src = self._db.execute(
            "SELECT s.id, s.annotation_json, g.width, g.height FROM sample_signatures g"
            " JOIN samples s ON s.id = g.sample_id WHERE g.bundle = ? AND g.group_id = ?"
            " AND s.state = 'annotated' AND s.id <> ?"
            " ORDER BY s.annotation_json LIKE ? , s.created DESC LIMIT 1",
            (bundle, group_id, sample_id, '%"inherited_from"%'),
        ).fetchone()
        if src is None:
            return None
        annotation = json.loads(src["annotation_json"])
        origin = str(annotation.get("inherited_from") or src["id"])
        me = self._db.execute(
            "SELECT width, height FROM sample_signatures WHERE sample_id = ?", (sample_id,)
        ).fetchone()
        copy = self._scaled(annotation, origin, (src["width"], src["height"]),
                            (me["width"], me["height"]))  # fmt: skip
        cur = self._db.execute(
            "UPDATE samples SET annotation_json = ?, state = 'annotated'"
            " WHERE id = ? AND state = 'pending'",
            (json.dumps(copy), sample_id),
        )
        return origin if cur.rowcount == 1 else None

    @staticmethod
    def _scaled(
        annotation: dict[str, Any], origin: str, src: tuple[int, int], dst: tuple[int, int]
    ) -> dict[str, Any]:
        out = {**annotation, "inherited_from": origin}
        if isinstance(annotation.get("boxes"), list):
            out["boxes"] = scale_boxes(annotation["boxes"], src, dst)
        return out

    def propagate_annotation(self, sample_id: str, annotation: dict[str, Any]) -> list[str]:
        """Give ``annotation`` (just stored on ``sample_id``) to the other members of its group
        that are pending or hold an inherited annotation; return their ids. Run inside the
        caller's transaction."""
        me = self._db.execute(
            "SELECT bundle, group_id, width, height FROM sample_signatures WHERE sample_id = ?",
            (sample_id,),
        ).fetchone()
        if me is None:
            return []
        rows = self._db.execute(
            "SELECT s.id, s.state, s.annotation_json, g.width, g.height FROM sample_signatures g"
            " JOIN samples s ON s.id = g.sample_id WHERE g.bundle = ? AND g.group_id = ?"
            " AND s.id <> ?",
            (me["bundle"], me["group_id"], sample_id),
        ).fetchall()
        changed = []
        for r in rows:
            own = r["state"] == "annotated" and "inherited_from" not in json.loads(
                r["annotation_json"] or "{}"
            )
            if own:
                continue  # a human annotated this copy itself: keep theirs
            copy = self._scaled(annotation, sample_id, (me["width"], me["height"]),
                                (r["width"], r["height"]))  # fmt: skip
            self._db.execute(
                "UPDATE samples SET annotation_json = ?, state = 'annotated' WHERE id = ?",
                (json.dumps(copy), r["id"]),
            )
            changed.append(r["id"])
        return changed

    def group_of(self, sample_id: str) -> tuple[str, list[str]] | None:
        """A sample's group id and its members (oldest first), or None without a signature."""
        me = self._db.execute(
            "SELECT bundle, group_id FROM sample_signatures WHERE sample_id = ?", (sample_id,)
        ).fetchone()
        if me is None:
            return None
        rows = self._db.execute(
            "SELECT g.sample_id FROM sample_signatures g JOIN samples s ON s.id = g.sample_id"
            " WHERE g.bundle = ? AND g.group_id = ? ORDER BY s.created, s.id",
            (me["bundle"], me["group_id"]),
        )
        return me["group_id"], [r["sample_id"] for r in rows]
