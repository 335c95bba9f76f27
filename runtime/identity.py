"""A device's own identity: an ed25519 key pair made on first start, kept in the state folder.

The private key never leaves ``<state>/device_key.pem`` (PKCS#8 PEM, mode 0600, written
atomically). Its public half is registered with the hub at enrolment. From then on the device
id belongs to that key: the fleet enrolment secret cannot re-key it, and a device whose token
is no longer accepted (401) gets a new one by signing a challenge of the hub
(:func:`refresh_message`) — never by enrolling again. The hub verifies with
:func:`verify_signature`; both sides build the signed bytes with the same function.

A device moves itself to a new key (``leanloop device rotate-key``) by proving both keys to
the hub: the current key signs :func:`refresh_message` naming the new public key, the new key
signs :func:`new_key_message`, both over one fresh challenge. :class:`KeyFiles` keeps the new
key in ``<state>/device_key.next.pem`` until the hub has confirmed the move, and only then
renames it over ``device_key.pem``; a device that was killed in between tries both (current
first) and keeps whichever the hub accepts — so no crash point leaves it without a key the hub
knows.

Wire forms: a public key is the base64 of its 32 raw bytes; a signature the base64 of its
64 bytes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from runtime._atomic import atomic_write_bytes, fsync_dir
from runtime._limits import read_bounded
from runtime.errors import ConfigError

__all__ = [
    "KEY_NAME",
    "NEXT_KEY_NAME",
    "DeviceKey",
    "KeyFiles",
    "new_key_message",
    "parse_public_key",
    "refresh_message",
    "verify_signature",
]

log = logging.getLogger(__name__)

KEY_NAME = "device_key.pem"
NEXT_KEY_NAME = "device_key.next.pem"  # a move to a new key the hub has not confirmed yet
_REFRESH_TAG = b"leanloop-refresh/1"
_NEW_KEY_TAG = b"leanloop-new-key/1"
_MAX_KEY_FILE = 4096


def refresh_message(device_id: str, challenge: str, new_public_key: str | None) -> bytes:
    """The bytes a device signs to answer ``challenge`` (optionally moving to a new key)."""
    return b"\n".join(
        [_REFRESH_TAG, device_id.encode(), challenge.encode(), (new_public_key or "").encode()]
    )


def new_key_message(device_id: str, challenge: str, new_public_key: str) -> bytes:
    """The bytes the *new* key signs when a device moves to it (proof that it holds it)."""
    return b"\n".join(
        [_NEW_KEY_TAG, device_id.encode(), challenge.encode(), new_public_key.encode()]
    )


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key from its wire form. Raises ValueError."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError("public key is not base64") from e
    if len(raw) != 32:
        raise ValueError("an ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(public_key: str, message: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64) is ``public_key``'s signature of ``message``."""
    try:
        key = parse_public_key(public_key)
        sig = base64.b64decode(signature.encode("ascii"), validate=True)
        key.verify(sig, message)
    except (ValueError, binascii.Error, UnicodeEncodeError, InvalidSignature):
        return False
    return True


class DeviceKey:
    """The device's private key (see the module story)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, state_dir: Path) -> DeviceKey:
        """The key in ``<state_dir>/device_key.pem``, made (0600, atomically) if absent.

        Raises ConfigError if the file exists but is not an ed25519 private key: a device must
        not quietly become someone new (an admin resets it on the hub if the key is lost).
        """
        path = Path(state_dir) / KEY_NAME
        try:
            return cls.load(path)
        except FileNotFoundError:
            key = cls.generate()
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, key.private_pem(), mode=0o600)
            log.info("created device key %s (public %s)", path, key.public_b64)
            return key

    @classmethod
    def load(cls, path: Path) -> DeviceKey:
        """The key in ``path``. Raises FileNotFoundError, or ConfigError if it is not an
        ed25519 private key."""
        try:
            data = read_bounded(path, _MAX_KEY_FILE)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: cannot read the device key: {e}") from e
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{path}: not a PEM private key") from e
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError(f"{path}: not an ed25519 key")
        return cls(private)

    def private_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_b64(self) -> str:
        raw = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode()

    def sign(self, message: bytes) -> str:
        """Base64 of the signature of ``message``."""
        return base64.b64encode(self._private.sign(message)).decode()


class KeyFiles:
    """The device's key files: the current key and, while a move is under way, the next one.

    The order of a move (each step survives SIGKILL): :meth:`make_next` writes the new key
    (0600, atomically) beside the current one; the hub swaps keys; :meth:`promote` renames it
    over the current key. :meth:`candidates` is what a device tries when the hub refuses its
    key: the current key, then the next one (the hub may have swapped before the rename).
    """

    def __init__(self, state_dir: Path) -> None:
        self.current_path = Path(state_dir) / KEY_NAME
        self.next_path = Path(state_dir) / NEXT_KEY_NAME

    def current(self) -> DeviceKey:
        """The current key. Raises FileNotFoundError (none yet) or ConfigError."""
        return DeviceKey.load(self.current_path)

    def next(self) -> DeviceKey | None:
        """The key of an unconfirmed move, if any. Raises ConfigError."""
        try:
            return DeviceKey.load(self.next_path)
        except FileNotFoundError:
            return None

    def candidates(self) -> list[DeviceKey]:
        """The keys the hub may know this device by, current first (unreadable ones left out)."""
        found = []
        for load in (self.current, self.next):
            try:
                key = load()
            except (FileNotFoundError, ConfigError) as e:
                log.debug("device key not usable: %s", e)
                continue
            if key is not None:
                found.append(key)
        return found

    def make_next(self) -> DeviceKey:
        """A fresh key, stored as the next key (replacing an unconfirmed one)."""
        key = DeviceKey.generate()
        atomic_write_bytes(self.next_path, key.private_pem(), mode=0o600)
        return key

    def promote(self, key: DeviceKey) -> None:
        """The hub knows the device by ``key``: make it the current key, if it is the next one."""
        nxt = self.next()
        if nxt is None or nxt.public_b64 != key.public_b64:
            return
        os.replace(self.next_path, self.current_path)
        fsync_dir(self.current_path.parent)
        log.info("device key %s is now %s", self.current_path, key.public_b64)

    def discard_next(self) -> None:
        """Forget an unconfirmed next key (the hub refused the move)."""
        with contextlib.suppress(FileNotFoundError):
            self.next_path.unlink()
