"""Datasets imported into the hub, by name and version (each import is a new, immutable version).

``datasets`` holds one row per version (task, classes, ontology, per-class counts, the format it
came in); ``dataset_items`` one row per image: its path (the item's id inside the dataset), the
image blob, its size and its annotation (``{"label": …}`` or ``{"boxes": [[x1, y1, x2, y2,
class], …]}``). A version is written in one transaction: a failed import leaves nothing.
Plain SQL (no SQLite-only syntax) so the PostgreSQL backend runs it as is.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from hub.errors import NotFound
from hub.storage._db import DBBase


@dataclass(frozen=True)
class DatasetVersion:
    """One stored version of a dataset."""

    name: str
    version: int
    task: str
    classes: list[str]
    ontology_id: str | None
    ontology_version: int
    counts: dict[str, int]
    items: int
    source_format: str
    created: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "classes": self.classes,
            "ontology": {"id": self.ontology_id, "version": self.ontology_version},
            "counts": self.counts,
            "items": self.items,
            "source_format": self.source_format,
            "created": self.created,
        }


@dataclass(frozen=True)
class DatasetItemRow:
    path: str
    image_sha256: str
    width: int
    height: int
    annotation: dict[str, Any]


class DatasetTables(DBBase):
    """Rows of ``datasets`` and ``dataset_items``."""

    # Tables: migrations/0005_datasets_ontologies.sql

    def add_dataset_version(
        self,
        name: str,
        task: str,
        classes: list[str],
        ontology: tuple[str | None, int],
        counts: dict[str, int],
        source_format: str,
        items: list[DatasetItemRow],
    ) -> int:
        """Store a new version of dataset ``name`` (1 for a new name) with all its items, in
        one transaction; return the version number."""
        with self._transaction():
            row = self._db.execute(
                "SELECT MAX(version) AS v FROM datasets WHERE name = ?", (name,)
            ).fetchone()
            version = (row["v"] or 0) + 1
            self._db.execute(
                "INSERT INTO datasets (name, version, task, classes_json, ontology_id,"
                " ontology_version, counts_json, items, source_format, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    version,
                    task,
                    json.dumps(classes),
                    ontology[0],
                    ontology[1],
                    json.dumps(counts),
                    len(items),
                    source_format,
                    time.time(),
                ),
            )
            for i in items:
                self._db.execute(
                    "INSERT INTO dataset_items (dataset, version, path, image_sha256, width,"
                    " height, annotation_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, version, i.path, i.image_sha256, i.width, i.height,
                     json.dumps(i.annotation)),
                )  # fmt: skip
        return version

    def _dataset_version(self, r: Any) -> DatasetVersion:
        return DatasetVersion(
            name=r["name"],
            version=r["version"],
            task=r["task"],
            classes=json.loads(r["classes_json"]),
            ontology_id=r["ontology_id"],
            ontology_version=r["ontology_version"],
            counts=json.loads(r["counts_json"]),
            items=r["items"],
            source_format=r["source_format"],
            created=r["created"],
        )

    def dataset_versions(self, name: str | None = None) -> list[DatasetVersion]:
        """Every stored version (of one dataset, or of all), by name then version."""
        sql, args = "SELECT * FROM datasets", []
        if name is not None:
            sql, args = sql + " WHERE name = ?", [name]
        rows = self._db.execute(sql + " ORDER BY name, version", args).fetchall()
        return [self._dataset_version(r) for r in rows]

    def dataset_version(self, name: str, version: int | None = None) -> DatasetVersion:
        """One version (None: the latest). Raises NotFound."""
        if version is None:
            row = self._db.execute(
                "SELECT * FROM datasets WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
            ).fetchone()
        else:
            row = self._db.execute(
                "SELECT * FROM datasets WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
        if row is None:
            which = "any version" if version is None else f"version {version}"
            raise NotFound(f"no dataset {name!r} ({which})")
        return self._dataset_version(row)

    def dataset_items(self, name: str, version: int) -> list[DatasetItemRow]:
        """The items of one version, by path."""
        rows = self._db.execute(
            "SELECT * FROM dataset_items WHERE dataset = ? AND version = ? ORDER BY path",
            (name, version),
        )
        return [
            DatasetItemRow(
                r["path"], r["image_sha256"], r["width"], r["height"],
                json.loads(r["annotation_json"]),
            )
            for r in rows
        ]  # fmt: skip
