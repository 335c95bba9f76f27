"""Folder per class: ``PATH/<class>/<image>`` (classification only).

Every sub-folder is a class and every image below it (at any depth) is one of that class. The
class order is ``classes.txt`` when present (so empty classes and the order survive a
round-trip), else the folder names sorted. An image's path is relative to its class folder
prefixed by the class: ``cat/001.png``.

Writing: ``PATH/<class>/<path inside the class>`` and ``PATH/classes.txt``.
"""

from __future__ import annotations

from pathlib import Path

from trainer.datasets._io import IMAGE_SUFFIXES, copy_images, read_classes, sized_item
from trainer.datasets.model import Dataset, Item
from trainer.datasets.report import Report, check_dataset

__all__ = ["read_folder", "write_folder"]


def read_folder(root: Path) -> Dataset:
    """Read a folder-per-class dataset. Raises DatasetError listing every problem."""
    root = Path(root)
    report = Report(str(root))
    if not root.is_dir():
        report.add(str(root), "not a folder")
        report.raise_if_any()
    dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = read_classes(root / "classes.txt", report) or dirs
    for d in dirs:
        if d not in classes:
            report.add(f"{d}/", f"folder {d!r} is not a class listed in classes.txt")
    items: list[Item] = []
    for d in dirs:
        for img in sorted((root / d).rglob("*")):
            if not img.is_file():
                continue
            rel = img.relative_to(root).as_posix()
            if img.suffix.lower() not in IMAGE_SUFFIXES:
                report.add(rel, "not an image file (by its suffix)")
                continue
            item = sized_item(root, rel, rel, report, subdirs=("",), label=d)
            if item is not None:
                items.append(item)
    for extra in sorted(p.name for p in root.iterdir() if p.is_file()):
        if extra != "classes.txt":
            report.add(extra, "a file outside any class folder")
    ds = Dataset(task="classification", classes=classes or ["?"], items=items)
    check_dataset(ds, report)
    for item in ds.items:
        if item.label is not None and not item.path.startswith(f"{item.label}/"):
            report.add(item.path, f"is not in the folder of its class {item.label!r}")
    report.raise_if_any()
    return ds


def _in_class_folder(item: Item) -> str:
    assert item.label is not None
    head = item.path.split("/", 1)
    rest = head[1] if len(head) == 2 and head[0] == item.label else item.path
    return f"{item.label}/{rest}"


def write_folder(dataset: Dataset, out: Path) -> None:
    """Write ``out/<class>/...`` and ``out/classes.txt``. Raises ValueError for detection."""
    if dataset.task != "classification":
        raise ValueError("folder-per-class holds image classes; this is a detection dataset")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    moved = dataset.model_copy(
        update={
            "items": [i.model_copy(update={"path": _in_class_folder(i)}) for i in dataset.items]
        }
    )
    copy_images(moved, out, prefix="")
    for c in dataset.classes:
        (out / c).mkdir(exist_ok=True)
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in dataset.classes), encoding="utf-8")
