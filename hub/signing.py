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

``rotate_root`` (``leanloop keys rotate-root``) replaces keys without touching devices: it
writes root version N+1 naming new keys for the roles asked (``root``, ``targets``,
``snapshot``, ``timestamp``) and signs it with the old root key(s) meeting the old root's
threshold *and* the new ones meeting the new threshold (TUF spec 5.3.4), so a device that
trusts version N walks to N+1 on its next refresh and from then on refuses anything signed by a
replaced key. Every root version is kept as ``<out>/roots/<N>.root.json`` (the hub serves them
all, so a device pinned to version 1 walks the whole chain); the replaced private keys are moved
to ``<out>/retired/v<N>/`` (delete them once the hub has taken the new root). When the targets
key changes, :func:`resign_targets` re-signs the hub's current targets with the new key after
checking them against the *previous* root, and ``leanloop keys push-root`` uploads root,
targets and (if replaced) the new online keys in one request.
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
    "ROLES",
    "TargetAddition",
    "init_keys",
    "load_root",
    "load_signer",
    "resign_targets",
    "root_history",
    "rotate_root",
    "sign_targets",
    "utc_in",
    "verify_root_chain",
]

KEY_FILES: dict[str, str] = {
    "root": "admin/root.key",
    "targets": "admin/targets.key",
    "snapshot": "online/snapshot.key",
    "timestamp": "online/timestamp.key",
}
"""Where each role's private key lives under a keys folder (PEM, PKCS#8, mode 0600)."""

ROLES = tuple(KEY_FILES)
"""The four top-level TUF roles, in the order the spec lists them."""

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
    data = md.to_bytes(_SERIALIZER)
    atomic_write_bytes(out / "roots" / "1.root.json", data)
    atomic_write_bytes(out / "root.json", data)


def _parse_root(data: bytes, where: str) -> Metadata[Root]:
    try:
        return Metadata[Root].from_bytes(data)
    except DeserializationError as e:
        raise TrustError(f"{where} is not valid root metadata: {e}") from e


def load_root(keys_dir: Path) -> Metadata[Root]:
    """The admin's current root (``<keys_dir>/root.json``).

    Raises ConfigError if it is missing, TrustError if it is not root metadata.
    """
    path = Path(keys_dir) / "root.json"
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(f"{path} not found; run `leanloop keys init`") from e
    return _parse_root(data, str(path))


def root_history(keys_dir: Path, version: int) -> Metadata[Root]:
    """Root version ``version`` as the admin signed it (``<keys_dir>/roots/<v>.root.json``).

    Raises ConfigError if that version is not kept there.
    """
    path = Path(keys_dir) / "roots" / f"{version}.root.json"
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(f"{path} not found: the keys folder has no root version {version}") from e
    return _parse_root(data, str(path))


def verify_root_chain(previous: Root | None, new: Metadata[Root]) -> None:
    """Check that ``new`` may follow ``previous``: version + 1, and signed by a threshold of
    ``previous``'s root keys *and* a threshold of its own (the TUF client's rule). With
    ``previous`` None, ``new`` must be a self-signed version 1.

    Raises TrustError with which half is missing.
    """
    if previous is None and new.signed.version != 1:
        raise TrustError(f"root version {new.signed.version} has no previous root to chain from")
    try:
        result = new.signed.get_root_verification_result(previous, new.signed_bytes, new.signatures)
    except ValueError as e:
        raise TrustError(f"root version {new.signed.version}: {e}") from e
    before = previous.version if previous is not None else new.signed.version
    if not result.first.verified:
        raise TrustError(
            f"root version {new.signed.version} is not signed by a threshold of the root keys of "
            f"version {before} ({len(result.first.signed)} of {result.first.threshold})"
        )
    if not result.second.verified:
        raise TrustError(
            f"root version {new.signed.version} is not signed by a threshold of its own root "
            f"keys ({len(result.second.signed)} of {result.second.threshold})"
        )


