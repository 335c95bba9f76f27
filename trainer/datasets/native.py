"""``native``: the training tasks' own dataset folder (``dataset.json``, ``leanloop.dataset/1``,
:mod:`trainer.dataset_types`), so any imported format can be trained on directly::

    leanloop dataset convert coco ./coco --to native --out ./train-set   # then leanloop train

Reading converts each item (its image path relative to the folder, less a leading ``images/``,
is the item's path); the
task is classification when any item has a label, else detection. Writing keeps the image files
under ``images/<path>`` and names each item by its path.
"""

from __future__ import annotations

from pathlib import Path

from trainer import dataset_types as native
from trainer.datasets._io import copy_images, sized_item
from trainer.datasets.model import Box, Dataset, Item
from trainer.datasets.report import DatasetError, Report, check_dataset

__all__ = ["read_native", "write_native"]


def read_native(path: Path) -> Dataset:
    """Read a ``dataset.json`` folder. Raises DatasetError listing every problem."""
    report = Report(str(path))
    try:
        ds, root = native.load_dataset(Path(path))
    except native.DatasetError as e:
        raise DatasetError(f"{path}: {e}", []) from e
    classification = any(i.label is not None for i in ds.items)
    items: list[Item] = []
    for it in ds.items:
        where = f"dataset.json#item {it.id}"
        if isinstance(it.image, bytes):
            report.add(where, "images held as bytes are not supported here; save them as files")
            continue
        rel = it.image.as_posix()
        ann: dict[str, object] = (
            {"label": it.label}
            if classification
            else {
                "boxes": [Box(x1=b.x1, y1=b.y1, x2=b.x2, y2=b.y2, label=b.label) for b in it.boxes]
            }
        )
        subdirs: tuple[str, ...] = ("",)
        if rel.startswith("images/"):  # as write_native lays it out
            rel, subdirs = rel[len("images/") :], ("images",)
        item = sized_item(root, rel, where, report, (it.width, it.height), subdirs, **ann)
        if item is not None:
            items.append(item)
    out = Dataset(
        task="classification" if classification else "detection",
        classes=ds.classes,
        ontology_id=ds.ontology_id,
        ontology_version=ds.ontology_version,
        items=items,
    )
    check_dataset(out, report)
    report.raise_if_any()
    return out


def write_native(dataset: Dataset, out: Path) -> None:
    """Write ``out/dataset.json`` and ``out/images/<path>``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    copy_images(dataset, out)
    items = [
        native.DatasetItem(
            id=i.path,
            image=Path("images") / i.path,
            width=i.width,
            height=i.height,
            label=i.label,
            boxes=[native.BoxLabel.of(b.as_list()) for b in i.boxes],
        )
        for i in sorted(dataset.items, key=lambda i: i.path)
    ]
    native.save_dataset(
        native.Dataset(
            ontology_id=dataset.ontology_id or "default",
            ontology_version=dataset.ontology_version,
            classes=dataset.classes,
            items=items,
        ),
        out,
    )
