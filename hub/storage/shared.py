"""Rows of ``shared_files`` (migration 0004): files mirrored for hub replicas, by change order."""

from __future__ import annotations

import hashlib

from hub.storage._db import DBBase


class SharedFileTables(DBBase):
    def shared_seq(self) -> int:
        """The latest change number (0: nothing shared yet)."""
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) AS n FROM shared_files").fetchone()
        return int(row["n"])

    def shared_since(self, seq: int) -> list[tuple[str, str, int]]:
        """(name, text, seq) of the files changed after ``seq``, in change order."""
        return [
            (r["name"], r["data"], int(r["seq"]))
            for r in self._db.execute(
                "SELECT name, data, seq FROM shared_files WHERE seq > ? ORDER BY seq", (seq,)
            )
        ]

    def put_shared(self, files: dict[str, str]) -> int:
        """Store the files whose content changed; return how many did."""
        changed = 0
        with self._transaction():
            known = {
                r["name"]: r["sha256"]
                for r in self._db.execute("SELECT name, sha256 FROM shared_files")
            }
            seq = self.shared_seq()
            for name, text in sorted(files.items()):
                sha = hashlib.sha256(text.encode()).hexdigest()
                if known.get(name) == sha:
                    continue
                seq += 1
                changed += 1
                self._db.execute(
                    "INSERT INTO shared_files (name, data, sha256, seq) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET data = excluded.data,"
                    " sha256 = excluded.sha256, seq = excluded.seq",
                    (name, text, sha, seq),
                )
        return changed
