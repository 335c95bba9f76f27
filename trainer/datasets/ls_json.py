"""Label Studio's JSON, as the hub speaks it: tasks with pre-annotations out, annotations in.

Pure functions (no I/O, no torch), used by the hub's Label Studio routes
(:mod:`hub.api.labelstudio`) and by the dataset writer (:mod:`trainer.datasets.labelstudio`):

- :func:`task_for` — a stored sample as a Label Studio task: ``data.image`` (a signed URL of the
  hub), ``data.leanloop_id`` (the sample id, how an annotation finds its way back), and the
  model's prediction as a pre-annotation (``rectanglelabels`` in percent of the image for
  detection, one ``choices`` result for classification);
- :func:`annotation_of` — a Label Studio annotation ``result`` list back to the hub's
  annotation (boxes ``[x1, y1, x2, y2, label]`` in pixels, or one class), with every problem
  named (rotated boxes, several classes, unknown result types, non-numbers);
- :func:`latest_annotation` — the task's latest annotation that was not cancelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Converted",
    "annotation_of",
    "box_region",
    "latest_annotation",
    "prediction_result",
    "task_for",
]


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def box_region(
    rid: str, box: list[float], label: str, width: int, height: int,
    from_name: str = "label", to_name: str = "image", score: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One ``rectanglelabels`` result (percent coordinates, Label Studio's convention)."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    region: dict[str, Any] = {
        "id": rid,
        "type": "rectanglelabels",
        "from_name": from_name,
        "to_name": to_name,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": x1 / width * 100,
            "y": y1 / height * 100,
            "width": (x2 - x1) / width * 100,
            "height": (y2 - y1) / height * 100,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }
    if score is not None:
        region["score"] = score
    return region


def prediction_result(
    items: list[dict[str, Any]], width: int, height: int,
    from_name: str = "label", to_name: str = "image", choice_name: str = "choice",
) -> tuple[list[dict[str, Any]], float]:  # fmt: skip
    """The model's items (a prediction's last stage) as Label Studio results, and the mean
    confidence. Items with boxes become rectangles; a box-less top item becomes a choice."""
    result: list[dict[str, Any]] = []
    scores: list[float] = []
    for k, it in enumerate(items):
        label = str(it.get("label", ""))
        score = float(it["score"]) if _num(it.get("score")) else None
        if score is not None:
            scores.append(score)
        box = it.get("box")
        if isinstance(box, list | tuple) and len(box) == 4 and all(_num(v) for v in box):
            result.append(box_region(f"p{k}", list(box), label, width, height, from_name,
                                     to_name, score))  # fmt: skip
        elif not result and label:
            result.append(
                {"id": f"p{k}", "type": "choices", "from_name": choice_name, "to_name": to_name,
                 "value": {"choices": [label]}, **({"score": score} if score is not None else {})}
            )  # fmt: skip
            break
    return result, (sum(scores) / len(scores) if scores else 0.0)


def task_for(
    sample_id: str, image_url: str, items: list[dict[str, Any]], size: tuple[int, int] | None,
    model_version: str, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A Label Studio task for a sample, with its pre-annotation when the size is known."""
    task: dict[str, Any] = {"data": {"image": image_url, "leanloop_id": sample_id, **(extra or {})}}
    if size is not None and items:
        result, score = prediction_result(items, size[0], size[1])
        if result:
            task["predictions"] = [
                {"model_version": model_version, "score": round(score, 4), "result": result}
            ]
    return task


def latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The task's last annotation that was not cancelled (``completions`` in old exports)."""
    anns = task.get("annotations") or task.get("completions") or []
    live = [a for a in anns if isinstance(a, dict) and not a.get("was_cancelled")]
    return live[-1] if live else None


@dataclass
class Converted:
    """An annotation converted to the hub's shape, or the problems that stopped it."""

    boxes: list[list[Any]] = field(default_factory=list)
    label: str | None = None
    problems: list[str] = field(default_factory=list)


def annotation_of(result: Any, width: int | None = None, height: int | None = None) -> Converted:
    """Label Studio results → boxes in pixels (``original_width/height`` of each result, else
    ``width``/``height``) or one class. Every problem is listed, none is skipped silently."""
    out = Converted()
    if not isinstance(result, list):
        out.problems.append("result must be a list")
        return out
    for k, r in enumerate(result):
        where = f"result {r.get('id', k) if isinstance(r, dict) else k}"
        if not isinstance(r, dict) or not isinstance(r.get("value"), dict):
            out.problems.append(f"{where}: not a result object with a value")
            continue
        v = r["value"]
        kind = r.get("type")
        if kind == "choices":
            ch = v.get("choices")
            if not (isinstance(ch, list) and len(ch) == 1 and isinstance(ch[0], str)):
                out.problems.append(f"{where}: choices must name one class, got {ch!r}")
            elif out.label not in (None, ch[0]):
                out.problems.append(f"{where}: a second class {ch[0]!r} besides {out.label!r}")
            else:
                out.label = ch[0]
        elif kind == "rectanglelabels":
            names = v.get("rectanglelabels")
            if not (isinstance(names, list) and len(names) == 1 and isinstance(names[0], str)):
                out.problems.append(f"{where}: rectanglelabels must name one class, got {names!r}")
                continue
            if not all(_num(v.get(key)) for key in ("x", "y", "width", "height")):
                out.problems.append(f"{where}: x, y, width, height must be numbers (percent)")
                continue
            if _num(v.get("rotation")) and v["rotation"] != 0:
                out.problems.append(f"{where}: rotated rectangles are not supported")
                continue
            w = r.get("original_width") if _num(r.get("original_width")) else width
            h = r.get("original_height") if _num(r.get("original_height")) else height
            if not w or not h:
                out.problems.append(f"{where}: the image size is unknown")
                continue
            x1, y1 = v["x"] / 100 * w, v["y"] / 100 * h
            x2, y2 = (v["x"] + v["width"]) / 100 * w, (v["y"] + v["height"]) / 100 * h
            x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
            if x2 <= x1 or y2 <= y1:
                out.problems.append(f"{where}: the box is empty or outside the image")
                continue
            out.boxes.append([round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2), names[0]])
        else:
            out.problems.append(f"{where}: unsupported result type {kind!r}")
    return out
