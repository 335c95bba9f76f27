"""Publishing a built bundle from the admin's side: blobs, deltas, signed targets.

Publishing is the one admin flow with logic on the client's side, because the targets key never
leaves the admin (:meth:`hub.client.HubAdminClient.publish_bundle` calls :func:`publish_bundle`):

1. read ``manifest.json`` and check every file it lists against its sha256 and size;
2. upload every file and the manifest as blobs (``PUT /admin/blobs/{sha256}``);
3. fetch the hub's current targets; for each file that changed since one of the 2 most recent
   earlier published versions of the bundle, download that base from the hub, make a patch
   (:func:`bsdiff.make_patch`) and, if it is under 90% of the file, upload it as the extra
   target ``<name>/<version>/<path>.from-<base sha256[:16]>.lldelta`` whose signed ``custom``
   names ``delta_of``, ``base_sha256`` and ``result_sha256`` (:func:`delta_bases`);
4. verify the current targets and sign version + 1 with one target per file
   ``<name>/<version>/<path>``, each delta, and ``<name>/<version>/manifest.json``
   (:func:`hub.signing.sign_targets`);
5. post it (``POST /admin/targets``).

:func:`push_root` uploads the root versions made by ``leanloop keys rotate-root``
(``POST /admin/tuf/root``), with the current targets re-signed if the targets key changed and
the online keys of the keys folder (the hub takes them only if the root names them).

The HTTP calls are :class:`~hub.client.HubAdminClient`'s; errors are its
:class:`~runtime.errors.HubError` subclasses, plus BundleError, TrustError and ConfigError
as each function says.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bsdiff
from hub.errors import HubUnavailable, NotFound
from hub.signing import KEY_FILES, TargetAddition, load_root, resign_targets, sign_targets
from runtime.bundle.manifest import MANIFEST_NAME, Manifest
from runtime.errors import BundleError, ConfigError, HubError
from runtime.trust import delta_target_name

if TYPE_CHECKING:
    from hub.client import HubAdminClient

__all__ = [
    "DELTA_BASE_VERSIONS",
    "DELTA_MAX_RATIO",
    "delta_bases",
    "make_deltas",
    "publish_bundle",
    "push_root",
    "read_checked_bundle",
    "running_versions",
]

log = logging.getLogger("leanloop.hub.client")

DELTA_BASE_VERSIONS = 2
"""Deltas are made from this many of the most recent earlier versions of a bundle, plus every
earlier version a device of the hub serves now."""
DELTA_MAX_RATIO = 0.9
"""A delta is published only if it is smaller than this fraction of the full file."""


def delta_bases(
    targets: Mapping[str, Any],
    manifest: Manifest,
    keep: int = DELTA_BASE_VERSIONS,
    running: Iterable[int] = (),
) -> dict[str, list[tuple[str, str]]]:
    """Bases to make deltas from: bundle path → [(base target path, base sha256)], newest first.

    ``targets`` is the ``signed.targets`` mapping of targets metadata (JSON form). Bases are the
    same path in the published versions (those with a manifest target) below
    ``manifest.version`` that devices run now (``running``, from their heartbeats) plus the
    ``keep`` most recent ones (for devices that were offline), with a sha256 other than the new
    file's; each hash once.
    """
    prefix = f"{manifest.name}/"
    versions: dict[int, dict[str, str]] = {}
    for path, info in targets.items():
        vtext, sep, rel = path.removeprefix(prefix).partition("/")
        if not path.startswith(prefix) or not sep or not vtext.isdigit():
            continue
        if int(vtext) < manifest.version:
            sha = (info.get("hashes") or {}).get("sha256") if isinstance(info, dict) else None
            if isinstance(sha, str):
                versions.setdefault(int(vtext), {})[rel] = sha
    published = sorted((v for v, files in versions.items() if MANIFEST_NAME in files), reverse=True)
    wanted = set(published[:keep]) | (set(running) & set(published))
    out: dict[str, list[tuple[str, str]]] = {}
    for rel, entry in manifest.files.items():
        for v in sorted(wanted, reverse=True):
            sha = versions[v].get(rel)
            if sha is None or sha == entry.sha256 or any(sha == s for _, s in out.get(rel, [])):
                continue
            out.setdefault(rel, []).append((f"{manifest.name}/{v}/{rel}", sha))
    return out


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _read_manifest(bundle_dir: Path) -> tuple[bytes, Manifest]:
    try:
        manifest_bytes = (bundle_dir / MANIFEST_NAME).read_bytes()
        return manifest_bytes, Manifest.model_validate_json(manifest_bytes)
    except (OSError, ValueError) as e:
        raise BundleError(f"{bundle_dir}/{MANIFEST_NAME} is not a valid manifest: {e}") from e


def read_checked_bundle(bundle_dir: Path) -> tuple[bytes, Manifest]:
    """``manifest.json`` of a built bundle folder (its bytes and model), once every file it
    lists was read and matches its sha256 and size. Raises BundleError naming the first that
    does not (or an invalid manifest). Sends nothing."""
    bundle_dir = Path(bundle_dir)
    manifest_bytes, manifest = _read_manifest(bundle_dir)
    for rel, entry in manifest.files.items():
        path = bundle_dir / rel
        try:
            got = _sha256_file(path)
        except OSError as e:
            raise BundleError(f"bundle file {path} cannot be read: {e}") from e
        if got != (entry.sha256, entry.size):
            raise BundleError(f"bundle file {path} does not match its manifest entry")
    return manifest_bytes, manifest


def publish_bundle(
    client: HubAdminClient,
    bundle_dir: Path,
    keys_dir: Path,
    expires_days: int = 365,
    force_reason: str | None = None,
    who: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Upload a built bundle folder and sign it into the hub's targets; return that version.

    A hub that requires blessings refuses (Conflict) a bundle without one unless
    ``force_reason`` is given. ``on_progress(sent, total)`` follows the upload of the
    bundle's files and manifest (deltas, made afterwards, are not counted).

    Raises BundleError (manifest invalid, a file missing or not matching it), TrustError
    (the hub's current targets are not signed by our targets key), HubError subclasses.
    """
    bundle_dir = Path(bundle_dir)
    manifest_bytes, manifest = _read_manifest(bundle_dir)
    additions: dict[str, TargetAddition] = {}
    total = sum(e.size for e in manifest.files.values()) + len(manifest_bytes)
    done = 0

    def sent(n: int) -> None:
        if on_progress is not None:
            on_progress(done + n, total)

    for rel, entry in manifest.files.items():
        path = bundle_dir / rel
        try:
            sha256, size = _sha256_file(path)
        except OSError as e:
            raise BundleError(f"bundle file {path} cannot be read: {e}") from e
        if (sha256, size) != (entry.sha256, entry.size):
            raise BundleError(f"bundle file {path} does not match its manifest entry")
        client.put_blob(path.read_bytes(), sent)
        done += size
        additions[manifest.target_name(rel)] = (sha256, size, None)
    client.put_blob(manifest_bytes, sent)
    additions[manifest.target_name(MANIFEST_NAME)] = (
        hashlib.sha256(manifest_bytes).hexdigest(),
        len(manifest_bytes),
        {"bundle": manifest.name, "version": manifest.version},
    )
    current = client.current_targets()
    if current is not None:
        additions.update(make_deltas(client, bundle_dir, manifest, current))
    signed = sign_targets(current, additions, keys_dir, expires_days)
    return client.post_targets(signed, force_reason, who)


