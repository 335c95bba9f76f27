"""The one dataset model: what every format reads and writes, the hub stores, and every training
task reads (torch-free: the hub and the CLI use it).

A :class:`Dataset` is a task (``classification`` or ``detection``), an ordered class list, the
ontology it was labelled under (``ontology_id``, ``ontology_version``), a ``name`` and a data
``version`` (what the model card names as "data version"), and items. An item is one image: its
path relative to the dataset's root (two items cannot share an image path), an ``id`` (the path
unless given), its size in pixels, and a class ``label`` (classification) or ``boxes``
``[x1, y1, x2, y2, class]`` in pixels, x2/y2 exclusive (detection). Where the image bytes are
right now is :attr:`Item.source` (an absolute path) or :attr:`Item.data` (the encoded bytes, for
a dataset made in memory), so a dataset read from disk, or held by the hub as blobs, is written
out without loading it whole. Class references are class **names**, so a dataset survives a
re-ordering of the ontology; :meth:`Dataset.class_index` gives the training index.

Coordinates are rounded to :data:`COORD_DIGITS` decimals when an item is made, so that a
round-trip through a normalised format (YOLO, Label Studio percentages) reads back identical.
:meth:`Dataset.problems` lists every inconsistency with its place; :meth:`Dataset.check` raises
:class:`DatasetError` with that list. The native folder (``dataset.json`` + images, what
``leanloop train`` reads) is :mod:`trainer.datasets.native`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainer.datasets._errors import DatasetError

__all__ = [
    "COORD_DIGITS",
    "DATASET_FILE",
    "DATASET_FORMAT",
    "Box",
    "Dataset",
    "DatasetError",
    "Item",
    "Task",
    "check_image_path",
    "round_coord",
]

COORD_DIGITS = 3
DATASET_FORMAT = "leanloop.dataset/1"
DATASET_FILE = "dataset.json"
Task = Literal["classification", "detection"]


def round_coord(v: float) -> float:
    """A coordinate as the dataset keeps it (``COORD_DIGITS`` decimals, no negative zero)."""
    return round(float(v), COORD_DIGITS) + 0.0


def check_image_path(path: str) -> str:
    """Return ``path`` if it is a plain relative POSIX path (no ``..``, not absolute)."""
    p = PurePosixPath(path)
    if not path or "\\" in path or "\x00" in path or p.is_absolute():
        raise ValueError(f"image path {path!r} must be relative")
    if any(part in ("..", ".", "") for part in p.parts):
        raise ValueError(f"image path {path!r} leaves the dataset folder")
    return path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Box(_Strict):
    """One labelled box in pixels of the image (x1 < x2, y1 < y2 once validated)."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str = Field(description="class name (one of the dataset's classes)")

    @field_validator("x1", "y1", "x2", "y2")
    @classmethod
    def _round(cls, v: float) -> float:
        return round_coord(v)

    @classmethod
    def of(cls, row: list[float | str] | tuple[float | str, ...]) -> Box:
        """From ``[x1, y1, x2, y2, class]`` (the hub's annotation row)."""
        x1, y1, x2, y2, label = row
        return cls(x1=float(x1), y1=float(y1), x2=float(x2), y2=float(y2), label=str(label))

    def as_list(self) -> list[float | str]:
        """``[x1, y1, x2, y2, label]``, the hub's annotation form."""
        return [self.x1, self.y1, self.x2, self.y2, self.label]

    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    def key(self) -> tuple[float, float, float, float, str]:
        return (self.x1, self.y1, self.x2, self.y2, self.label)


class Item(_Strict):
    """One image of a dataset and its annotation."""

    path: str = Field(description="image path relative to the dataset root")
    id: str = Field(default="", description="unique within the dataset (default: the path)")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    label: str | None = Field(default=None, description="classification: the image's class")
    boxes: list[Box] = Field(default_factory=list, description="detection: boxes in pixels")
    source: Path | None = Field(
        default=None, exclude=True, description="where the image bytes are now (not exported)"
    )
    data: bytes | None = Field(
        default=None, exclude=True, description="the encoded image, for an item made in memory"
    )

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_image_path(v)

    @model_validator(mode="after")
    def _id(self) -> Item:
        if not self.id:
            self.id = self.path
        return self

    def annotation(self) -> dict[str, object]:
        """What the hub stores as the item's annotation."""
        if self.label is not None:
            return {"label": self.label}
        return {"boxes": [b.as_list() for b in self.boxes]}

    def content(self) -> tuple[object, ...]:
        """What a round-trip must keep: path, size, label, the boxes as a sorted list."""
        return (
            self.path,
            self.width,
            self.height,
            self.label,
            tuple(sorted(b.key() for b in self.boxes)),
        )

    def load_bgr(self, root: Path | None = None) -> np.ndarray:
        """The image as ``H×W×3`` uint8 BGR: from :attr:`data`, else :attr:`source`, else
        :attr:`path` under ``root``. Raises DatasetError when it is missing or does not decode.
        """
        import cv2

        if self.data is not None:
            img = cv2.imdecode(np.frombuffer(self.data, np.uint8), cv2.IMREAD_COLOR)
            where = f"item {self.id}"
        else:
            path = self.source or (Path(self.path) if root is None else root / self.path)
            where = str(path)
            if not path.is_file():
                raise DatasetError([f"{where}: image missing (item {self.id})"])
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError([f"{where}: not a decodable image (item {self.id})"])
        return img


class Dataset(_Strict):
    """A labelled image set in one ontology version."""

    format: Literal["leanloop.dataset/1"] = "leanloop.dataset/1"
    task: Task
    name: str = Field(default="dataset", min_length=1)
    version: str = Field(default="1", description="data version (named by the model card)")
    classes: list[str] = Field(min_length=1)
    ontology_id: str | None = None
    ontology_version: int = Field(default=1, ge=1)
    items: list[Item] = Field(default_factory=list)

    def content(self) -> tuple[object, ...]:
        """Task, classes and items (by path) as a comparable value, ids and sources left out."""
        return (
            self.task,
            tuple(self.classes),
            tuple(sorted((i.content() for i in self.items), key=repr)),
        )

    def counts(self) -> dict[str, int]:
        """Per class (every class listed): image labels (classification) plus boxes
        (detection)."""
        counts: Counter[str] = Counter()
        for item in self.items:
            if item.label is not None:
                counts[item.label] += 1
            counts.update(b.label for b in item.boxes)
        out = {c: counts.get(c, 0) for c in self.classes}
        out.update({c: n for c, n in counts.items() if c not in out})
        return out

    def class_index(self, name: str) -> int:
        """Training index of a class name. Raises DatasetError for an unknown name."""
        try:
            return self.classes.index(name)
        except ValueError:
            raise DatasetError([f"class {name!r} is not one of {self.classes}"]) from None

    def problems(self) -> list[str]:
        """Every inconsistency, each with its item id: duplicate class or item ids, unknown
        classes, degenerate boxes, boxes outside the image."""
        out: list[str] = []
        dup_classes = sorted(c for c, n in Counter(self.classes).items() if n > 1)
        if dup_classes:
            out.append(f"classes listed twice: {dup_classes}")
        known = set(self.classes)
        seen: set[str] = set()
        for item in self.items:
            where = f"item {item.id}"
            if item.id in seen:
                out.append(f"{where}: duplicate id")
            seen.add(item.id)
            if item.label is not None and item.label not in known:
                out.append(f"{where}: unknown class {item.label!r}")
            for i, b in enumerate(item.boxes):
                if b.label not in known:
                    out.append(f"{where} box {i}: unknown class {b.label!r}")
                if b.x2 <= b.x1 or b.y2 <= b.y1:
                    out.append(f"{where} box {i}: empty box {list(b.xyxy())}")
                elif b.x1 < 0 or b.y1 < 0 or b.x2 > item.width or b.y2 > item.height:
                    out.append(
                        f"{where} box {i}: {list(b.xyxy())} outside the "
                        f"{item.width}×{item.height} image"
                    )
        return out

    def check(self) -> Dataset:
        """Return self, or raise DatasetError listing every problem."""
        found = self.problems()
        if found:
            raise DatasetError(found)
        return self
