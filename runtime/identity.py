"""A device's own identity: an ed25519 key pair made on first start, kept in the state folder.

The private key never leaves ``<state>/device_key.pem`` (PKCS#8 PEM, mode 0600, written
atomically). Its public half is registered with the hub at enrolment. From then on the device
id belongs to that key: the fleet enrolment secret cannot re-key it, and a device whose token
is no longer accepted (401) gets a new one by signing a challenge of the hub
(:func:`refresh_message`) — never by enrolling again. The hub verifies with
:func:`verify_signature`; both sides build the signed bytes with the same function.

Wire forms: a public key is the base64 of its 32 raw bytes; a signature the base64 of its
64 bytes.
"""

from __future__ import annotations

import base64
import binascii
import logging
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from runtime._atomic import atomic_write_bytes
from runtime._limits import read_bounded
from runtime.errors import ConfigError

__all__ = [
    "KEY_NAME",
    "DeviceKey",
    "parse_public_key",
    "refresh_message",
    "verify_signature",
]

log = logging.getLogger(__name__)

KEY_NAME = "device_key.pem"
_REFRESH_TAG = b"leanloop-refresh/1"
_MAX_KEY_FILE = 4096


def refresh_message(device_id: str, challenge: str, new_public_key: str | None) -> bytes:
    """The bytes a device signs to answer ``challenge`` (optionally moving to a new key)."""
    return b"\n".join(
        [_REFRESH_TAG, device_id.encode(), challenge.encode(), (new_public_key or "").encode()]
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
            data = read_bounded(path, _MAX_KEY_FILE)
        except FileNotFoundError:
            key = cls.generate()
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, key.private_pem(), mode=0o600)
            log.info("created device key %s (public %s)", path, key.public_b64)
            return key
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
