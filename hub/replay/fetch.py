"""Bring a replay's inputs to a local folder: history frames and images, bundle versions.

Everything is content-checked (a file is kept only when its sha256 is the one asked for) and
resumable: what is already there with the right hash is not fetched again, so an interrupted
download goes on where it stopped.

- :func:`download_history` — ``GET /admin/history`` and each image, into a history folder;
- :func:`download_bundle` — a published bundle version, from the signed targets (the manifest
  target first, then every file it lists), into a bundle folder the runner loads;
- :func:`bundle_from_hub_store` — the same from inside the hub (its TUF targets and blobs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.replay.frames import HistoryFrame
from hub.replay.history import IMAGES_NAME, write_history
from runtime._atomic import atomic_write_bytes
from runtime.bundle.manifest import MANIFEST_NAME, Manifest, check_relative_path
from runtime.errors import BundleError, HubError

__all__ = ["bundle_from_blobs", "bundle_from_hub_store", "download_bundle", "download_history"]

Fetch = Callable[[str], bytes]  # sha256 -> bytes


def _have(path: Path, sha256: str) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    except OSError:
        return False


def _get(path: Path, sha256: str, fetch: Fetch, what: str) -> bytes:
    if _have(path, sha256):
        return path.read_bytes()
    data = fetch(sha256)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise HubError(f"{what}: the hub sent bytes that do not hash to {sha256}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return data


def download_history(
    client: Any,
    folder: Path,
    bundle: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[HistoryFrame]:
    """The hub's history into ``folder`` (images that are missing on the hub stay missing)."""
    frames = [HistoryFrame.from_dict(d) for d in client.history(bundle)]
    images = folder / IMAGES_NAME
    images.mkdir(parents=True, exist_ok=True)
    for f in frames:
        if f.image_sha256:
            try:
                _get(images / f.image_sha256, f.image_sha256, client.history_image, f"frame {f.id}")
            except HubError as e:
                if getattr(e, "http_status", None) != 404:
                    raise
        if progress:
            progress(1)
    write_history(folder, frames)
    return frames


def _signed_targets(targets: dict[str, Any], name: str, version: int) -> dict[str, str]:
    prefix = f"{name}/{version}/"
    return {
        p[len(prefix) :]: t["hashes"]["sha256"]
        for p, t in targets.items()
        if p.startswith(prefix) and not p.endswith(".lldelta")
    }


def _write_bundle(dest: Path, files: dict[str, str], fetch: Callable[[str, str], bytes]) -> Path:
    """Fetch the manifest, then every file it lists, each checked against the signed hash."""
    if MANIFEST_NAME not in files:
        raise BundleError(f"{dest.name}: no signed manifest for this bundle version")
    raw = _get(dest / MANIFEST_NAME, files[MANIFEST_NAME],
               lambda sha: fetch(MANIFEST_NAME, sha), MANIFEST_NAME)  # fmt: skip
    manifest = Manifest.model_validate_json(raw)
    for rel, entry in manifest.files.items():
        check_relative_path(rel)
        if files.get(rel) != entry.sha256:
            raise BundleError(f"{rel}: not a signed target with the manifest's hash")
        _get(dest / rel, entry.sha256, lambda sha, r=rel: fetch(r, sha), rel)  # type: ignore[misc]
    return dest


def download_bundle(client: Any, name: str, version: int, dest: Path) -> Path:
    """A published bundle version from the hub's signed targets into ``dest``."""
    import json

    raw = client.current_targets()
    if raw is None:
        raise BundleError("the hub has published nothing yet")
    targets = json.loads(raw)["signed"]["targets"]
    files = _signed_targets(targets, name, version)
    if not files:
        raise BundleError(f"{name} version {version} is not published on the hub")

    def fetch(rel: str, sha: str) -> bytes:
        d, _, base = f"{name}/{version}/{rel}".rpartition("/")
        return bytes(client.target_file(f"{d}/{sha}.{base}"))

    return _write_bundle(dest, files, fetch)


def bundle_from_hub_store(repo: Any, blobs: Any, name: str, version: int, dest: Path) -> Path:
    """A published bundle version from inside the hub (TUF targets + blob store)."""
    paths = {p: {"hashes": {"sha256": sha}} for p, (sha, _) in repo.target_paths().items()}
    files = _signed_targets(paths, name, version)
    if not files:
        raise BundleError(f"{name} version {version} is not published")
    return _write_bundle(dest, files, lambda _rel, sha: bytes(blobs.read(sha)))


def bundle_from_blobs(blobs: Any, manifest_sha256: str, dest: Path) -> Path:
    """A bundle uploaded as blobs (not published) by its manifest's sha256, into ``dest``."""
    raw = _get(dest / MANIFEST_NAME, manifest_sha256, blobs.read, MANIFEST_NAME)
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValueError as e:
        raise BundleError(f"blob {manifest_sha256[:12]} is not a bundle manifest") from e
    files = {rel: e.sha256 for rel, e in manifest.files.items()}
    files[MANIFEST_NAME] = manifest_sha256
    return _write_bundle(dest, files, lambda _rel, sha: bytes(blobs.read(sha)))
