"""The in-memory dataset every training task reads and every importer/exporter writes.

One small, documented contract between the dataset formats (``trainer/datasets/``: COCO, YOLO,
Label Studio, folder-per-class), the hub's datasets, and the training tasks (``trainer/tasks/``):

* a :class:`Dataset` is a list of :class:`DatasetItem` plus the ontology it is labelled in
  (``classes``, ``ontology_id``, ``ontology_version``) and a ``version`` of the data itself
  (what the model card names as "data version");
* an item is one image — a file path or the encoded bytes (JPEG/PNG) — with its pixel
  ``width``/``height`` and either a class ``label`` (classification) or ``boxes``
  (detection: ``[x1, y1, x2, y2, class]`` in image pixels, x2/y2 exclusive), or both;
* class references are class **names** (strings of ``classes``), so a dataset survives a
  re-ordering of the ontology; :meth:`Dataset.class_index` gives the training index.

:meth:`Dataset.problems` lists every inconsistency with its location (unknown class, box outside
the image, duplicate id) so importers can report them all at once; :meth:`Dataset.check` raises
:class:`DatasetError` with that list. :func:`save_dataset` / :func:`load_dataset` keep a dataset
as ``dataset.json`` + image files in one folder (the native layout the training spec names with
``dataset: {path: DIR}``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainer.errors import TrainerError

__all__ = [
    "DATASET_FILE",
    "DATASET_FORMAT",
    "BoxLabel",
    "Dataset",
    "DatasetError",
    "DatasetItem",
    "load_dataset",
    "save_dataset",
]

DATASET_FORMAT = "leanloop.dataset/1"
DATASET_FILE = "dataset.json"


class DatasetError(TrainerError):
    """A dataset is inconsistent or unreadable; ``problems`` lists every issue with its place."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}" if problems else "invalid dataset")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BoxLabel(_Strict):
    """One labelled box, in image pixels (``x2``/``y2`` exclusive)."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str = Field(description="class name (one of the dataset's classes)")

    @classmethod
    def of(cls, row: list[float | str] | tuple[float | str, ...]) -> BoxLabel:
        """From ``[x1, y1, x2, y2, class]`` (the hub's annotation row)."""
        x1, y1, x2, y2, label = row
        return cls(x1=float(x1), y1=float(y1), x2=float(x2), y2=float(y2), label=str(label))

    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)


class DatasetItem(_Strict):
    """One image and its annotation."""

    id: str = Field(min_length=1, description="unique within the dataset")
    image: Path | bytes = Field(description="image file, or its encoded bytes (JPEG/PNG)")
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    label: str | None = Field(default=None, description="classification: the class name")
    boxes: list[BoxLabel] = Field(default_factory=list, description="detection boxes")

    def load_bgr(self, root: Path | None = None) -> np.ndarray:
        """The image as ``H×W×3`` uint8 BGR. Relative paths are read under ``root``.

        Raises DatasetError when the file is missing or does not decode.
        """
        if isinstance(self.image, bytes):
            img = cv2.imdecode(np.frombuffer(self.image, np.uint8), cv2.IMREAD_COLOR)
            where = f"item {self.id}"
        else:
            path = self.image if root is None or self.image.is_absolute() else root / self.image
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
    name: str = Field(default="dataset", min_length=1)
    version: str = Field(default="1", description="data version (named by the model card)")
    ontology_id: str = Field(default="default", min_length=1)
    ontology_version: int = Field(default=1, ge=1)
    classes: list[str] = Field(min_length=1)
    items: list[DatasetItem] = Field(default_factory=list)

    def class_index(self, name: str) -> int:
        """Training index of a class name. Raises DatasetError for an unknown name."""
        try:
            return self.classes.index(name)
        except ValueError:
            raise DatasetError([f"class {name!r} is not one of {self.classes}"]) from None

    def counts_per_class(self) -> dict[str, int]:
        """Labels (classification) plus boxes (detection) per class, every class listed."""
        counts: Counter[str] = Counter()
        for item in self.items:
            if item.label is not None:
                counts[item.label] += 1
            counts.update(b.label for b in item.boxes)
        return {c: counts.get(c, 0) for c in self.classes}

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


def save_dataset(dataset: Dataset, folder: Path) -> Path:
    """Write ``folder/dataset.json`` and ``folder/images/<id>.<ext>`` for items held as bytes
    (items given as paths keep their path, made relative to ``folder`` when inside it).
    The JSON is replaced atomically. Returns the JSON path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    items = []
    for item in dataset.items:
        if isinstance(item.image, bytes):
            ext = ".png" if item.image[:4] == b"\x89PNG" else ".jpg"
            rel = Path("images") / f"{item.id}{ext}"
            (folder / rel).write_bytes(item.image)
            item = item.model_copy(update={"image": rel})
        else:
            path = item.image
            if path.is_absolute() and path.is_relative_to(folder.resolve()):
                item = item.model_copy(update={"image": path.relative_to(folder.resolve())})
        items.append(item)
    out = dataset.model_copy(update={"items": items})
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


def load_dataset(path: Path) -> tuple[Dataset, Path]:
    """Read a dataset folder (or its ``dataset.json``). Returns the dataset and the folder
    its relative image paths are under. Raises DatasetError."""
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
        ds = Dataset.model_validate(raw)
    except ValidationError as e:
        raise DatasetError(
            [f"{file}: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
        ) from e
    return ds, file.parent
