"""Rows of the hub's web page: login sessions, and the claim → submit → review of annotations.

A session row holds the sha256 of the cookie value (never the value), the person's token name
and role, its CSRF token and when it expires; each request that finds it alive slides the expiry
forward (an idle session ends). Annotation work is one row per sample a person touched:

- ``claimed``: the sample is locked for ``claimed_by`` until ``claimed_until`` (a claim that ran
  out is free again), so two annotators never get the same sample;
- ``submitted``: the boxes wait for a second person's review (not the submitter);
- ``returned``: the reviewer sent them back with a note; the sample is in the queue again,
  offered first to the person who submitted it.

Accepting a review writes the annotation through :meth:`SampleTables.annotate` (the sample leaves
the queue and enters the next training dataset) and deletes the work row, in one transaction.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from hub.errors import Conflict, ForbiddenError, NotFound
from hub.storage._db import DBBase, loads

WorkState = Literal["claimed", "submitted", "returned"]


@dataclass(frozen=True)
class WebSession:
    name: str
    role: Literal["admin", "annotator", "viewer"]
    csrf: str
    expires: float


@dataclass(frozen=True)
class Work:
    sample_id: str
    state: WorkState
    claimed_by: str
    claimed_until: float
    boxes: list[list[Any]] | None
    submitted_by: str | None
    submitted: float | None
    note: str | None


class WebTables(DBBase):
    """Rows of ``web_sessions`` and ``annotation_work`` (migration 0010)."""

    # -- sessions ---------------------------------------------------------------------------

    def add_session(self, id_hash: str, name: str, role: str, csrf: str, ttl_s: float) -> None:
        now = time.time()
        self._db.execute(
            "INSERT INTO web_sessions (id_hash, name, role, csrf, created, expires)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (id_hash, name, role, csrf, now, now + ttl_s),
        )

    def session(self, id_hash: str, ttl_s: float) -> WebSession | None:
        """The live session with this cookie hash (its expiry slid forward), or None."""
        now = time.time()
        row = self._db.execute(
            "SELECT * FROM web_sessions WHERE id_hash = ? AND expires > ?", (id_hash, now)
        ).fetchone()
        if row is None:
            return None
        self._db.execute(
            "UPDATE web_sessions SET expires = ? WHERE id_hash = ?", (now + ttl_s, id_hash)
        )
        return WebSession(row["name"], row["role"], row["csrf"], now + ttl_s)

    def drop_session(self, id_hash: str) -> None:
        self._db.execute("DELETE FROM web_sessions WHERE id_hash = ?", (id_hash,))

    def drop_expired_sessions(self) -> int:
        cur = self._db.execute("DELETE FROM web_sessions WHERE expires <= ?", (time.time(),))
        return cur.rowcount

    # -- annotation work -------------------------------------------------------------------

    def _work(self, row: dict[str, Any]) -> Work:
        return Work(
            row["sample_id"],
            row["state"],
            row["claimed_by"],
            row["claimed_until"],
            loads(row["boxes_json"]),
            row["submitted_by"],
            row["submitted"],
            row["note"],
        )

    def work(self, sample_id: str) -> Work | None:
        row = self._db.execute(
            "SELECT * FROM annotation_work WHERE sample_id = ?", (sample_id,)
        ).fetchone()
        return None if row is None else self._work(row)

    def works(self, state: WorkState) -> list[Work]:
        return [
            self._work(r)
            for r in self._db.execute(
                "SELECT * FROM annotation_work WHERE state = ? ORDER BY submitted, sample_id",
                (state,),
            )
        ]

    def claim(self, sample_id: str, who: str, ttl_s: float) -> bool:
        """Lock a pending sample for ``who``; False if someone else holds it or it waits for
        review. Claiming again one's own claim (or a returned sample) renews it."""
        now = time.time()
        with self._transaction():
            row = self._db.execute(
                "SELECT state FROM samples WHERE id = ?", (sample_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no sample {sample_id}")
            if row["state"] != "pending":
                return False
            work = self.work(sample_id)
            if work is not None:
                if work.state == "submitted":
                    return False
                held = work.state == "claimed" and work.claimed_until > now
                if held and work.claimed_by != who:
                    return False
                self._db.execute(
                    "UPDATE annotation_work SET state = 'claimed', claimed_by = ?,"
                    " claimed_until = ? WHERE sample_id = ?",
                    (who, now + ttl_s, sample_id),
                )
                return True
            self._db.execute(
                "INSERT INTO annotation_work (sample_id, state, claimed_by, claimed_until)"
                " VALUES (?, 'claimed', ?, ?) ON CONFLICT DO NOTHING",
                (sample_id, who, now + ttl_s),
            )
            return True

    def release(self, sample_id: str, who: str) -> None:
        """Give up one's claim (nothing happens to a claim of someone else)."""
        self._db.execute(
            "DELETE FROM annotation_work WHERE sample_id = ? AND state = 'claimed'"
            " AND claimed_by = ? AND boxes_json IS NULL",
            (sample_id, who),
        )

    def submit(self, sample_id: str, who: str, boxes: list[list[Any]]) -> None:
        """Hand in boxes for review. Raises Conflict unless ``who`` holds a live claim."""
        now = time.time()
        with self._transaction():
            work = self.work(sample_id)
            if work is None or work.state != "claimed" or work.claimed_by != who:
                raise Conflict(f"sample {sample_id} is not claimed by {who}; claim it first")
            if work.claimed_until <= now:
                raise Conflict(f"the claim on {sample_id} ran out; claim it again")
            self._db.execute(
                "UPDATE annotation_work SET state = 'submitted', boxes_json = ?,"
                " submitted_by = ?, submitted = ?, note = NULL WHERE sample_id = ?",
                (json.dumps(boxes), who, now, sample_id),
            )

    def review(self, sample_id: str, reviewer: str, accept: bool, note: str = "") -> None:
        """Accept (the sample is annotated with the submitted boxes) or send back with a note.

        Raises NotFound (nothing submitted), ForbiddenError (one's own submission)."""
        with self._transaction():
            work = self.work(sample_id)
            if work is None or work.state != "submitted":
                raise NotFound(f"sample {sample_id} has no annotation waiting for review")
            if work.submitted_by == reviewer:
                raise ForbiddenError("a second person reviews an annotation, not its author")
            if accept:
                boxes = work.boxes or []
                # Labels of an ontology version changed since are converted (or refused).
                labels = self.current_labels(sample_id, [str(b[4]) for b in boxes])  # type: ignore[attr-defined]
                boxes = [[*b[:4], lbl] for b, lbl in zip(boxes, labels, strict=True)]
                self.annotate(  # type: ignore[attr-defined]
                    sample_id,
                    {"boxes": boxes, "annotator": work.submitted_by, "reviewer": reviewer},
                )
                self._db.execute("DELETE FROM annotation_work WHERE sample_id = ?", (sample_id,))
            else:
                self._db.execute(
                    "UPDATE annotation_work SET state = 'returned', note = ?, claimed_by = ?,"
                    " claimed_until = 0 WHERE sample_id = ?",
                    (note[:2000], work.submitted_by or "", sample_id),
                )

    def busy_samples(self, who: str) -> set[str]:
        """Samples not to offer ``who``: claimed live by others, or waiting for review."""
        now = time.time()
        return {
            r["sample_id"]
            for r in self._db.execute(
                "SELECT sample_id FROM annotation_work WHERE state = 'submitted'"
                " OR (state = 'claimed' AND claimed_until > ? AND claimed_by <> ?)"
                " OR (state = 'returned' AND claimed_by <> ?)",
                (now, who, who),
            )
        }

    # -- jobs for the page -------------------------------------------------------------------

    def recent_jobs(self, limit: int) -> list[Any]:
        """The newest jobs first (as :class:`hub.storage.Job`)."""
        ids = [
            r["id"]
            for r in self._db.execute("SELECT id FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        ]
        return [self.job(i) for i in ids]  # type: ignore[attr-defined]
