"""Datasets in and out (torch-free: the hub and the CLI import it without the trainer's torch).

One :class:`~trainer.datasets.model.Dataset` model, and one module per on-disk format, each a
``read_<format>(path) -> Dataset`` that reports *every* problem at once
(:class:`~trainer.datasets.report.DatasetError`) and a ``write_<format>(dataset, out)``:

========== ============================================ ============================
format     reads                                        tasks
========== ============================================ ============================
coco       ``annotations.json`` + images                detection, classification
yolo       ``data.yaml``/``classes.txt``, images/, labels/  detection
labelstudio ``tasks.json`` (Label Studio's JSON export)  detection, classification
folder     ``<class>/<image>``                          classification
native     ``dataset.json`` (what ``leanloop train`` reads) both
========== ============================================ ============================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.datasets.coco import read_coco, write_coco
from trainer.datasets.folder import read_folder, write_folder
from trainer.datasets.labelstudio import read_labelstudio, write_labelstudio
from trainer.datasets.model import Box, Dataset, Item
from trainer.datasets.native import read_native, write_native
from trainer.datasets.report import DatasetError, Problem, Report
from trainer.datasets.yolo import read_yolo, write_yolo

__all__ = [
    "FORMATS",
    "Box",
    "Dataset",
    "DatasetError",
    "Item",
    "Problem",
    "Report",
    "read_dataset",
    "write_dataset",
]

Reader = Callable[[Path], Dataset]
Writer = Callable[[Dataset, Path], None]

FORMATS: dict[str, tuple[Reader, Writer]] = {
    "coco": (read_coco, write_coco),
    "yolo": (read_yolo, write_yolo),
    "labelstudio": (read_labelstudio, write_labelstudio),
    "folder": (read_folder, write_folder),
    "native": (read_native, write_native),
}


def _format(name: str) -> tuple[Reader, Writer]:
    try:
        return FORMATS[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset format {name!r}; choose one of {', '.join(FORMATS)}"
        ) from None


def read_dataset(fmt: str, path: Path) -> Dataset:
    """Read ``path`` in format ``fmt``. Raises DatasetError (with every problem listed)."""
    return _format(fmt)[0](Path(path))


def write_dataset(fmt: str, dataset: Dataset, out: Path) -> None:
    """Write ``dataset`` to folder ``out`` in format ``fmt``. Raises DatasetError when the
    format cannot hold the dataset (boxes in folder-per-class, labels in YOLO)."""
    try:
        _format(fmt)[1](dataset, Path(out))
    except ValueError as e:
        raise DatasetError(f"{fmt}: {e}") from e