def running_versions(client: HubAdminClient, bundle: str) -> set[int]:
    """Versions of ``bundle`` the hub's devices serve now (their last heartbeat); empty if
    the hub cannot say (deltas then come from the most recent versions only)."""
    try:
        devices = client.devices()
    except HubError as e:
        log.warning("publish: cannot list devices for delta bases: %s", e)
        return set()
    out: set[int] = set()
    for d in devices:
        active = (d.get("status") or {}).get("active") or {}
        if active.get("bundle") == bundle and isinstance(active.get("version"), int):
            out.add(active["version"])
    return out


def make_deltas(
    client: HubAdminClient, bundle_dir: Path, manifest: Manifest, current: bytes
) -> dict[str, TargetAddition]:
    """Upload patches from earlier versions' files (:func:`delta_bases`); their targets.

    A base that cannot be fetched or hashes wrong, or a patch that fails or is too big, is
    skipped: deltas are an optimisation, the full file is always a target too.
    """
    try:
        targets = json.loads(current)["signed"]["targets"]
        if not isinstance(targets, dict):
            return {}
    except (ValueError, KeyError, TypeError):
        return {}  # sign_targets reports malformed metadata
    out: dict[str, TargetAddition] = {}
    bases_of = delta_bases(targets, manifest, running=running_versions(client, manifest.name))
    for rel, bases in bases_of.items():
        entry = manifest.files[rel]
        new = (bundle_dir / rel).read_bytes()
        for base_target, base_sha in bases:
            dirname, _, filename = base_target.rpartition("/")
            try:
                old = client.target_file(f"{dirname}/{base_sha}.{filename}")
            except (NotFound, HubUnavailable):
                continue
            if hashlib.sha256(old).hexdigest() != base_sha:
                continue
            try:
                patch = bsdiff.make_patch(old, new)
            except bsdiff.DeltaError:
                continue
            if len(patch) >= DELTA_MAX_RATIO * entry.size:
                continue
            client.put_blob(patch)
            custom = {
                "leanloop": {
                    "delta_of": rel,
                    "base_sha256": base_sha,
                    "result_sha256": entry.sha256,
                }
            }
            out[delta_target_name(manifest.target_name(rel), base_sha)] = (
                hashlib.sha256(patch).hexdigest(),
                len(patch),
                custom,
            )
    return out


def push_root(client: HubAdminClient, keys_dir: Path, expires_days: int = 365) -> int:
    """Upload every root version of ``<keys_dir>/roots`` up to ``root.json`` (versions the
    hub has are no-ops); the newest goes with the re-signed targets if the targets key
    changed, and with the online keys of ``<keys_dir>/online``. Returns the hub's root
    version.

    Raises ConfigError (keys folder incomplete), TrustError (the hub's targets are signed
    by neither the new nor the previous targets key), HubError subclasses.
    """
    keys_dir = Path(keys_dir)
    newest = load_root(keys_dir).signed.version
    version = 1
    for v in range(2, newest + 1):
        path = keys_dir / "roots" / f"{v}.root.json"
        try:
            root = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"{path} cannot be read: {e}") from e
        fields: dict[str, tuple[str, bytes, str]] = {
            "root": ("root.json", root, "application/json")
        }
        if v == newest:
            current = client.current_targets()
            if current is not None:
                targets = resign_targets(current, keys_dir, expires_days)
                if targets != current:
                    fields["targets"] = ("targets.json", targets, "application/json")
            for role in ("snapshot", "timestamp"):
                key = keys_dir / KEY_FILES[role]
                if key.exists():
                    fields[f"{role}.key"] = (
                        key.name,
                        key.read_bytes(),
                        "application/x-pem-file",
                    )
        version = client.post_root(fields)
    return version
