"""``native``: the training tasks' own dataset folder, ``dataset.json`` (``leanloop.dataset/1``)
plus image files, so any imported format can be trained on directly::

    leanloop dataset convert coco ./coco --to native --out ./train-set   # then leanloop train

:func:`save_dataset` / :func:`load_dataset` keep a :class:`~trainer.datasets.model.Dataset` as
that folder (what the training spec names with ``dataset: {path: DIR}``): each item is
``{id, image, width, height, label, boxes}``, ``image`` relative to the folder (or absolute for
a file outside it); the task is classification when any item has a label, else detection.

As an import/export format (:func:`read_native`, :func:`write_native`), every image is also
checked (present, decodable, the size the file says), an item's path is its image path less a
leading ``images/``, and writing keeps the images under ``images/<path>``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainer.datasets._io import copy_images, sized_item
from trainer.datasets.model import DATASET_FILE, DATASET_FORMAT, Box, Dataset, Item
from trainer.datasets.report import DatasetError, Report, check_dataset

__all__ = ["load_dataset", "read_native", "save_dataset", "write_native"]


class _FileItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    image: str = Field(min_length=1)
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    label: str | None = None
    boxes: list[Box] = Field(default_factory=list)


class _File(BaseModel):
    """``dataset.json`` as it is on disk."""

    model_config = ConfigDict(extra="forbid")

    format: str = DATASET_FORMAT
    name: str = Field(default="dataset", min_length=1)
    version: str = "1"
    ontology_id: str = Field(default="default", min_length=1)
    ontology_version: int = Field(default=1, ge=1)
    classes: list[str] = Field(min_length=1)
    items: list[_FileItem] = Field(default_factory=list)


def _item(it: _FileItem) -> Item:
    image = Path(it.image)
    if image.is_absolute():  # a file outside the folder: named by its file name
        return Item(path=image.name, id=it.id, width=it.width, height=it.height,
                    label=it.label, boxes=it.boxes, source=image)  # fmt: skip
    return Item(path=image.as_posix(), id=it.id, width=it.width, height=it.height,
                label=it.label, boxes=it.boxes)  # fmt: skip


def load_dataset(path: Path) -> tuple[Dataset, Path]:
    """Read a dataset folder (or its ``dataset.json``). Returns the dataset and the folder its
    relative image paths are under. Raises DatasetError."""
    path = Path(path)
    file = path / DATASET_FILE if path.is_dir() else path
    if not file.exists():
        raise DatasetError([f"{path}: no dataset here (a folder with {DATASET_FILE})"])
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise DatasetError([f"{file}: cannot read: {e.strerror or e}"]) from e
    except ValueError as e:
        raise DatasetError([f"{file}: not JSON: {e}"]) from e
    try:
        parsed = _File.model_validate(raw)
        if parsed.format != DATASET_FORMAT:
            raise DatasetError([f"{file}: format {parsed.format!r} is not {DATASET_FORMAT!r}"])
        items = [_item(it) for it in parsed.items]
    except ValidationError as e:
        raise DatasetError(
            [f"{file}: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
        ) from e
    ds = Dataset(
        task="classification" if any(i.label is not None for i in items) else "detection",
        name=parsed.name,
        version=parsed.version,
        classes=parsed.classes,
        ontology_id=parsed.ontology_id,
        ontology_version=parsed.ontology_version,
        items=items,
    )
    return ds, file.parent


def save_dataset(dataset: Dataset, folder: Path) -> Path:
    """Write ``folder/dataset.json``, and ``folder/<path>`` for items held in memory
    (:attr:`Item.data`); an item whose image is a file (:attr:`Item.source`) is named by its
    path relative to ``folder`` when inside it, else by its absolute path. The JSON is replaced
    atomically. Returns the JSON path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    items = []
    for item in dataset.items:
        image = item.path
        if item.data is not None:
            dst = folder / item.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(item.data)
        elif item.source is not None:
            src = Path(item.source).resolve()
            image = src.relative_to(root).as_posix() if src.is_relative_to(root) else str(src)
        items.append(
            _FileItem(
                id=item.id,
                image=image,
                width=item.width,
                height=item.height,
                label=item.label,
                boxes=item.boxes,
            )
        )
    out = _File(
        name=dataset.name,
        version=dataset.version,
        ontology_id=dataset.ontology_id or "default",
        ontology_version=dataset.ontology_version,
        classes=dataset.classes,
        items=items,
    )
    body = json.dumps(out.model_dump(mode="json"), indent=1) + "\n"
    target = folder / DATASET_FILE
    fd, tmp = tempfile.mkstemp(prefix=".dataset.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_native(path: Path) -> Dataset:
    """Read a ``dataset.json`` folder as an import: every image checked. Raises DatasetError
    listing every problem."""
    report = Report(str(path))
    try:
        ds, root = load_dataset(Path(path))
    except DatasetError as e:
        raise DatasetError(f"{path}: {e}", []) from e
    items: list[Item] = []
    for it in ds.items:
        where = f"dataset.json#item {it.id}"
        if it.source is not None:
            report.add(where, "an image outside the dataset folder; copy it in")
            continue
        rel = it.path
        ann: dict[str, object] = (
            {"label": it.label} if ds.task == "classification" else {"boxes": it.boxes}
        )
        subdirs: tuple[str, ...] = ("",)
        if rel.startswith("images/"):  # as write_native lays it out
            rel, subdirs = rel[len("images/") :], ("images",)
        item = sized_item(root, rel, where, report, (it.width, it.height), subdirs, **ann)
        if item is not None:
            items.append(item)
    out = ds.model_copy(update={"items": items})
    check_dataset(out, report)
    report.raise_if_any()
    return out


def write_native(dataset: Dataset, out: Path) -> None:
    """Write ``out/dataset.json`` and ``out/images/<path>``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    copy_images(dataset, out)
    items = [
        Item(
            path=f"images/{i.path}",
            id=i.path,
            width=i.width,
            height=i.height,
            label=i.label,
            boxes=i.boxes,
        )
        for i in sorted(dataset.items, key=lambda i: i.path)
    ]
    save_dataset(dataset.model_copy(update={"items": items}), out)
