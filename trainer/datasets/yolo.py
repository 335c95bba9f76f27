"""YOLO txt: ``images/**``, ``labels/**.txt`` mirroring them, class names in ``data.yaml``.

Each label file has one line per box: ``class_index cx cy w h``, the four numbers normalised to
the image size (0..1). An image without a label file has no boxes; a label file without an
image is a problem. Class names come from ``data.yaml`` (``names``: a list, or a map index ->
name) or else ``classes.txt`` (one per line). Detection only.

Writing: ``data.yaml`` (``names``, ``path``, ``train``/``val`` pointing at ``images``, and the
ontology under ``leanloop_ontology``), ``images/<path>`` and ``labels/<path stem>.txt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from trainer.datasets._io import (
    IMAGE_SUFFIXES,
    copy_images,
    make_box,
    read_classes,
    sized_item,
)
from trainer.datasets.model import Box, Dataset, Item
from trainer.datasets.report import Report, check_dataset

__all__ = ["read_yolo", "write_yolo"]


def _names(root: Path, report: Report) -> tuple[list[str], dict[str, Any]]:
    yml = root / "data.yaml"
    if yml.is_file():
        try:
            data = yaml.safe_load(yml.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            report.add("data.yaml", f"not readable YAML: {str(e).splitlines()[0]}")
            return [], {}
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return list(names), data
        if isinstance(names, dict) and all(isinstance(k, int) for k in names):
            keys = sorted(names)
            if keys != list(range(len(keys))):
                report.add("data.yaml", "names must be numbered 0..n-1")
            return [str(names[k]) for k in keys], data
        report.add("data.yaml", "names must be a list of class names")
        return [], {}
    classes = read_classes(root / "classes.txt", report)
    if classes is None:
        report.add(str(root), "no data.yaml or classes.txt naming the classes")
        return [], {}
    return classes, {}


def _boxes(
    txt: Path, rel: str, size: tuple[int, int], classes: list[str], report: Report
) -> list[Box]:
    out: list[Box] = []
    try:
        lines = txt.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        report.add(rel, f"unreadable: {e}")
        return out
    w, h = size
    for n, line in enumerate(lines, start=1):
        where = f"{rel}:{n}"
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            report.add(where, f"expected 'class cx cy w h', got {line.strip()[:80]!r}")
            continue
        try:
            k = int(parts[0])
            cx, cy, bw, bh = (float(v) for v in parts[1:])
        except ValueError:
            report.add(where, f"not numbers: {line.strip()[:80]!r}")
            continue
        if not 0 <= k < len(classes):
            report.add(where, f"unknown category index {k} (there are {len(classes)} classes)")
            continue
        box = make_box(
            where,
            report,
            x1=(cx - bw / 2) * w,
            y1=(cy - bh / 2) * h,
            x2=(cx + bw / 2) * w,
            y2=(cy + bh / 2) * h,
            label=classes[k],
        )
        if box is not None:
            out.append(box)
    return out


def read_yolo(root: Path) -> Dataset:
    """Read a YOLO txt dataset. Raises DatasetError listing every problem."""
    root = Path(root)
    report = Report(str(root))
    classes, meta = _names(root, report)
    images_dir, labels_dir = root / "images", root / "labels"
    if not images_dir.is_dir():
        report.add(str(root), "no images/ folder")
    report.raise_if_any()
    items: list[Item] = []
    seen_stems: set[str] = set()
    for img in sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        rel = img.relative_to(images_dir).as_posix()
        stem = img.relative_to(images_dir).with_suffix("").as_posix()
        if stem in seen_stems:
            report.add(f"images/{rel}", f"two images share the label file labels/{stem}.txt")
        seen_stems.add(stem)
        item = sized_item(images_dir, rel, f"images/{rel}", report, subdirs=("",))
        if item is None:
            continue
        txt = labels_dir / f"{stem}.txt"
        if txt.is_file():
            item.boxes = _boxes(
                txt, f"labels/{stem}.txt", (item.width, item.height), classes, report
            )
        items.append(item)
    if labels_dir.is_dir():
        for txt in sorted(labels_dir.rglob("*.txt")):
            stem = txt.relative_to(labels_dir).with_suffix("").as_posix()
            if stem not in seen_stems:
                report.add(f"labels/{stem}.txt", "label file with no image")
    raw_onto = meta.get("leanloop_ontology")
    onto: dict[str, Any] = raw_onto if isinstance(raw_onto, dict) else {}
    version = onto.get("version")
    ds = Dataset(
        task="detection",
        classes=classes or ["?"],
        ontology_id=onto.get("id") if isinstance(onto.get("id"), str) else None,
        ontology_version=version if isinstance(version, int) and version >= 1 else 1,
        items=items,
    )
    check_dataset(ds, report)
    report.raise_if_any()
    return ds


def write_yolo(dataset: Dataset, out: Path) -> None:
    """Write ``data.yaml``, ``images/`` and ``labels/``. Raises ValueError for a
    classification dataset (YOLO txt holds boxes)."""
    if dataset.task != "detection":
        raise ValueError("YOLO txt holds boxes; this is a classification dataset")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = {c: n for n, c in enumerate(dataset.classes)}
    copy_images(dataset, out)
    for item in dataset.items:
        txt = out / "labels" / Path(item.path).with_suffix(".txt")
        txt.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for b in item.boxes:
            cx = (b.x1 + b.x2) / 2 / item.width
            cy = (b.y1 + b.y2) / 2 / item.height
            bw = (b.x2 - b.x1) / item.width
            bh = (b.y2 - b.y1) / item.height
            lines.append(f"{index[b.label]} {cx!r} {cy!r} {bw!r} {bh!r}\n")
        txt.write_text("".join(lines), encoding="utf-8")
    onto: dict[str, Any] = {"version": dataset.ontology_version}
    if dataset.ontology_id is not None:
        onto["id"] = dataset.ontology_id
    data = {
        "path": ".",
        "train": "images",
        "val": "images",
        "names": list(dataset.classes),
        "leanloop_ontology": onto,
    }
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
