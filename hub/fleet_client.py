"""The admin's client for staged rollouts and remote rollback (``leanloop rollout ...``).

A remote rollback never asks a device to install an older version: devices refuse versions that
go down (``Slots.check_version``) and TUF refuses older metadata. Instead :meth:`FleetClient.
repoint_release` publishes a *new* version of the bundle whose files are exactly those of the
earlier one (fetched back from the hub's blobs and checked against the old manifest), signed
with the admin's targets key like any release; a staged rollout of ``kind: rollback`` then
orders it. Devices install it as an ordinary update (deltas from what they run, health check,
trial) and report no failure; the hub checks that the release really carries the old files.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hub.client import HubAdminClient
from runtime.bundle.manifest import MANIFEST_NAME, Manifest, check_relative_path
from runtime.errors import BundleError

__all__ = ["FleetClient"]


class FleetClient(HubAdminClient):
    """:class:`~hub.client.HubAdminClient` plus staged rollouts."""

    def create_rollout(
        self, spec: dict[str, Any], force_reason: str | None = None, who: str | None = None
    ) -> dict[str, Any]:
        """Start a staged rollout (a :class:`hub.rollouts.RolloutSpec` as JSON); an unblessed
        version needs ``force_reason`` when the hub requires blessings (audited with ``who``)."""
        query = {k: v for k, v in (("force_reason", force_reason), ("who", who)) if v is not None}
        return dict(
            self._json("POST", "/admin/rollouts/staged", json_body=spec, query=query or None)
        )

    def rollouts(self) -> list[dict[str, Any]]:
        """Every rollout, newest first."""
        return list(self._json("GET", "/admin/rollouts"))

    def rollout_status(self, rollout_id: int) -> dict[str, Any]:
        return dict(self._json("GET", f"/admin/rollouts/{rollout_id}"))

    def rollout_action(self, rollout_id: int, action: str) -> dict[str, Any]:
        """``pause``, ``resume`` or ``abort``."""
        return dict(self._json("POST", f"/admin/rollouts/{rollout_id}/{action}"))

    def bundle_versions(self, name: str) -> list[int]:
        """Published versions of a bundle, oldest first."""
        return sorted(
            int(b["version"]) for b in self._json("GET", "/admin/bundles") if b["name"] == name
        )

    def manifest(self, name: str, version: int) -> dict[str, Any]:
        return dict(self._json("GET", f"/admin/bundles/{name}/{version}"))

    def blob(self, sha256: str) -> bytes:
        return self._request("GET", f"/admin/blobs/{sha256}")

    def repoint_release(self, name: str, to_version: int, keys_dir: Path) -> int:
        """Publish version latest+1 of ``name`` carrying the files of ``to_version``; return it.

        Raises BundleError (a file of the old version is missing or does not hash right),
        TrustError, HubError subclasses.
        """
        versions = self.bundle_versions(name)
        if to_version not in versions:
            raise BundleError(f"{name} v{to_version} was never published on this hub")
        new_version = versions[-1] + 1
        old = self.manifest(name, to_version)
        with tempfile.TemporaryDirectory(prefix="leanloop-rollback-") as tmp:
            folder = Path(tmp)
            for rel, entry in old.get("files", {}).items():
                data = self.blob(entry["sha256"])
                if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                    raise BundleError(f"{name} v{to_version}: {rel} does not hash to its manifest")
                path = folder / check_relative_path(rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            manifest = {
                **old,
                "version": new_version,
                "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            Manifest.model_validate(manifest)  # still a valid manifest
            (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
            self.publish_bundle(folder, keys_dir)
        return new_version
