"""The validation report of a dataset import: every problem, with where it is, in one list.

Readers never stop at the first bad annotation: they note each problem (a box outside its image,
a class the dataset does not declare, an image that is missing or does not decode, an id used
twice, a line that does not parse) with its location (file, line or id) and go on, so the user
fixes everything in one pass. :meth:`Report.raise_if_any` then raises one :class:`DatasetError`
that carries the whole list; nothing of a dataset with problems is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from trainer.datasets._errors import DatasetError, Problem
from trainer.datasets.model import Dataset, Item

__all__ = ["DatasetError", "Problem", "Report", "check_dataset", "image_size"]

_SHOWN_IN_MESSAGE = 3


@dataclass
class Report:
    """Problems noted while reading one dataset."""

    source: str
    problems: list[Problem] = field(default_factory=list)

    def add(self, where: str, what: str) -> None:
        self.problems.append(Problem(where, what))

    def raise_if_any(self) -> None:
        """Raise DatasetError listing every problem (the message names the first few)."""
        if not self.problems:
            return
        n = len(self.problems)
        shown = "; ".join(str(p) for p in self.problems[:_SHOWN_IN_MESSAGE])
        more = f"; and {n - _SHOWN_IN_MESSAGE} more" if n > _SHOWN_IN_MESSAGE else ""
        raise DatasetError(
            f"{self.source}: {n} problem{'s' if n != 1 else ''}, nothing imported: {shown}{more}",
            self.problems,
        )


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, decoding it fully so a corrupt file is caught.

    Raises ValueError with a short reason (missing, unreadable, not an image).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError("image file is missing") from None
    except OSError as e:
        raise ValueError(f"image file is unreadable: {e.strerror or e}") from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        raise ValueError("image does not decode (corrupt or not an image)")
    return int(img.shape[1]), int(img.shape[0])


def check_item(item: Item, task: str, classes: set[str], where: str, report: Report) -> None:
    """Note what is wrong with one item's annotation (its image is checked by the reader)."""
    if task == "classification":
        if item.label is None:
            report.add(where, "no class label")
        elif item.label not in classes:
            report.add(where, f"unknown class {item.label!r}")
        if item.boxes:
            report.add(where, "boxes in a classification dataset")
        return
    if item.label is not None:
        report.add(where, "an image-level label in a detection dataset")
    for n, b in enumerate(item.boxes):
        if b.label not in classes:
            report.add(f"{where} box {n}", f"unknown class {b.label!r}")
        if not (b.x1 < b.x2 and b.y1 < b.y2):
            report.add(f"{where} box {n}", f"empty box {b.as_list()[:4]}")
        elif b.x1 < 0 or b.y1 < 0 or b.x2 > item.width or b.y2 > item.height:
            report.add(
                f"{where} box {n}",
                f"box {b.as_list()[:4]} is outside the {item.width}x{item.height} image",
            )


def check_dataset(dataset: Dataset, report: Report) -> None:
    """Note duplicate classes and image paths, and every item's annotation problems."""
    seen_cls: set[str] = set()
    for c in dataset.classes:
        if c in seen_cls:
            report.add("classes", f"class {c!r} is listed twice")
        if not c.strip():
            report.add("classes", "an empty class name")
        seen_cls.add(c)
    seen: set[str] = set()
    for item in dataset.items:
        if item.path in seen:
            report.add(item.path, "the same image is listed twice")
        seen.add(item.path)
        check_item(item, dataset.task, seen_cls, item.path, report)