def rotate_root(
    keys_dir: Path,
    replace: set[str] | frozenset[str],
    expires_days: int = 365,
    now: datetime | None = None,
) -> Metadata[Root]:
    """Write root version N+1 in which each role of ``replace`` has a fresh ed25519 key.

    The old key of a replaced role is revoked (removed from the root); the new root is signed
    by the current root key and, if the root key itself is replaced, by the new one too. Files:
    the replaced private keys move to ``retired/v<N>/``, the new keys take their place, then
    ``roots/<N+1>.root.json`` and ``root.json`` are written (root last, so a crash before it
    leaves version N in charge and the new keys unused). An empty ``replace`` only renews the
    root's expiry. Returns the new root.

    Raises ConfigError (unknown role, missing key or root file), TrustError (the local root key
    is not the one root.json names).
    """
    out = Path(keys_dir)
    unknown = set(replace) - set(ROLES)
    if unknown:
        raise ConfigError(f"unknown role(s) {sorted(unknown)}; roles are {', '.join(ROLES)}")
    current = load_root(out)
    old_version = current.signed.version
    old_root_signer = load_signer(out / KEY_FILES["root"])
    if old_root_signer.public_key.keyid not in current.signed.roles[Root.type].keyids:
        raise TrustError(f"{out}/{KEY_FILES['root']} is not a root key of {out}/root.json")
    if not (out / "roots" / f"{old_version}.root.json").exists():
        # A keys folder from before root history was kept: record the version being replaced.
        atomic_write_bytes(
            out / "roots" / f"{old_version}.root.json", current.to_bytes(_SERIALIZER)
        )

    new = Metadata[Root].from_bytes(current.to_bytes(_SERIALIZER))
    new.signed.version = old_version + 1
    new.signed.expires = utc_in(timedelta(days=expires_days), now)
    fresh = {role: CryptoSigner.generate_ed25519() for role in ROLES if role in replace}
    for role, signer in fresh.items():
        for keyid in list(new.signed.roles[role].keyids):
            new.signed.revoke_key(keyid, role)
        new.signed.add_key(signer.public_key, role)
    new.signatures.clear()
    new.sign(old_root_signer, append=True)
    if "root" in fresh:
        new.sign(fresh["root"], append=True)
    verify_root_chain(current.signed, new)  # our own output must pass the device's check

    retired = out / "retired" / f"v{old_version}"
    for role, signer in fresh.items():
        path = out / KEY_FILES[role]
        if path.exists():
            atomic_write_bytes(retired / f"{role}.key", path.read_bytes(), mode=0o600)
            os.chmod(retired, 0o700)
        atomic_write_bytes(path, signer.private_bytes, mode=0o600)
    data = new.to_bytes(_SERIALIZER)
    atomic_write_bytes(out / "roots" / f"{new.signed.version}.root.json", data)
    atomic_write_bytes(out / "root.json", data)
    return new


def resign_targets(current_targets_json: bytes, keys_dir: Path, expires_days: int = 365) -> bytes:
    """Re-sign the hub's current targets (same targets, version + 1) for the admin's new root.

    Needed after a rotation that replaced the targets key: devices on the new root refuse
    targets signed by the revoked key. The current targets must verify against the new root
    already (then they are returned unchanged) or against the *previous* root version kept in
    ``roots/``, so a compromised hub cannot get its own targets signed this way.

    Raises TrustError (signed by neither), ConfigError (missing key or root history).
    """
    root_md = load_root(keys_dir)
    try:
        md = Metadata[Targets].from_bytes(current_targets_json)
    except DeserializationError as e:
        raise TrustError(f"the hub's current targets metadata is malformed: {e}") from e
    try:
        root_md.signed.verify_delegate(Targets.type, md.signed_bytes, md.signatures)
        return current_targets_json
    except UnsignedMetadataError:
        pass
    previous = root_history(keys_dir, root_md.signed.version - 1)
    try:
        previous.signed.verify_delegate(Targets.type, md.signed_bytes, md.signatures)
    except UnsignedMetadataError as e:
        raise TrustError(
            "the hub's current targets are signed by neither the current nor the previous "
            f"targets key: {e}"
        ) from e
    signer = load_signer(Path(keys_dir) / KEY_FILES["targets"])
    if signer.public_key.keyid not in root_md.signed.roles[Targets.type].keyids:
        raise TrustError(f"{keys_dir}/{KEY_FILES['targets']} is not a targets key of root.json")
    md.signed.version += 1
    md.signed.expires = utc_in(timedelta(days=expires_days))
    md.sign(signer)
    return md.to_bytes(_SERIALIZER)


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
    root_md = load_root(keys_dir)
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
