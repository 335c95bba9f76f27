"""COCO: one ``annotations.json`` (images, categories, annotations) and the image files.

Reading: ``PATH`` is the folder holding ``annotations.json`` (or the JSON file itself); each
image's ``file_name`` is found under that folder or its ``images/`` subfolder. A dataset is
*detection* when any annotation has a ``bbox`` (``[x, y, width, height]`` in pixels), else
*classification*: one annotation per image naming its category. Categories keep their id order.
The ontology travels in ``info.ontology_id`` / ``info.ontology_version`` when present.

Writing: ``PATH/annotations.json`` and ``PATH/images/<path>``; ids are 1-based in path order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainer.datasets._io import copy_images, make_box, read_json, sized_item
from trainer.datasets.model import Box, Dataset, Item
from trainer.datasets.report import Report, check_dataset

__all__ = ["ANNOTATIONS", "read_coco", "write_coco"]

ANNOTATIONS = "annotations.json"


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_coco(path: Path) -> Dataset:
    """Read a COCO dataset. Raises DatasetError listing every problem."""
    path = Path(path)
    file = path if path.suffix == ".json" else path / ANNOTATIONS
    root = file.parent
    report = Report(str(file))
    data = read_json(file, report)
    if data is not None and not isinstance(data, dict):
        report.add(file.name, "the top level must be an object")
        data = None
    report.raise_if_any()
    assert isinstance(data, dict)
    f = file.name

    categories: dict[int, str] = {}
    for n, c in enumerate(data.get("categories") or []):
        cid = _int(c.get("id")) if isinstance(c, dict) else None
        name = c.get("name") if isinstance(c, dict) else None
        if cid is None or not isinstance(name, str):
            report.add(f"{f}#categories[{n}]", "needs an integer id and a name")
        elif cid in categories:
            report.add(f"{f}#categories[{n}]", f"category id {cid} is used twice")
        else:
            categories[cid] = name
    if not categories:
        report.add(f, "no categories")

    images: dict[int, dict[str, Any]] = {}
    for n, im in enumerate(data.get("images") or []):
        iid = _int(im.get("id")) if isinstance(im, dict) else None
        if iid is None or not isinstance(im.get("file_name"), str):
            report.add(f"{f}#images[{n}]", "needs an integer id and a file_name")
        elif iid in images:
            report.add(f"{f}#images[{n}]", f"image id {iid} is used twice")
        else:
            images[iid] = im

    anns = list(data.get("annotations") or [])
    raw_info = data.get("info")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    detection = any(isinstance(a, dict) and "bbox" in a for a in anns)
    if info.get("task") in ("classification", "detection"):  # written by write_coco
        detection = info["task"] == "detection"
    boxes: dict[int, list[Box]] = {i: [] for i in images}
    labels: dict[int, list[str]] = {i: [] for i in images}
    seen_ann: set[int] = set()
    for n, a in enumerate(anns):
        where = f"{f}#annotations[{n}]"
        if not isinstance(a, dict):
            report.add(where, "not an object")
            continue
        aid, iid, cid = _int(a.get("id")), _int(a.get("image_id")), _int(a.get("category_id"))
        if aid is not None:
            where = f"{f}#annotation {aid}"
            if aid in seen_ann:
                report.add(where, f"annotation id {aid} is used twice")
            seen_ann.add(aid)
        if iid is None or iid not in images:
            report.add(where, f"image_id {a.get('image_id')!r} names no image")
            continue
        if cid is None or cid not in categories:
            report.add(where, f"unknown category {a.get('category_id')!r}")
            continue
        name = categories[cid]
        if not detection:
            labels[iid].append(name)
            continue
        bbox = a.get("bbox")
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
        ):
            report.add(where, f"bbox must be [x, y, width, height], got {bbox!r}")
            continue
        x, y, w, h = (float(v) for v in bbox)
        box = make_box(where, report, x1=x, y1=y, x2=x + w, y2=y + h, label=name)
        if box is not None:
            boxes[iid].append(box)

    items: list[Item] = []
    for iid, im in sorted(images.items()):
        where = f"{f}#image {iid}"
        dw, dh = _int(im.get("width")), _int(im.get("height"))
        declared = (dw, dh) if dw is not None and dh is not None else None
        if not detection and len(set(labels[iid])) > 1:
            report.add(where, f"several categories for one image: {sorted(set(labels[iid]))}")
        ann: dict[str, Any] = (
            {"boxes": boxes[iid]}
            if detection
            else {"label": labels[iid][0] if labels[iid] else None}
        )
        item = sized_item(root, im["file_name"], where, report, declared, **ann)
        if item is not None:
            items.append(item)
    onto_id = info.get("ontology_id") if isinstance(info.get("ontology_id"), str) else None
    onto_v = _int(info.get("ontology_version")) or 1
    classes = [categories[k] for k in sorted(categories)] or ["?"]
    ds = Dataset(
        task="detection" if detection else "classification",
        classes=classes,
        ontology_id=onto_id,
        ontology_version=max(onto_v, 1),
        items=items,
    )
    check_dataset(ds, report)
    report.raise_if_any()
    return ds


def write_coco(dataset: Dataset, out: Path) -> None:
    """Write ``out/annotations.json`` and ``out/images/``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cat_id = {c: n + 1 for n, c in enumerate(dataset.classes)}
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for iid, item in enumerate(sorted(dataset.items, key=lambda i: i.path), start=1):
        images.append(
            {"id": iid, "file_name": item.path, "width": item.width, "height": item.height}
        )
        if item.label is not None:
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": cat_id[item.label]})
        for b in item.boxes:
            w, h = b.x2 - b.x1, b.y2 - b.y1
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": iid,
                    "category_id": cat_id[b.label],
                    "bbox": [b.x1, b.y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    info: dict[str, Any] = {"task": dataset.task, "ontology_version": dataset.ontology_version}
    if dataset.ontology_id is not None:
        info["ontology_id"] = dataset.ontology_id
    doc = {
        "info": info,
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": c} for c, i in cat_id.items()],
    }
    copy_images(dataset, out)
    (out / ANNOTATIONS).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
