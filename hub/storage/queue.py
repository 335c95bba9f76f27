"""The annotation queue: pending samples ranked for a human across devices.

The database does the grouping and the tiers (one entry per near-duplicate group, or per exact
image when a sample has no signature; corrected before unreviewed before confirmed), and hands
a window of the best candidates, in that order, to :func:`hub.ranking.rank`, which orders
them by repeat / device round / uncertainty × novelty × class balance (docs/architecture.md,
"Hub annotation queue").
"""

from __future__ import annotations

import heapq
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from hub.ranking import Candidate, References, decode_feature, is_random, label_of, rank
from hub.storage._db import Row, loads
from hub.storage.samples import Sample, SampleTables

__all__ = ["QueueEntry", "QueueTables", "Tier"]

Tier = Literal["needs_review", "corrected", "unreviewed", "confirmed"]
_TIERS: tuple[Tier, ...] = ("needs_review", "corrected", "unreviewed", "confirmed")
REFERENCE_LIMIT = 5000
"""Annotated samples (newest first) that novelty and class balance compare against."""
REFERENCE_TTL_S = 10.0
"""The longest a process keeps a bundle's references without reading them again."""
WINDOW_MIN = 200
"""The fewest candidates the database hands the ranking (``max(4 × limit, WINDOW_MIN)``)."""
_IN_CHUNK = 500  # ids per IN (...) when reading the window's full rows


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
        # The window the ranking re-orders.
        keys = self._candidates(bundle, None if limit is None else max(4 * limit, WINDOW_MIN))
        full = self._rows_by_id([k["id"] for k in keys])
        rows = [{**full[k["id"]], **k} for k in keys if k["id"] in full]
        feedback = [loads(r.get("feedback_json")) for r in rows]
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

    def _candidates(self, bundle: str | None, window: int | None) -> list[Row]:
        """The first ``window`` (None: all) pending groups' best members in the database's
        order (tier, device rank, priority, age, id), with ``copies``, ``corrected``,
        ``confirmed`` and ``device_rank``.

        The database hands over narrow rows (no meta, no image: index-only scans of
        ``samples_cover``, migration 0014) and Python groups and orders them: one pass and short
        sorts, where SQL window functions over the same rows cost several times more on SQLite.
        A group with an annotated member (or an image a human annotated) is left out."""
        where, args = "", list[Any]()
        if bundle is not None:
            where, args = " AND bundle = ?", [bundle]
        # Three narrow reads, index-only scans of samples_cover (migration 0014).
        closed = {
            (r["bundle"], key)
            for r in self._db.execute(
                "SELECT bundle, group_key, image_sha256 FROM samples"
                f" WHERE state = 'annotated'{where}",
                args,
            )
            for key in (r["group_key"], "sha:" + r["image_sha256"])
        }
        feedback = {  # the pending samples' feedback: few rows (a device sent them one by one)
            r["sample_id"]: r
            for r in self._db.execute(
                "SELECT f.sample_id, f.kind, f.received, f.feedback_json FROM sample_feedback f"
                " JOIN samples s ON s.id = f.sample_id WHERE s.state = 'pending'"
                + (" AND s.bundle = ?" if bundle is not None else ""),
                args,
            )
        }
        rows = [
            r
            for r in self._db.execute(
                "SELECT id, bundle, device_id, priority, created, group_key, needs_review,"
                f" image_sha256 FROM samples WHERE state = 'pending'{where}",
                args,
            ).fetchall()
            if (r["bundle"], r["group_key"]) not in closed
            and (r["bundle"], "sha:" + r["image_sha256"]) not in closed
        ]
        groups: dict[tuple[str, str], Row] = {}
        for r in rows:
            r["order"] = (-r["priority"], r["created"], r["id"])
            g = groups.get((r["bundle"], r["group_key"]))
            if g is None:
                g = groups[(r["bundle"], r["group_key"])] = {
                    **r,
                    "copies": 0,
                    "corrected": 0,
                    "confirmed": 0,
                }
            elif r["order"] < g["order"]:
                g.update(r)
            g["copies"] += 1
            fb = feedback.get(r["id"])
            if fb is not None:
                g["corrected"] |= fb["kind"] == "correct"
                g["confirmed"] |= fb["kind"] == "confirm"
                # The group's feedback: the latest correction, else the latest confirmation.
                rank = (fb["kind"] != "correct", -fb["received"])
                if "feedback_rank" not in g or rank < g["feedback_rank"]:
                    g["feedback_rank"], g["feedback_json"] = rank, fb["feedback_json"]
        by_device: dict[tuple[str, str], list[Row]] = {}
        for g in groups.values():
            by_device.setdefault((g["bundle"], g["device_id"]), []).append(g)
        for mine in by_device.values():  # many short sorts: cheaper than one long one
            mine.sort(key=_by_order)
            for k, g in enumerate(mine, 1):
                g["device_rank"] = k
        key = lambda g: (_tier(g), g["device_rank"], g["order"])  # noqa: E731
        if window is not None and window < len(groups):
            return heapq.nsmallest(window, groups.values(), key=key)
        return sorted(groups.values(), key=key)

    def _rows_by_id(self, ids: list[str]) -> dict[str, Row]:
        """Full sample rows (with the signature's tiny image and group id) by id."""
        out: dict[str, Row] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            for r in self._db.execute(
                "SELECT s.*, g.group_id AS grp, g.feature AS feature FROM samples s"
                f" LEFT JOIN sample_signatures g ON g.sample_id = s.id WHERE s.id IN ({marks})",
                chunk,
            ):
                out[r["id"]] = r
        return out

    def _references(self, bundles: set[str]) -> dict[str, References]:
        """Per bundle: the newest annotated samples' tiny images and class counts.

        Kept per process and read again when the bundle's annotated samples change in number
        or newest id (an index-only count), or after :data:`REFERENCE_TTL_S` (a changed label,
        a signature the backfill added): decoding thousands of annotations per "next" would
        cost more than the rest of the queue."""
        cache: dict[str, tuple[tuple[Any, ...], float, References]] = self.__dict__.setdefault(
            "_reference_cache", {}
        )
        out: dict[str, References] = {}
        now = time.monotonic()
        for b in sorted(bundles):
            mark = self._db.execute(
                "SELECT COUNT(*) AS n, MAX(id) AS last FROM samples"
                " WHERE bundle = ? AND state = 'annotated'",
                (b,),
            ).fetchone()
            key = (mark["n"], mark["last"])
            held = cache.get(b)
            if held is not None and held[0] == key and now - held[1] < REFERENCE_TTL_S:
                out[b] = held[2]
                continue
            out[b] = self._read_references(b)
            cache[b] = (key, now, out[b])
        return out

    def _read_references(self, b: str) -> References:
        ref = References()
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
        return ref


def _by_order(g: Row) -> Any:
    return g["order"]


def _tier(r: Row) -> int:
    if r["needs_review"]:
        return 0
    if r["corrected"]:
        return 1
    return 3 if r["confirmed"] else 2
