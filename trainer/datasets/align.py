"""One training set from several datasets: refuse mixed ontology versions unless a mapping is
known, and then convert the older items to the newest version.

Training on a dataset whose items were labelled under different ontology versions would teach
the model both the old and the new meaning of a class. :func:`align_datasets` therefore:

- accepts datasets of one ontology version (same id, version and classes) as they are;
- with different versions, needs the ontology's history (each version's classes and explicit
  changes, as the hub's ``GET /admin/ontologies/{id}`` answers or a chain of ``ontology.yaml``
  files): every older item is converted through the changes; a box of a deleted class is
  dropped; a label that needs a human (a split without a rule, or a whole-image label of a
  split class) is a problem, listed with its place, and nothing is returned;
- without a history, refuses with one :class:`DatasetError` naming the versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from runtime.ontology import Chain, Change, Mapping, OntologyChangeError, apply_changes
from trainer.datasets.model import Box, Dataset, Item
from trainer.datasets.report import DatasetError, Report

__all__ = ["OntologyStep", "align_datasets"]

_CHANGES: TypeAdapter[list[Change]] = TypeAdapter(list[Change])


class OntologyStep(BaseModel):
    """One version of an ontology in its history."""

    model_config = ConfigDict(extra="ignore")

    version: int = Field(ge=1)
    classes: list[str]
    changes: list[dict[str, Any]] = Field(default_factory=list)


def _chain(history: Sequence[OntologyStep], start: int, end: int) -> Chain:
    by_version = {s.version: s for s in history}
    steps: list[Mapping] = []
    for v in range(start + 1, end + 1):
        prev, cur = by_version.get(v - 1), by_version.get(v)
        if prev is None or cur is None:
            raise DatasetError(
                f"the ontology history has no version {v - 1 if prev is None else v}"
            )
        try:
            _, m = apply_changes(prev.classes, _CHANGES.validate_python(cur.changes))
        except (OntologyChangeError, ValueError) as e:
            raise DatasetError(f"ontology version {v}: {str(e).splitlines()[0]}") from e
        steps.append(Mapping(m.old_classes, tuple(cur.classes), m.targets))
    return Chain(tuple(steps))


def _convert(item: Item, chain: Chain, where: str, report: Report) -> Item:
    if item.label is not None:
        c = chain.convert(item.label)
        if not c.ok:
            report.add(where, f"label {chain.describe(item.label)}")
            return item
        return item.model_copy(update={"label": c.label})
    boxes: list[Box] = []
    for n, b in enumerate(item.boxes):
        c = chain.convert(b.label, [b.x1, b.y1, b.x2, b.y2])
        if c.ok and c.label is not None:
            boxes.append(b.model_copy(update={"label": c.label}))
        elif c.status == "review":
            report.add(f"{where} box {n}", f"needs review: {chain.describe(b.label)}")
    return item.model_copy(update={"boxes": boxes})


def align_datasets(
    datasets: Sequence[Dataset], history: Sequence[OntologyStep] | None = None
) -> Dataset:
    """One dataset under the newest ontology version of ``datasets`` (or of ``history``, when
    given). Raises DatasetError."""
    if not datasets:
        raise DatasetError("no datasets to train on")
    tasks = {d.task for d in datasets}
    ids = {d.ontology_id for d in datasets}
    if len(tasks) > 1:
        raise DatasetError(f"datasets mix tasks: {', '.join(sorted(tasks))}")
    if len(ids) > 1:
        raise DatasetError(f"datasets mix ontologies: {', '.join(sorted(map(str, ids)))}")
    newest = max(datasets, key=lambda d: d.ontology_version)
    versions = sorted({d.ontology_version for d in datasets})
    if len(versions) > 1 and not history:
        raise DatasetError(
            f"datasets mix versions {', '.join(map(str, versions))} of ontology "
            f"{newest.ontology_id!r} and no mapping between them is given; pass the ontology "
            "history (its versions and changes) or relabel to one version"
        )
    # With a history, the target is its latest version (converting even a single dataset).
    target = max([newest.ontology_version, *(s.version for s in history or [])])
    target_classes = next((s.classes for s in history or [] if s.version == target), newest.classes)
    report = Report("training set")
    items: list[Item] = []
    seen: set[str] = set()
    for n, d in enumerate(datasets):
        if d.ontology_version == target:
            if set(d.classes) != set(target_classes):
                report.add(f"dataset {n}", "same ontology version but other classes")
            converted = list(d.items)
        else:
            chain = _chain(history or [], d.ontology_version, target)
            converted = [_convert(i, chain, f"dataset {n}: {i.path}", report) for i in d.items]
        for item in converted:
            path = item.path if item.path not in seen else f"d{n}/{item.path}"
            seen.add(path)
            items.append(item.model_copy(update={"path": path}))
    report.raise_if_any()
    classes = newest.classes if newest.ontology_version == target else target_classes
    return newest.model_copy(
        update={"items": items, "ontology_version": target, "classes": list(classes)}
    )
