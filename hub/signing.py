"""Admin-side signing: the offline half of the hub's trust (TUF, python-tuf).

``init_keys`` is run once by the admin: it makes four ed25519 keys and the first root metadata::

    <out>/root.json             version 1, pinned by every device (bootstrap trust)
    <out>/admin/root.key        stays with the admin (offline)
    <out>/admin/targets.key     stays with the admin (offline): it decides what devices install
    <out>/online/snapshot.key   given to the hub, which re-signs snapshot on every publish
    <out>/online/timestamp.key  given to the hub, which re-signs timestamp on a timer

``sign_targets`` is run by the admin (``leanloop bundle publish``) for every publish: it takes the
hub's current targets metadata, checks it really is signed by the targets key that ``root.json``
names (so a compromised hub cannot slip extra targets into the admin's next signature), adds the
new targets and signs version + 1. The hub only ever holds the online keys; a stolen hub can
delay updates but cannot make a device install anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, TargetFile, Targets
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from hub.errors import Conflict
from runtime._atomic import atomic_write_bytes
from runtime.errors import ConfigError, TrustError

__all__ = [
    "KEY_FILES",
    "TargetAddition",
    "init_keys",
    "load_signer",
    "sign_targets",
    "utc_in",
]

KEY_FILES: dict[str, str] = {
    "root": "admin/root.key",
    "targets": "admin/targets.key",
    "snapshot": "online/snapshot.key",
    "timestamp": "online/timestamp.key",
}
"""Where each role's private key lives under a keys folder (PEM, PKCS#8, mode 0600)."""

TargetAddition = tuple[str, int, dict[str, Any] | None]
"""One new target: (sha256 hex, size in bytes, signed ``custom`` data or None)."""

_SERIALIZER = JSONSerializer(compact=False)


def utc_in(delta: timedelta, now: datetime | None = None) -> datetime:
    """``now + delta`` in UTC with whole seconds (TUF metadata has no sub-second expiry)."""
    base = now if now is not None else datetime.now(UTC)
    return (base + delta).replace(microsecond=0)


def load_signer(path: Path) -> CryptoSigner:
    """Load a PEM private key written by :func:`init_keys` as a signer.

    Raises ConfigError if the file is missing or is not an ed25519 private key.
    """
    try:
        private_key = load_pem_private_key(Path(path).read_bytes(), password=None)
        return CryptoSigner(private_key)
    except FileNotFoundError as e:
        raise ConfigError(f"signing key {path} not found; run `leanloop keys init`") from e
    except (ValueError, TypeError) as e:
        raise ConfigError(f"signing key {path} is not a usable private key: {e}") from e


def init_keys(out_dir: Path, expires_days: int = 365) -> None:
    """Create the four role keys and a version-1 ``root.json`` signed by the root key.

    Refuses (ConfigError) to overwrite an existing ``root.json``: replacing the root of trust
    would orphan every device that pinned the old one.
    """
    out = Path(out_dir)
    if (out / "root.json").exists():
        raise ConfigError(
            f"{out / 'root.json'} already exists; refusing to replace the root of trust"
        )
    signers = {role: CryptoSigner.generate_ed25519() for role in KEY_FILES}
    for role, rel in KEY_FILES.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        atomic_write_bytes(path, signers[role].private_bytes, mode=0o600)

    root = Root(expires=utc_in(timedelta(days=expires_days)), consistent_snapshot=True)
    for role, signer in signers.items():
        root.add_key(signer.public_key, role)
    md = Metadata(root)
    md.sign(signers["root"])
    atomic_write_bytes(out / "root.json", md.to_bytes(_SERIALIZER))


def _load_root(keys_dir: Path) -> Metadata[Root]:
    try:
        return Metadata[Root].from_bytes((Path(keys_dir) / "root.json").read_bytes())
    except FileNotFoundError as e:
        raise ConfigError(f"{keys_dir}/root.json not found; run `leanloop keys init`") from e
    except DeserializationError as e:
        raise TrustError(f"{keys_dir}/root.json is not valid root metadata: {e}") from e


def sign_targets(
    current_targets_json: bytes | None,
    additions: Mapping[str, TargetAddition],
    keys_dir: Path,
    expires_days: int = 365,
) -> bytes:
    """Return new targets metadata: the current targets plus ``additions``, version + 1, signed.

    ``current_targets_json`` is what the hub serves as its current targets (None before the
    first publish, which makes version 1). It is verified against ``<keys_dir>/root.json``
    before being extended. Re-adding a target with the same hash and size is a no-op; with a
    different hash it raises Conflict (a published file never changes under the same path).

    Raises TrustError (current targets not signed by the root's targets key, or the local
    targets key is not the one root names), Conflict, ConfigError (missing key files).
    """
    root_md = _load_root(keys_dir)
    signer = load_signer(Path(keys_dir) / KEY_FILES["targets"])
    if signer.public_key.keyid not in root_md.signed.roles[Targets.type].keyids:
        raise TrustError(f"{keys_dir}/{KEY_FILES['targets']} is not a targets key of root.json")

    if current_targets_json is None:
        md = Metadata(Targets(version=1))
    else:
        try:
            md = Metadata[Targets].from_bytes(current_targets_json)
            root_md.signed.verify_delegate(Targets.type, md.signed_bytes, md.signatures)
        except DeserializationError as e:
            raise TrustError(f"the hub's current targets metadata is malformed: {e}") from e
        except UnsignedMetadataError as e:
            raise TrustError(
                f"the hub's current targets metadata is not signed by the targets key: {e}"
            ) from e
        md.signed.version += 1

    for path, (sha256, size, custom) in additions.items():
        known = md.signed.targets.get(path)
        if known is not None:
            if known.hashes.get("sha256") == sha256 and known.length == size:
                continue
            raise Conflict(f"target {path} is already signed with different content")
        fields: dict[str, Any] = {"custom": custom} if custom is not None else {}
        md.signed.targets[path] = TargetFile(size, {"sha256": sha256}, path, fields)

    md.signed.expires = utc_in(timedelta(days=expires_days))
    md.sign(signer)
    return md.to_bytes(_SERIALIZER)
