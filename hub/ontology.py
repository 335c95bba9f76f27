"""Ontology changes on the hub: what a change does to a stored sample, and the weakness report.

Pure functions (no storage): :func:`remap_sample` converts one sample's annotation, meta
(production/shadow predictions, the device's feedback) and feedback row through a
:class:`~runtime.ontology.LabelMapping`; a box or label that cannot be converted (a split
without a rule) sends the sample back to the annotation queue marked ``needs_review`` with its
old annotation kept in ``meta["annotation_before_review"]``; boxes of a deleted class are
dropped. :func:`weakness_report` tallies, per class, predictions, annotations and corrections,
and the most-confused pairs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from runtime.bundle.manifest import Ontology
from runtime.ontology import Change, LabelMapping, apply_changes
from runtime.store.remap import convert_feedback, feedback_item, remap_prediction

__all__ = [
    "SampleChange",
    "mixed_versions",
    "remap_annotation",
    "remap_sample",
    "stamp_ontology",
    "weakness_report",
]


@dataclass(frozen=True)
class SampleChange:
    """A sample after a change: new meta, annotation, state, feedback row (None: removed)."""

    meta: dict[str, Any]
    annotation: dict[str, Any] | None
    state: str
    feedback: dict[str, Any] | None
    feedback_predicted: str | None
    needs_review: bool


def remap_annotation(
    annotation: dict[str, Any], mapping: LabelMapping
) -> tuple[dict[str, Any], bool]:
    """(converted annotation, needs review). Boxes of a deleted class are dropped."""
    out = dict(annotation)
    review = False
    if isinstance(annotation.get("label"), str):
        c = mapping.convert(annotation["label"])
        if c.ok:
            out["label"] = c.label
        else:
            review = True
    boxes = annotation.get("boxes")
    if isinstance(boxes, list):
        new_boxes = []
        for b in boxes:
            if not (isinstance(b, list) and len(b) == 5 and isinstance(b[4], str)):
                new_boxes.append(b)
                continue
            c = mapping.convert(b[4], b[:4])
            if c.ok:
                new_boxes.append([*b[:4], c.label])
            elif c.status == "review":
                review = True
                new_boxes.append(b)
        out["boxes"] = new_boxes
    return out, review


def _final_labels(prediction: Any) -> list[str]:
    stages = prediction.get("stages") if isinstance(prediction, dict) else None
    if not isinstance(stages, dict) or not stages:
        return []
    items = list(stages.values())[-1].get("items") or []
    return [str(i.get("label")) for i in items if isinstance(i, dict)]


def remap_sample(
    meta: dict[str, Any],
    annotation: dict[str, Any] | None,
    state: str,
    feedback: dict[str, Any] | None,
    predicted: str | None,
    mapping: LabelMapping,
    new_version: int,
) -> SampleChange:
    """One sample under the new ontology version."""
    meta = dict(meta)
    review = False
    before = meta.get("prediction")  # the boxes a split's rule reads: the feedback's item
    pred, pred_review = remap_prediction(meta.get("prediction"), mapping)
    if pred is not None:
        meta["prediction"] = pred
    if meta.get("shadow_prediction") is not None:
        meta["shadow_prediction"], _ = remap_prediction(meta["shadow_prediction"], mapping)

    def fb_convert(fb: dict[str, Any], pred_label: str | None) -> dict[str, Any] | None:
        nonlocal review
        new, why = convert_feedback(
            fb, pred_label, feedback_item(before, fb.get("item")).get("box"), mapping
        )
        if new is None:
            review = True
            meta["refused_feedback"] = {**fb, "reason": why}
        return new

    if isinstance(meta.get("feedback"), dict):
        meta["feedback"] = fb_convert(meta["feedback"], None)
    new_feedback = fb_convert(feedback, predicted) if feedback is not None else None
    new_predicted = predicted
    if predicted is not None and predicted in mapping.old_classes:
        c = mapping.convert(predicted)
        new_predicted = c.label if c.ok and c.label else predicted
    new_annotation = annotation
    if annotation is not None:
        new_annotation, ann_review = remap_annotation(annotation, mapping)
        if ann_review:
            review = True
    if pred_review and state == "pending":
        review = True  # the model's label has no single successor: the human sees it
    if review:
        meta["needs_review"] = True
        if annotation is not None:
            meta["annotation_before_review"] = annotation
    meta["ontology_version"] = new_version
    if review and annotation is not None:
        state, new_annotation = "pending", None
    return SampleChange(meta, new_annotation, state, new_feedback, new_predicted, review)


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _pairs(prediction: Any, annotation: dict[str, Any]) -> list[tuple[str, str]]:
    """(predicted, annotated) label pairs of one annotated sample: the whole-image label, or
    boxes matched greedily at IoU >= 0.5."""
    if isinstance(annotation.get("label"), str):
        labels = _final_labels(prediction)
        return [(labels[0], annotation["label"])] if labels else []
    stages = prediction.get("stages") if isinstance(prediction, dict) else None
    if not isinstance(stages, dict) or not stages:
        return []
    items = [
        i
        for i in list(stages.values())[-1].get("items") or []
        if isinstance(i, dict) and isinstance(i.get("box"), list)
    ]
    out: list[tuple[str, str]] = []
    used: set[int] = set()
    for b in annotation.get("boxes") or []:
        best, best_iou = None, 0.5
        for k, it in enumerate(items):
            if k not in used and (iou := _iou(it["box"], b[:4])) >= best_iou:
                best, best_iou = k, iou
        if best is not None:
            used.add(best)
            out.append((str(items[best].get("label")), str(b[4])))
    return out


def weakness_report(
    classes: list[str],
    samples: list[tuple[dict[str, Any], dict[str, Any] | None]],
    feedback: list[tuple[str, str, str | None]],
    top: int = 10,
) -> dict[str, Any]:
    """Per class: ``predicted`` (final-stage items of uploaded samples), ``annotated`` (labels
    in human annotations), ``corrected_from`` / ``corrected_to`` (feedback corrections),
    ``confirmed``; the ``top`` most-confused (predicted, actual) pairs from corrections and
    annotated samples; and flags: ``never_predicted``, ``rarely_predicted`` (predicted under a
    fifth of annotated), ``often_confused`` (in a top pair).

    ``samples`` are (meta, annotation); ``feedback`` (predicted, kind, corrected label).
    """
    per: dict[str, Counter[str]] = {c: Counter() for c in classes}

    def bump(label: str, key: str) -> None:
        per.setdefault(label, Counter())[key] += 1

    confusion: Counter[tuple[str, str]] = Counter()
    for meta, annotation in samples:
        for lbl in _final_labels(meta.get("prediction")):
            bump(lbl, "predicted")
        if annotation is None:
            continue
        labels = (
            [annotation["label"]]
            if isinstance(annotation.get("label"), str)
            else [str(b[4]) for b in annotation.get("boxes") or [] if isinstance(b, list)]
        )
        for lbl in labels:
            bump(lbl, "annotated")
        for p, a in _pairs(meta.get("prediction"), annotation):
            if p != a:
                confusion[(p, a)] += 1
    for predicted, kind, label in feedback:
        if kind == "confirm":
            bump(predicted, "confirmed")
        elif label is not None:
            bump(predicted, "corrected_from")
            bump(label, "corrected_to")
            if label != predicted:
                confusion[(predicted, label)] += 1
    pairs = sorted(confusion.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    confused = {c for (p, a), _ in pairs for c in (p, a)}
    out_classes: dict[str, Any] = {}
    for c, cnt in per.items():
        keys = ("predicted", "annotated", "corrected_from", "corrected_to", "confirmed")
        row: dict[str, Any] = {k: cnt[k] for k in keys}
        flags = []
        if cnt["predicted"] == 0 and cnt["annotated"] + cnt["corrected_to"] > 0:
            flags.append("never_predicted")
        elif cnt["predicted"] * 5 < cnt["annotated"]:
            flags.append("rarely_predicted")
        if c in confused:
            flags.append("often_confused")
        if c not in classes:
            flags.append("not_in_ontology")
        row["flags"] = flags
        out_classes[c] = row
    return {
        "classes": out_classes,
        "confused_pairs": [{"predicted": p, "actual": a, "count": n} for (p, a), n in pairs],
    }


def stamp_ontology(current: Ontology, versions: list[dict[str, Any]]) -> Ontology:
    """``current`` (a bundle source's ontology, its class order the model's outputs) as the
    hub's latest version with the same classes: its number, ``previous_version``, ``changes``
    and ``mapping_from_previous``. Raises ValueError when no version has these classes, or a
    stored change does not apply (OntologyChangeError is a ValueError's sibling: wrapped)."""
    match = [v for v in versions if set(v["classes"]) == set(current.classes)]
    if not match:
        raise ValueError(
            f"classes {current.classes} are those of no version of ontology {current.id!r} on "
            f"the hub ({', '.join(str(v['version']) for v in versions) or 'none'})"
        )
    v = match[-1]
    prev = next((p for p in versions if p["version"] == v["version"] - 1), None)
    try:
        changes = TypeAdapter(list[Change]).validate_python(v["changes"]) if prev else []
        mapping = apply_changes(prev["classes"], changes)[1] if prev and changes else None
    except Exception as e:  # a stored change that no longer applies: say which version
        raise ValueError(f"ontology {current.id!r} v{v['version']}: {e}") from e
    return Ontology(
        id=current.id,
        version=v["version"],
        classes=current.classes,
        mapping_from_previous=mapping.to_manifest_mapping() if mapping else {},
        previous_version=prev["version"] if prev else None,
        changes=changes,
    )


def mixed_versions(metas: list[dict[str, Any]], target: int | None) -> str | None:
    """Why these samples cannot be one training set, or None: they must all be labelled under
    one ontology version (``target`` when given; a sample without a version counts as it)."""
    by_version: dict[int, list[str]] = {}
    for m in metas:
        v = m.get("ontology_version")
        if isinstance(v, int) and (target is None or v != target):
            by_version.setdefault(v, []).append(str(m.get("id", "?")))
    if target is None and len(by_version) <= 1:
        return None
    if not by_version:
        return None
    parts = "; ".join(
        f"version {v}: {len(ids)} (e.g. {', '.join(ids[:3])})"
        for v, ids in sorted(by_version.items())
    )
    want = f"version {target}" if target is not None else "one version"
    return (
        f"annotated samples mix ontology versions ({parts}); training needs {want}: change "
        "the ontology on the hub (it remaps stored samples) or relabel them"
    )
