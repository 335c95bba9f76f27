"""Named API tokens (admin, annotator, viewer) and device token rotation / revocation.

Only sha256 hashes of tokens are stored. A revoked device keeps its row (history, samples) but
its token hash is replaced by a value no token hashes to, so its next request is refused.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Literal

from hub.errors import Conflict, NotFound
from hub.storage._db import DBBase

Role = Literal["admin", "annotator", "viewer"]


@dataclass(frozen=True)
class ApiToken:
    name: str
    role: Role
    created: float
    revoked: float | None


class TokenTables(DBBase):
    """Rows of ``api_tokens`` (migration 0003) and the token columns of ``devices``."""

    def add_api_token(self, name: str, role: Role, token_hash: str) -> None:
        """Store a new named token. Raises Conflict if the name is taken (revoked ones too)."""
        cur = self._db.execute(
            "INSERT INTO api_tokens (name, role, token_hash, created) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (name, role, token_hash, time.time()),
        )
        if cur.rowcount != 1:
            raise Conflict(f"a token named {name!r} exists already")

    def api_token_by_hash(self, token_hash: str) -> tuple[str, Role, str] | None:
        """(name, role, stored hash) of a live named token, or None."""
        row = self._db.execute(
            "SELECT name, role, token_hash FROM api_tokens WHERE token_hash = ?"
            " AND revoked IS NULL",
            (token_hash,),
        ).fetchone()
        return (row["name"], row["role"], row["token_hash"]) if row else None

    def api_tokens(self) -> list[ApiToken]:
        return [
            ApiToken(r["name"], r["role"], r["created"], r["revoked"])
            for r in self._db.execute("SELECT * FROM api_tokens ORDER BY name")
        ]

    def revoke_api_token(self, name: str) -> None:
        """Raises NotFound."""
        cur = self._db.execute(
            "UPDATE api_tokens SET revoked = ? WHERE name = ? AND revoked IS NULL",
            (time.time(), name),
        )
        if cur.rowcount != 1:
            raise NotFound(f"no live token named {name!r}")

    def set_device_token(self, device_id: str, token_hash: str | None) -> None:
        """Give a device a new token hash (rotation), or none that any token matches
        (revocation). Raises NotFound."""
        value = token_hash if token_hash is not None else "revoked:" + secrets.token_hex(16)
        cur = self._db.execute("UPDATE devices SET token_hash = ? WHERE id = ?", (value, device_id))
        if cur.rowcount != 1:
            raise NotFound(f"no device {device_id!r}")
