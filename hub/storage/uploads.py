"""Resumable sample uploads held in the database (migration 0012), for hub replicas.

A payload is fixed by its sha256 and length, so the bytes at an offset are the same whoever
sent them and whichever replica stored them: pieces are kept at their offset, overlapping
pieces agree, and a device resumes from the end of the run of pieces that starts at 0. The
final hash check (in the route) catches a device that sent something else.
"""

from __future__ import annotations

import time

from hub.storage._db import DBBase

_Key = tuple[str, str, str, int]  # device id, sample id, sha256, length


class UploadPartTables(DBBase):
    """Rows of ``upload_parts``."""

    def upload_held(
        self, device_id: str, sample_id: str, sha256: str, length: int | None = None
    ) -> int:
        """Bytes held of this payload from offset 0 without a gap (0: none); ``length`` None:
        of any length (the sha256 fixes it)."""
        sql = (
            "SELECT start, length, LENGTH(data) AS n FROM upload_parts WHERE device_id = ? "
            "AND sample_id = ? AND sha256 = ?"
        )
        args: list[object] = [device_id, sample_id, sha256]
        if length is not None:
            sql, args = sql + " AND length = ?", [*args, length]
        held = 0
        for r in self._db.execute(sql + " ORDER BY start", args):
            if r["start"] > held:
                break
            held = min(max(held, r["start"] + r["n"]), r["length"])
        return held

    def add_upload_part(
        self, device_id: str, sample_id: str, sha256: str, length: int, start: int, data: bytes
    ) -> None:
        """Keep ``data`` at offset ``start`` (a piece already there keeps its bytes: the same)."""
        if not data:
            return
        self._db.execute(
            "INSERT INTO upload_parts (device_id, sample_id, sha256, length, start, data, "
            "updated) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (device_id, sample_id, sha256, length, start, data, time.time()),
        )

    def upload_payload(self, device_id: str, sample_id: str, sha256: str, length: int) -> bytes:
        """The payload's bytes held from offset 0 (up to ``length``; fewer if a gap)."""
        out = bytearray()
        rows = self._db.execute(
            "SELECT start, data FROM upload_parts WHERE device_id = ? AND sample_id = ? AND "
            "sha256 = ? AND length = ? ORDER BY start",
            (device_id, sample_id, sha256, length),
        )
        for r in rows:
            start, data = r["start"], bytes(r["data"])
            if start > len(out):
                break
            out += data[len(out) - start :]
        return bytes(out[:length])

    def drop_upload_parts(
        self, device_id: str, sample_id: str, keep: tuple[str, int] | None = None
    ) -> None:
        """Forget a sample's partial uploads (all but the payload ``keep`` = (sha256, length))."""
        if keep is None:
            self._db.execute(
                "DELETE FROM upload_parts WHERE device_id = ? AND sample_id = ?",
                (device_id, sample_id),
            )
        else:
            self._db.execute(
                "DELETE FROM upload_parts WHERE device_id = ? AND sample_id = ? AND "
                "NOT (sha256 = ? AND length = ?)",
                (device_id, sample_id, *keep),
            )

    def make_upload_room(self, device_id: str, keep: str, per_device: int) -> None:
        """Keep at most ``per_device`` partial uploads of a device (sample ``keep`` among
        them): the least recently touched others go."""
        rows = self._db.execute(
            "SELECT sample_id, MAX(updated) AS t FROM upload_parts WHERE device_id = ? "
            "GROUP BY sample_id ORDER BY t",
            (device_id,),
        ).fetchall()
        others = [r["sample_id"] for r in rows if r["sample_id"] != keep]
        for sample_id in others[: max(0, len(others) - per_device + 1)]:
            self.drop_upload_parts(device_id, sample_id)

    def partial_uploads(self, device_id: str) -> list[str]:
        """Sample ids of a device's uploads in progress."""
        rows = self._db.execute(
            "SELECT DISTINCT sample_id FROM upload_parts WHERE device_id = ? ORDER BY sample_id",
            (device_id,),
        )
        return [r["sample_id"] for r in rows]

    def drop_stale_upload_parts(self, max_age_s: float) -> int:
        """Forget pieces untouched for ``max_age_s`` (devices that never came back)."""
        cur = self._db.execute(
            "DELETE FROM upload_parts WHERE updated < ?", (time.time() - max_age_s,)
        )
        return cur.rowcount
