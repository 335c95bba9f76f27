"""Bundle versions that became current targets, with their manifests."""

from __future__ import annotations

import json
import time
from typing import Any

from hub.storage._db import DBBase


class BundleTables(DBBase):
    """Rows of ``bundles``."""

    # -- bundles -------------------------------------------------------------------------------

    def add_bundle(self, name: str, version: int, manifest: dict[str, Any]) -> None:
        """Record a bundle version that became a current target (again: no-op)."""
        self._db.execute(
            "INSERT INTO bundles (name, version, manifest_json, published) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(name, version) DO NOTHING",
            (name, version, json.dumps(manifest), time.time()),
        )

    def has_bundle(self, name: str, version: int) -> bool:
        """True if this bundle version was published."""
        return (
            self._db.execute(
                "SELECT 1 FROM bundles WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
            is not None
        )

    def bundles(self) -> list[tuple[str, int, dict[str, Any]]]:
        """Every published bundle version: (name, version, manifest)."""
        return [
            (r["name"], r["version"], json.loads(r["manifest_json"]))
            for r in self._db.execute("SELECT * FROM bundles ORDER BY name, version")
        ]
