"""Label Studio JSON: the task list Label Studio exports ("JSON" export).

Each task has ``data.image`` (a path or URL; the file is looked up by its relative path, else by
its base name, under the folder and its ``images/`` subfolder) and ``annotations``, whose latest
non-cancelled one is used. Its ``result`` holds ``rectanglelabels`` regions (``value.x``,
``y``, ``width``, ``height`` in *percent* of the image, ``original_width``/``original_height``
in pixels) for detection, or one ``choices`` result for classification. Rotated rectangles are
refused. Label Studio exports carry no class list: ``leanloop.json`` (written by
:func:`write_labelstudio`) or ``classes.txt`` gives it; otherwise it is every label seen, sorted.

Writing: ``PATH/tasks.json``, ``PATH/images/<path>`` and ``PATH/leanloop.json`` (task, classes,
ontology).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from trainer.datasets._io import copy_images, make_box, read_classes, read_json, sized_item
from trainer.datasets.model import Box, Dataset, Item
from trainer.datasets.report import Report, check_dataset

__all__ = ["TASKS", "read_labelstudio", "write_labelstudio"]

TASKS = "tasks.json"
SIDECAR = "leanloop.json"


def _image_rel(root: Path, ref: str) -> str:
    """The image's path as the dataset names it: the reference itself when it is a relative
    path to a file (less a leading ``images/``), else its base name (Label Studio's
    ``/data/upload/...`` paths and URLs)."""
    parsed = urlparse(ref)
    path = unquote(parsed.path) if parsed.scheme else ref
    parts = PurePosixPath(path).parts
    if not parsed.scheme and not path.startswith("/") and ".." not in parts:
        if path.startswith("images/") and (root / path).is_file():
            return path[len("images/") :]
        if (root / path).is_file():
            return path
    return PurePosixPath(path).name


def _latest_result(task: dict[str, Any]) -> list[Any] | None:
    anns = [
        a
        for a in task.get("annotations") or task.get("completions") or []  # older exports
        if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    if not anns:
        return None
    result = anns[-1].get("result")
    return result if isinstance(result, list) else None


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def read_labelstudio(path: Path) -> Dataset:
    """Read a Label Studio JSON export. Raises DatasetError listing every problem."""
    path = Path(path)
    file = path if path.suffix == ".json" else path / TASKS
    root = file.parent
    report = Report(str(file))
    tasks = read_json(file, report)
    if tasks is not None and not isinstance(tasks, list):
        report.add(file.name, "the top level must be a list of tasks")
    report.raise_if_any()
    assert isinstance(tasks, list)
    side = read_json(root / SIDECAR, Report("")) if (root / SIDECAR).is_file() else None
    side = side if isinstance(side, dict) else {}
    f = file.name

    rows: list[tuple[str, str, list[Any] | None]] = []  # (where, image ref, result)
    seen_ids: set[Any] = set()
    for n, t in enumerate(tasks):
        where = f"{f}#tasks[{n}]"
        if not isinstance(t, dict):
            report.add(where, "not an object")
            continue
        tid = t.get("id")
        if tid is not None:
            where = f"{f}#task {tid}"
            if tid in seen_ids:
                report.add(where, f"task id {tid} is used twice")
            seen_ids.add(tid)
        data = t.get("data")
        ref = data.get("image") if isinstance(data, dict) else None
        if not isinstance(ref, str) or not ref:
            report.add(where, "data.image names no image")
            continue
        rows.append((where, ref, _latest_result(t)))

    detection = side.get("task") == "detection" or any(
        isinstance(r, dict) and r.get("type") == "rectanglelabels"
        for _, _, res in rows
        for r in res or []
    )
    if side.get("task") == "classification":
        detection = False
    items: list[Item] = []
    seen_labels: set[str] = set()
    for where, ref, result in rows:
        rel = _image_rel(root, ref)
        boxes: list[Box] = []
        label: str | None = None
        declared: tuple[int, int] | None = None
        percent: list[tuple[str, dict[str, Any], str]] = []
        for k, r in enumerate(result or []):
            rwhere = f"{where} result {r.get('id', k) if isinstance(r, dict) else k}"
            if not isinstance(r, dict) or not isinstance(r.get("value"), dict):
                report.add(rwhere, "not a result object with a value")
                continue
            v = r["value"]
            if r.get("type") == "choices":
                ch = v.get("choices")
                if not (isinstance(ch, list) and len(ch) == 1 and isinstance(ch[0], str)):
                    report.add(rwhere, f"choices must name one class, got {ch!r}")
                elif label is not None and label != ch[0]:
                    report.add(rwhere, f"a second class {ch[0]!r} besides {label!r}")
                else:
                    label = ch[0]
                    seen_labels.add(label)
            elif r.get("type") == "rectanglelabels":
                names = v.get("rectanglelabels")
                if not (isinstance(names, list) and len(names) == 1 and isinstance(names[0], str)):
                    report.add(rwhere, f"rectanglelabels must name one class, got {names!r}")
                    continue
                if not all(_num(v.get(key)) for key in ("x", "y", "width", "height")):
                    report.add(rwhere, "x, y, width, height must be numbers (percent)")
                    continue
                if _num(v.get("rotation")) and v["rotation"] != 0:
                    report.add(rwhere, f"rotated rectangles are not supported ({v['rotation']}°)")
                    continue
                ow, oh = r.get("original_width"), r.get("original_height")
                if isinstance(ow, int) and isinstance(oh, int):
                    if declared is not None and declared != (ow, oh):
                        report.add(rwhere, "original_width/height differ between results")
                    declared = (ow, oh)
                seen_labels.add(names[0])
                percent.append((rwhere, v, names[0]))
            else:
                report.add(rwhere, f"unsupported result type {r.get('type')!r}")
        ann: dict[str, Any] = {"label": label} if not detection else {}
        item = sized_item(root, rel, where, report, declared, subdirs=("images", ""), **ann)
        if item is None:
            continue
        for rwhere, v, name in percent:
            box = make_box(
                rwhere,
                report,
                x1=v["x"] / 100 * item.width,
                y1=v["y"] / 100 * item.height,
                x2=(v["x"] + v["width"]) / 100 * item.width,
                y2=(v["y"] + v["height"]) / 100 * item.height,
                label=name,
            )
            if box is not None:
                boxes.append(box)
        item.boxes = boxes
        items.append(item)

    classes = side.get("classes")
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        classes = read_classes(root / "classes.txt", report) or sorted(seen_labels)
    version = side.get("ontology_version")
    ds = Dataset(
        task="detection" if detection else "classification",
        classes=classes or ["?"],
        ontology_id=side.get("ontology_id") if isinstance(side.get("ontology_id"), str) else None,
        ontology_version=version if isinstance(version, int) and version >= 1 else 1,
        items=items,
    )
    check_dataset(ds, report)
    report.raise_if_any()
    return ds


def write_labelstudio(dataset: Dataset, out: Path) -> None:
    """Write ``tasks.json`` (Label Studio's JSON import/export shape), ``images/`` and
    ``leanloop.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks: list[dict[str, Any]] = []
    for tid, item in enumerate(sorted(dataset.items, key=lambda i: i.path), start=1):
        result: list[dict[str, Any]] = []
        if item.label is not None:
            result.append(
                {
                    "id": f"{tid}-0",
                    "type": "choices",
                    "from_name": "choice",
                    "to_name": "image",
                    "value": {"choices": [item.label]},
                }
            )
        for k, b in enumerate(item.boxes):
            result.append(
                {
                    "id": f"{tid}-{k}",
                    "type": "rectanglelabels",
                    "from_name": "label",
                    "to_name": "image",
                    "original_width": item.width,
                    "original_height": item.height,
                    "image_rotation": 0,
                    "value": {
                        "x": b.x1 / item.width * 100,
                        "y": b.y1 / item.height * 100,
                        "width": (b.x2 - b.x1) / item.width * 100,
                        "height": (b.y2 - b.y1) / item.height * 100,
                        "rotation": 0,
                        "rectanglelabels": [b.label],
                    },
                }
            )
        tasks.append(
            {
                "id": tid,
                "data": {"image": f"images/{item.path}"},
                "annotations": [{"id": tid, "result": result, "was_cancelled": False}],
            }
        )
    copy_images(dataset, out)
    (out / TASKS).write_text(json.dumps(tasks, indent=1) + "\n", encoding="utf-8")
    side = {
        "task": dataset.task,
        "classes": dataset.classes,
        "ontology_id": dataset.ontology_id,
        "ontology_version": dataset.ontology_version,
    }
    (out / SIDECAR).write_text(json.dumps(side, indent=1) + "\n", encoding="utf-8")
