"""Device keys and enrolment secrets: what makes a device id belong to one device.

``device_keys`` holds each device's registered ed25519 public key (base64 of the 32 raw
bytes), a key waiting for an admin's approval (``pending_key``), whether an admin reset the
device (it may then enrol afresh), and the issue time of the last challenge it answered (a
challenge is accepted once and only if newer: no replay). A device enrolled before keys existed
has no row until it registers its key with its own token.

``enroll_secrets`` holds admin-minted enrolment secrets by sha256: a number of uses left, an
expiry and an optional cohort. A use is taken by one conditional ``UPDATE`` (portable SQL: it
works the same on SQLite and PostgreSQL), so two enrolments cannot both spend the last use.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from hub.errors import NotFound
from hub.storage._db import DBBase

__all__ = ["DeviceKey", "EnrollSecret", "IdentityTables"]


@dataclass(frozen=True)
class DeviceKey:
    """A device's key row."""

    public_key: str | None
    pending_key: str | None
    reset: bool
    refresh_issued: float


@dataclass(frozen=True)
class EnrollSecret:
    """An admin-minted enrolment secret as stored (never the secret itself)."""

    uses_left: int
    expires: float
    cohort: str | None


def _revoked_token_hash() -> str:
    # token_hash is NOT NULL UNIQUE; a value no sha256 hex digest can equal revokes the token.
    return "revoked:" + secrets.token_hex(16)


