"""The dataset model every format converts to and from (torch-free: the hub and the CLI use it).

A :class:`Dataset` is a task (``classification`` or ``detection``), an ordered class list, the
ontology it was labelled under, and items. An item is one image: its path relative to the
dataset's root (this is also its id: two items cannot share an image path), its size in pixels,
and either a class label (classification) or boxes ``[x1, y1, x2, y2, class]`` in pixels
(detection). Where the image bytes are right now is :attr:`Item.source` (an absolute path), so a
dataset read from disk, or held by the hub as blobs, is written out without loading it whole.

Coordinates are rounded to :data:`COORD_DIGITS` decimals when an item is made, so that a
round-trip through a normalised format (YOLO, Label Studio percentages) reads back identical.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "COORD_DIGITS",
    "Box",
    "Dataset",
    "Item",
    "Task",
    "check_image_path",
    "round_coord",
]

COORD_DIGITS = 3
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
    label: str

    @field_validator("x1", "y1", "x2", "y2")
    @classmethod
    def _round(cls, v: float) -> float:
        return round_coord(v)

    def as_list(self) -> list[float | str]:
        """``[x1, y1, x2, y2, label]``, the hub's annotation form."""
        return [self.x1, self.y1, self.x2, self.y2, self.label]

    def key(self) -> tuple[float, float, float, float, str]:
        return (self.x1, self.y1, self.x2, self.y2, self.label)


class Item(_Strict):
    """One image of a dataset and its annotation."""

    path: str = Field(description="image path relative to the dataset root; the item's id")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    label: str | None = Field(default=None, description="classification: the image's class")
    boxes: list[Box] = Field(default_factory=list, description="detection: boxes in pixels")
    source: Path | None = Field(
        default=None, exclude=True, description="where the image bytes are now (not exported)"
    )

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_image_path(v)

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


class Dataset(_Strict):
    """A labelled image set in one ontology version."""

    task: Task
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
        """Per class: images (classification) or boxes (detection)."""
        out = dict.fromkeys(self.classes, 0)
        for it in self.items:
            for lbl in [it.label] if it.label is not None else [b.label for b in it.boxes]:
                out[lbl] = out.get(lbl, 0) + 1
        return out
