"""Ontology versions, and the remap of stored samples that a change makes in the same transaction.

``ontologies`` holds one row per (id, version): the class list and the changes from the previous
version (JSON). :meth:`OntologyTables.change_ontology` writes version N+1 *and* rewrites every
sample of a bundle under that ontology (annotation, meta, feedback row; see
:func:`hub.ontology.remap_sample`) in one transaction: either the new version and all remapped
samples are stored, or nothing. Plain SQL, portable to PostgreSQL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from hub.errors import BadRequest, Conflict, NotFound
from hub.ontology import remap_sample
from hub.storage._db import DBBase, loads
from hub.storage.samples import needs_review
from runtime.ontology import (
    Chain,
    Change,
    Mapping,
    OntologyChangeError,
    apply_changes,
    old_label_fate,
)

_CHANGES: TypeAdapter[list[Change]] = TypeAdapter(list[Change])


@dataclass(frozen=True)
class OntologyVersion:
    id: str
    version: int
    classes: list[str]
    changes: list[dict[str, Any]]
    created: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "classes": self.classes,
            "changes": self.changes,
            "created": self.created,
        }


@dataclass(frozen=True)
class ChangeResult:
    """What a change did: the new version and how many samples it touched."""

    version: OntologyVersion
    remapped: int
    needs_review: list[str]  # sample ids sent back to the queue

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.version.to_dict(),
            "remapped": self.remapped,
            "needs_review": self.needs_review,
        }


class OntologyTables(DBBase):
    """Rows of ``ontologies``; the remap reads and writes ``samples`` and ``sample_feedback``."""

    # Tables: migrations/0005_datasets_ontologies.sql

    def _onto(self, r: Any) -> OntologyVersion:
        return OntologyVersion(
            r["id"], r["version"], json.loads(r["classes_json"]), json.loads(r["changes_json"]),
            r["created"],
        )  # fmt: skip

    def ontology_versions(self, onto_id: str) -> list[OntologyVersion]:
        """Every version of an ontology, oldest first (empty when unknown)."""
        rows = self._db.execute(
            "SELECT * FROM ontologies WHERE id = ? ORDER BY version", (onto_id,)
        ).fetchall()
        return [self._onto(r) for r in rows]

    def ontology(self, onto_id: str, version: int | None = None) -> OntologyVersion:
        """One version (None: the latest). Raises NotFound."""
        versions = self.ontology_versions(onto_id)
        for v in reversed(versions):
            if version is None or v.version == version:
                return v
        raise NotFound(f"no ontology {onto_id!r}" + (f" version {version}" if version else ""))

    def create_ontology(
        self, onto_id: str, classes: list[str], version: int = 1
    ) -> OntologyVersion:
        """Start an ontology at ``version`` (a hub that adopts one a bundle already uses).
        Raises Conflict when it exists, BadRequest for a repeated class."""
        if len(set(classes)) != len(classes) or not classes:
            raise BadRequest("classes must be a non-empty list of distinct names")
        with self._transaction():
            if self._db.execute("SELECT 1 FROM ontologies WHERE id = ?", (onto_id,)).fetchone():
                raise Conflict(f"ontology {onto_id!r} exists; change it with explicit changes")
            self._db.execute(
                "INSERT INTO ontologies (id, version, classes_json, changes_json, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (onto_id, version, json.dumps(classes), "[]", time.time()),
            )
        return self.ontology(onto_id, version)

    def ontology_step(self, onto_id: str, to_version: int) -> Mapping:
        """The mapping from version ``to_version - 1`` to ``to_version``. Raises NotFound."""
        prev = self.ontology(onto_id, to_version - 1)
        cur = self.ontology(onto_id, to_version)
        _, mapping = apply_changes(prev.classes, _CHANGES.validate_python(cur.changes))
        return Mapping(mapping.old_classes, tuple(cur.classes), mapping.targets)

    def ontology_chain(self, onto_id: str, from_version: int, to_version: int) -> Chain | None:
        """The mapping from one version to a later one, or None when a step is unknown."""
        try:
            steps = [
                self.ontology_step(onto_id, v) for v in range(from_version + 1, to_version + 1)
            ]
        except NotFound:
            return None
        return Chain(tuple(steps)) if steps else None

    def _ontology_bundles(self, onto_id: str) -> set[str]:
        names: set[str] = set()
        for r in self._db.execute("SELECT name, manifest_json FROM bundles"):
            onto = (json.loads(r["manifest_json"]).get("ontology") or {}).get("id")
            if onto == onto_id:
                names.add(r["name"])
        return names

    def ontology_samples(self, onto_id: str) -> list[Any]:
        """Sample rows under an ontology: of a bundle that uses it, or naming it in their meta."""
        bundles = self._ontology_bundles(onto_id)
        out = []
        for r in self._db.execute("SELECT * FROM samples ORDER BY id").fetchall():
            meta = json.loads(r["meta_json"])
            if r["bundle"] in bundles or meta.get("ontology_id") == onto_id:
                out.append(r)
        return out

    def ontology_feedback(self, sample_ids: set[str]) -> list[tuple[str, str, str, str | None]]:
        """(sample id, predicted, kind, corrected label) of the feedback on these samples."""
        rows = self._db.execute(
            "SELECT sample_id, predicted, kind, label FROM sample_feedback ORDER BY sample_id"
        )
        return [
            (r["sample_id"], r["predicted"], r["kind"], r["label"])
            for r in rows
            if r["sample_id"] in sample_ids
        ]

    def _remap_row(self, r: Any, meta: dict[str, Any], step: Chain | Mapping, version: int) -> bool:
        """Rewrite one sample row (and its feedback row) under ``version``; True when it went
        back to the queue as needs review. Call inside a transaction."""
        fb = self._db.execute(
            "SELECT * FROM sample_feedback WHERE sample_id = ?", (r["id"],)
        ).fetchone()
        change = remap_sample(
            meta,
            loads(r["annotation_json"]),
            r["state"],
            json.loads(fb["feedback_json"]) if fb else None,
            fb["predicted"] if fb else None,
            step,
            version,
        )
        meta_json = json.dumps(change.meta)
        self._db.execute(
            "UPDATE samples SET meta_json = ?, annotation_json = ?, state = ?, needs_review = ?"
            " WHERE id = ?",
            (
                meta_json,
                None if change.annotation is None else json.dumps(change.annotation),
                change.state,
                needs_review(meta_json),
                r["id"],
            ),
        )
        if fb is not None and change.feedback is None:
            self._db.execute("DELETE FROM sample_feedback WHERE sample_id = ?", (r["id"],))
        elif fb is not None and change.feedback is not None:
            self._db.execute(
                "UPDATE sample_feedback SET label = ?, predicted = ?, feedback_json = ?"
                " WHERE sample_id = ?",
                (
                    change.feedback.get("label"),
                    change.feedback_predicted or fb["predicted"],
                    json.dumps(change.feedback),
                    r["id"],
                ),
            )
        return change.needs_review

    def to_current_ontology(self, sample_id: str) -> bool:
        """Bring a sample stored under an older ontology version (a device still running an
        older bundle) to the latest version; True when it changed anything."""
        if self._db.execute("SELECT 1 FROM ontologies LIMIT 1").fetchone() is None:
            return False  # no ontology is managed on this hub
        with self._transaction():
            r = self._db.execute("SELECT * FROM samples WHERE id = ?", (sample_id,)).fetchone()
            if r is None:
                return False
            meta = json.loads(r["meta_json"])
            at = meta.get("ontology_version")
            onto_id = meta.get("ontology_id")
            if not isinstance(onto_id, str):
                b = self._db.execute(
                    "SELECT manifest_json FROM bundles WHERE name = ?"
                    " ORDER BY version DESC LIMIT 1",
                    (r["bundle"],),
                ).fetchone()
                onto = (json.loads(b["manifest_json"]).get("ontology") or {}) if b else {}
                onto_id = onto.get("id")
            if not isinstance(at, int) or not isinstance(onto_id, str):
                return False
            versions = self.ontology_versions(onto_id)
            if not versions or at >= versions[-1].version:
                return False
            chain = self.ontology_chain(onto_id, at, versions[-1].version)
            if chain is None:
                return False
            self._remap_row(r, meta, chain, versions[-1].version)
            return True

    def sample_ontology(self, sample_id: str) -> OntologyVersion | None:
        """The latest version of the ontology a sample is under (by its meta, else its
        bundle's manifest), or None when the hub manages none for it. Raises NotFound."""
        r = self._db.execute(
            "SELECT bundle, meta_json FROM samples WHERE id = ?", (sample_id,)
        ).fetchone()
        if r is None:
            raise NotFound(f"no sample {sample_id!r}")
        onto_id = json.loads(r["meta_json"]).get("ontology_id")
        if not isinstance(onto_id, str):
            b = self._db.execute(
                "SELECT manifest_json FROM bundles WHERE name = ? ORDER BY version DESC LIMIT 1",
                (r["bundle"],),
            ).fetchone()
            onto_id = ((json.loads(b["manifest_json"]).get("ontology") or {}) if b else {}).get(
                "id"
            )
        if not isinstance(onto_id, str):
            return None
        versions = self.ontology_versions(onto_id)
        return versions[-1] if versions else None

    def bundle_ontology(
        self, bundle: str
    ) -> tuple[str, int, list[str], list[dict[str, Any]]] | None:
        """The ontology a bundle's training data is labelled in: (id, version, classes,
        history) — the hub's latest version when it manages the bundle's ontology (history:
        every version as :meth:`OntologyVersion.to_dict`), else the latest published
        manifest's ontology (history empty); None when the bundle was never published."""
        b = self._db.execute(
            "SELECT manifest_json FROM bundles WHERE name = ? ORDER BY version DESC LIMIT 1",
            (bundle,),
        ).fetchone()
        onto = (json.loads(b["manifest_json"]).get("ontology") or {}) if b else {}
        onto_id = onto.get("id")
        if not isinstance(onto_id, str):
            return None
        versions = self.ontology_versions(onto_id)
        if versions:
            last = versions[-1]
            return onto_id, last.version, last.classes, [v.to_dict() for v in versions]
        return onto_id, int(onto.get("version", 1)), list(onto.get("classes") or []), []

    def current_labels(self, sample_id: str, labels: list[str]) -> list[str]:
        """Labels a human gives a sample, in its ontology's latest version: a label of the
        previous version with one successor is converted; one that was split or deleted is
        refused (BadRequest saying what became of it), as is an unknown one. Unchanged when
        the hub manages no ontology for the sample. Raises NotFound."""
        onto = self.sample_ontology(sample_id)
        if onto is None:
            return list(labels)
        changes = _CHANGES.validate_python(onto.changes)
        out = []
        for label in labels:
            if label in onto.classes:
                out.append(label)
                continue
            new, why = old_label_fate(label, changes)
            if new is not None and new in onto.classes:
                out.append(new)
                continue
            raise BadRequest(
                f"label {label!r} is not in ontology {onto.id!r} version {onto.version}"
                + (f": {why}" if why and "is not a class" not in why else "")
                + f" ({', '.join(onto.classes)})"
            )
        return out

    def change_ontology(
        self, onto_id: str, changes: Sequence[dict[str, Any]], base_version: int | None = None
    ) -> ChangeResult:
        """Apply explicit changes to the latest version (which must be ``base_version`` when
        given), store version N+1 and remap every sample under the ontology, all in one
        transaction. Raises NotFound, Conflict (base is not the latest), BadRequest (a change
        does not apply)."""
        try:
            parsed = _CHANGES.validate_python(list(changes))
        except ValueError as e:
            raise BadRequest(f"bad changes: {str(e).splitlines()[0:3]}") from e
        if not parsed:
            raise BadRequest("no changes given")
        with self._transaction():
            latest = self.ontology(onto_id)
            if base_version is not None and base_version != latest.version:
                raise Conflict(
                    f"ontology {onto_id!r} is at version {latest.version}, not {base_version}"
                )
            try:
                classes, mapping = apply_changes(latest.classes, parsed)
            except OntologyChangeError as e:
                raise BadRequest(str(e)) from e
            new_version = latest.version + 1
            self._db.execute(
                "INSERT INTO ontologies (id, version, classes_json, changes_json, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    onto_id,
                    new_version,
                    json.dumps(classes),
                    json.dumps([c.model_dump(mode="json") for c in parsed]),
                    time.time(),
                ),
            )
            remapped, review = 0, []
            for r in self.ontology_samples(onto_id):
                meta = json.loads(r["meta_json"])
                at = meta.get("ontology_version")
                step: Chain | Mapping = mapping
                if isinstance(at, int) and at >= new_version:
                    continue
                if isinstance(at, int) and at < latest.version:
                    chain = self.ontology_chain(onto_id, at, new_version)
                    if chain is None:
                        continue
                    step = chain
                if self._remap_row(r, meta, step, new_version):
                    review.append(r["id"])
                remapped += 1
        return ChangeResult(self.ontology(onto_id, new_version), remapped, review)
