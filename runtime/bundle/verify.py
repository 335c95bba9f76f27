"""Offline verification of a bundle against signed TUF metadata (``leanloop bundle verify``).

Pure checks, no network: the root is trusted as given; the targets metadata must be signed by
the root's targets role (threshold), unexpired; the manifest and every file it lists must be
targets named ``<bundle>/<version>/<path>`` with exactly the file's length and sha256, and the
folder may hold no file the manifest does not list (an unsigned file is reported, exit 1).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Targets
from tuf.api.serialization import SerializationError

from runtime._limits import MAX_METADATA_BYTES, read_bounded
from runtime.bundle.loader import file_sha256, unlisted_files, verify_bundle_dir
from runtime.bundle.manifest import MANIFEST_NAME, Manifest
from runtime.errors import TrustError

__all__ = ["check_targets", "verify_offline"]


def _load(path: Path, what: str) -> Metadata:
    try:
        return Metadata.from_bytes(read_bounded(path, MAX_METADATA_BYTES))
    except OSError as e:
        raise TrustError(f"{path}: cannot read {what}: {e.strerror}") from e
    except Exception as e:
        raise TrustError(f"{path}: not valid {what} metadata: {e}") from e


def check_targets(root_md: Metadata[Root], data: bytes, now: datetime, where: str) -> Targets:
    """The targets in ``data`` if they are targets metadata signed by a threshold of the root's
    targets keys and not expired at ``now``. Raises TrustError (one line) otherwise."""
    if len(data) > MAX_METADATA_BYTES:
        raise TrustError(f"{where}: larger than {MAX_METADATA_BYTES} bytes")
    try:
        md = Metadata.from_bytes(data)
    except Exception as e:  # python-tuf wraps every parse failure in DeserializationError
        raise TrustError(f"{where}: not valid targets metadata: {e}".splitlines()[0]) from e
    if not isinstance(md.signed, Targets):
        raise TrustError(f"{where}: is not targets metadata")
    try:
        signed_bytes = md.signed_bytes
    except SerializationError as e:  # found by fuzzing: parses, but has no canonical form
        raise TrustError(f"{where}: not valid targets metadata: no canonical form") from e
    try:
        root_md.signed.verify_delegate(Targets.type, signed_bytes, md.signatures)
    except UnsignedMetadataError as e:
        raise TrustError(f"{where}: signature does not verify against the root: {e}") from e
    try:
        expired = md.signed.is_expired(now)
    except (ValueError, OverflowError) as e:
        raise TrustError(f"{where}: bad expiry: {e}") from e
    if expired:
        raise TrustError(f"{where}: expired on {md.signed.expires:%Y-%m-%d}")
    return md.signed


def verify_offline(bundle_dir: Path, root_path: Path, targets_path: Path | None) -> Manifest:
    """Raise TrustError/BundleError with a one-line reason, or return the verified manifest."""
    bundle_dir = Path(bundle_dir)
    if targets_path is None:
        raise TrustError("no signed targets metadata given: pass --targets FILE")
    root_md = _load(Path(root_path), "root")
    if not isinstance(root_md.signed, Root):
        raise TrustError(f"{root_path}: is not root metadata")
    try:
        data = read_bounded(Path(targets_path), MAX_METADATA_BYTES)
    except OSError as e:
        raise TrustError(f"{targets_path}: cannot read targets: {e.strerror}") from e
    except ValueError as e:
        raise TrustError(str(e)) from e
    targets = check_targets(root_md, data, datetime.now(UTC), str(targets_path))
    manifest = verify_bundle_dir(bundle_dir)
    extra = unlisted_files(bundle_dir, manifest)
    if extra:
        more = f" (and {len(extra) - 5} more)" if len(extra) > 5 else ""
        raise TrustError(
            f"{bundle_dir}: files the manifest does not list: {', '.join(extra[:5])}{more}"
        )
    for rel in [MANIFEST_NAME, *manifest.files]:
        name = manifest.target_name(rel)
        tf = targets.targets.get(name)
        if tf is None:
            raise TrustError(f"{rel}: not a signed target ({name})")
        p = bundle_dir / rel
        size = p.stat().st_size
        sha = file_sha256(p)
        if tf.length != size or tf.hashes.get("sha256") != sha:
            raise TrustError(f"{rel}: does not match its signed target (size or sha256)")
    return manifest