class IdentityTables(DBBase):
    """Rows of ``device_keys`` and ``enroll_secrets`` (migration ``0003_identity.sql``)."""

    # -- keys -------------------------------------------------------------------------------

    def device_key(self, device_id: str) -> DeviceKey | None:
        """The key row of a device, or None (unknown device, or enrolled without a key)."""
        row = self._db.execute(
            "SELECT public_key, pending_key, reset, refresh_issued FROM device_keys "
            "WHERE device_id = ?",
            (device_id,),
        ).fetchone()
        if row is None:
            return None
        return DeviceKey(
            row["public_key"], row["pending_key"], bool(row["reset"]), row["refresh_issued"]
        )

    def device_exists(self, device_id: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM devices WHERE id = ?", (device_id,)).fetchone()
            is not None
        )

    def enroll_new_device(
        self, device_id: str, cohort: str | None, token_hash: str, public_key: str | None
    ) -> bool:
        """Add a device that does not exist yet, or take over one an admin reset.

        Returns False (and changes nothing) when the id is enrolled and not reset.
        """
        with self._transaction():
            cur = self._db.execute(
                "INSERT INTO devices (id, cohort, token_hash) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO NOTHING",
                (device_id, cohort, token_hash),
            )
            if cur.rowcount == 0:
                key = self.device_key(device_id)
                if key is None or not key.reset:
                    return False
                self._db.execute(
                    "UPDATE devices SET token_hash = ?, cohort = COALESCE(?, cohort) WHERE id = ?",
                    (token_hash, cohort, device_id),
                )
            self._db.execute(
                "INSERT INTO device_keys (device_id, public_key, pending_key, reset) "
                "VALUES (?, ?, NULL, 0) ON CONFLICT(device_id) DO UPDATE SET "
                "public_key = excluded.public_key, pending_key = NULL, reset = 0",
                (device_id, public_key),
            )
            return True

    def enroll_device(self, device_id: str, cohort: str | None, token_hash: str) -> bool:
        """Add a device without a key (tools and tests); never re-keys an enrolled id.

        Returns False (and changes nothing) when the id is enrolled and not reset.
        """
        return self.enroll_new_device(device_id, cohort, token_hash, None)

    def register_first_key(self, device_id: str, public_key: str) -> str | None:
        """Register a key for a device that has none (it proves itself with its token).

        Returns the key now registered (``public_key``, or the one registered before).
        """
        with self._transaction():
            self._db.execute(
                "INSERT INTO device_keys (device_id, public_key) VALUES (?, ?) "
                "ON CONFLICT(device_id) DO NOTHING",
                (device_id, public_key),
            )
            self._db.execute(
                "UPDATE device_keys SET public_key = ? WHERE device_id = ? AND public_key IS NULL "
                "AND reset = 0",
                (public_key, device_id),
            )
            key = self.device_key(device_id)
        return key.public_key if key is not None else None

    def set_pending_key(self, device_id: str, public_key: str) -> None:
        """Record a key an enrolment asked for on an enrolled id (an admin may approve it)."""
        self._db.execute(
            "INSERT INTO device_keys (device_id, pending_key) VALUES (?, ?) "
            "ON CONFLICT(device_id) DO UPDATE SET pending_key = excluded.pending_key",
            (device_id, public_key),
        )

    def refresh_device(
        self, device_id: str, issued: float, token_hash: str, new_key: str | None, signed_by: str
    ) -> bool:
        """Give a device a new token (and key) for a challenge issued at ``issued``, answered
        with ``signed_by`` (compared and swapped in one transaction).

        False when a challenge issued at or after it was already used (a replay), or the key
        changed meanwhile.
        """
        with self._transaction():
            cur = self._db.execute(
                "UPDATE device_keys SET refresh_issued = ?, "
                "public_key = COALESCE(?, public_key) "
                "WHERE device_id = ? AND refresh_issued < ? AND public_key = ?",
                (issued, new_key, device_id, issued, signed_by),
            )
            if cur.rowcount != 1:
                return False
            self._db.execute(
                "UPDATE devices SET token_hash = ? WHERE id = ?", (token_hash, device_id)
            )
            return True

    def approve_device_key(self, device_id: str, public_key: str | None) -> str:
        """Admin: make ``public_key`` (default: the pending one) the device's key and revoke its
        token; the device then gets a token by answering a challenge. Returns the key.

        Raises NotFound (unknown device, or no key given and none pending).
        """
        with self._transaction():
            if not self.device_exists(device_id):
                raise NotFound(f"no device {device_id!r}")
            key = self.device_key(device_id)
            chosen = public_key or (key.pending_key if key is not None else None)
            if chosen is None:
                raise NotFound(f"device {device_id!r} has no key waiting for approval")
            self._db.execute(
                "INSERT INTO device_keys (device_id, public_key, reset) VALUES (?, ?, 0) "
                "ON CONFLICT(device_id) DO UPDATE SET public_key = excluded.public_key, "
                "pending_key = NULL, reset = 0",
                (device_id, chosen),
            )
            self._db.execute(
                "UPDATE devices SET token_hash = ? WHERE id = ?",
                (_revoked_token_hash(), device_id),
            )
        return chosen

    def reset_device(self, device_id: str) -> None:
        """Admin: forget the device's key and token; its id may be enrolled afresh (with an
        enrolment secret). Its cohort, rollout and samples stay. Raises NotFound."""
        with self._transaction():
            if not self.device_exists(device_id):
                raise NotFound(f"no device {device_id!r}")
            self._db.execute(
                "INSERT INTO device_keys (device_id, public_key, pending_key, reset) "
                "VALUES (?, NULL, NULL, 1) ON CONFLICT(device_id) DO UPDATE SET "
                "public_key = NULL, pending_key = NULL, reset = 1",
                (device_id,),
            )
            self._db.execute(
                "UPDATE devices SET token_hash = ? WHERE id = ?",
                (_revoked_token_hash(), device_id),
            )

    # -- enrolment secrets ------------------------------------------------------------------

    def add_enroll_secret(
        self, secret_hash: str, uses: int, expires: float, cohort: str | None
    ) -> None:
        self._db.execute(
            "INSERT INTO enroll_secrets (secret_hash, uses_left, expires, cohort, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (secret_hash, uses, expires, cohort, time.time()),
        )

    def enroll_secret(self, secret_hash: str, now: float) -> EnrollSecret | None:
        """A usable minted secret (uses left, not expired), or None."""
        row = self._db.execute(
            "SELECT uses_left, expires, cohort FROM enroll_secrets "
            "WHERE secret_hash = ? AND uses_left > 0 AND expires > ?",
            (secret_hash, now),
        ).fetchone()
        return EnrollSecret(row["uses_left"], row["expires"], row["cohort"]) if row else None

    def take_enroll_secret(self, secret_hash: str, now: float) -> bool:
        """Spend one use of a minted secret; False if none is left or it expired."""
        cur = self._db.execute(
            "UPDATE enroll_secrets SET uses_left = uses_left - 1 "
            "WHERE secret_hash = ? AND uses_left > 0 AND expires > ?",
            (secret_hash, now),
        )
        return cur.rowcount == 1

    def give_back_enroll_secret(self, secret_hash: str) -> None:
        """Undo :meth:`take_enroll_secret` (the enrolment it paid for did not happen)."""
        self._db.execute(
            "UPDATE enroll_secrets SET uses_left = uses_left + 1 WHERE secret_hash = ?",
            (secret_hash,),
        )
