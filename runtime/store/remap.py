"""Remap the device's stored data when a committed bundle brings a new ontology version.

Called once when an update commits (:func:`remap_store`, one call so the install path can move
it). Every sample record still labelled under the previous version is rewritten in place:

- prediction (and shadow prediction) item labels of an old class are converted through the
  mapping (class ids follow the new class list); a split without a rule, or without a box for
  the rule, keeps the old label and marks the record ``extra["needs_review"]``;
- corrective feedback is converted the same way; feedback that cannot be converted (its class
  was split with no rule, or deleted) is **refused**: it moves to ``extra["refused_feedback"]``
  with the reason, so nothing is lost and the hub's queue asks a human again;
- ``ontology_version`` becomes the new version (so a second call changes nothing).

The feedback outbox gets the same treatment: remembered labels of uploaded samples are
converted (counted as ``outbox_remapped``), and queued
feedback that cannot be converted is dropped with a warning naming the sample and the reason.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from runtime.bundle.manifest import Ontology
from runtime.ontology import LabelMapping, Mapping, mapping_between
from runtime.outbox import FeedbackOutbox
from runtime.store.lmdb_store import SampleStore
from runtime.store.record import Feedback, SampleRecord

__all__ = [
    "RemapReport",
    "convert_feedback",
    "feedback_item",
    "mapping_for",
    "remap_prediction",
    "remap_record",
    "remap_store",
]

log = logging.getLogger("leanloop.store.remap")
_MAX_LOGGED = 20


@dataclass
class RemapReport:
    """What a remap did."""

    from_version: int
    to_version: int
    records: int = 0
    needs_review: int = 0
    feedback_converted: int = 0
    feedback_refused: list[tuple[str, str]] = field(default_factory=list)  # (sample id, why)
    outbox_dropped: int = 0
    outbox_remapped: int = 0
    """Remembered uploads (the outbox's labels of samples already sent) that were converted."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_version": self.from_version,
            "to_version": self.to_version,
            "records": self.records,
            "needs_review": self.needs_review,
            "feedback_converted": self.feedback_converted,
            "feedback_refused": [list(x) for x in self.feedback_refused],
            "outbox_dropped": self.outbox_dropped,
            "outbox_remapped": self.outbox_remapped,
        }


def mapping_for(old: Ontology, new: Ontology) -> Mapping | None:
    """The mapping from the committed ontology to the new one, or None when there is nothing to
    remap (same id and version, or another ontology altogether)."""
    if old.id != new.id or new.version <= old.version:
        return None
    prev_ok = new.previous_version in (None, old.version)
    return mapping_between(
        old.classes,
        new.classes,
        new.mapping_from_previous if prev_ok else {},
        new.changes if prev_ok else (),
    )


def _final_items(prediction: dict[str, Any]) -> list[dict[str, Any]]:
    stages = prediction.get("stages")
    if not isinstance(stages, dict) or not stages:
        return []
    items = list(stages.values())[-1].get("items")
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def feedback_item(prediction: Any, item: Any) -> dict[str, Any]:
    """The final-stage item a feedback names (``item`` index, None: the first), or {} — its
    label and box decide a split with a rule, on the device and on the hub alike."""
    items = _final_items(prediction) if isinstance(prediction, dict) else []
    i = item if isinstance(item, int) and not isinstance(item, bool) else 0
    return items[i] if 0 <= i < len(items) else {}


def remap_prediction(pred: dict[str, Any] | None, mapping: LabelMapping) -> tuple[Any, bool]:
    """(converted copy, some label needs review)."""
    if not isinstance(pred, dict):
        return pred, False
    out = copy.deepcopy(pred)
    review = False
    stages = out.get("stages")
    for stage in stages.values() if isinstance(stages, dict) else []:
        for item in stage.get("items") or [] if isinstance(stage, dict) else []:
            label = item.get("label") if isinstance(item, dict) else None
            if not isinstance(label, str) or label not in mapping.old_classes:
                continue
            conv = mapping.convert(label, item.get("box"))
            if conv.ok and conv.label is not None:
                item["label"] = conv.label
                if conv.label in mapping.new_classes:
                    item["class_id"] = mapping.new_classes.index(conv.label)
            elif conv.status == "review":
                review = True
    return out, review


def convert_feedback(
    fb: dict[str, Any], predicted: str | None, box: Any, mapping: LabelMapping
) -> tuple[dict[str, Any] | None, str]:
    """Feedback given under the old ontology, converted: (new feedback, "") or (None, why)."""
    if fb.get("kind") == "correct" and isinstance(fb.get("label"), str):
        conv = mapping.convert(fb["label"], box)
        if conv.ok:
            return {**fb, "label": conv.label}, ""
        return None, f"correction to {mapping.describe(fb['label'])}"
    if predicted is not None and predicted in mapping.old_classes:
        conv = mapping.convert(predicted, box)
        if not conv.ok:
            return None, f"confirmation of {mapping.describe(predicted)}"
    return dict(fb), ""


def remap_record(
    rec: SampleRecord, mapping: LabelMapping, to_version: int
) -> tuple[SampleRecord, str | None]:
    """``rec`` under the new ontology, and why its feedback was refused (None: it was not)."""
    prediction, review = remap_prediction(rec.prediction, mapping)
    shadow, _ = remap_prediction(rec.shadow_prediction, mapping)
    extra = dict(rec.extra)
    feedback = rec.feedback
    refused: str | None = None
    if feedback is not None:
        item = feedback_item(rec.prediction, feedback.item)
        label = item.get("label")
        new_fb, why = convert_feedback(
            feedback.to_dict(), label if isinstance(label, str) else None, item.get("box"), mapping
        )
        if new_fb is None:
            refused = why
            extra["refused_feedback"] = {**feedback.to_dict(), "reason": why}
            feedback = None
            review = True
        else:
            feedback = Feedback.from_dict(new_fb)
    if review:
        extra["needs_review"] = True
    new = replace(
        rec,
        prediction=prediction,
        shadow_prediction=shadow,
        feedback=feedback,
        extra=extra,
        ontology_version=to_version,
    )
    return new, refused


def remap_store(
    store: SampleStore, outbox: FeedbackOutbox | None, old: Ontology, new: Ontology
) -> RemapReport | None:
    """Remap every record (and the outbox) from ontology ``old`` to ``new``. None when there
    is nothing to do. Raises StoreError on a storage failure (records done so far stay done:
    each one is rewritten atomically and a second call carries on)."""
    mapping = mapping_for(old, new)
    if mapping is None:
        return None
    report = RemapReport(old.version, new.version)
    if not mapping.identity():
        # One pass over the records' meta (no images) finds those still at the old version.
        stale = [
            r.id
            for r in store.top(1 << 62, state=None, with_image=False)
            if r.ontology_version == old.version
        ]
        for sample_id in stale:
            refused: list[str] = []

            def fn(rec: SampleRecord) -> SampleRecord | None:
                if rec.ontology_version != old.version:
                    return None
                out, why = remap_record(rec, mapping, new.version)
                if why is not None:
                    refused.append(why)  # noqa: B023
                return out

            done = store.rewrite(sample_id, fn)
            if done is None:
                continue
            report.records += 1
            report.needs_review += bool(done.extra.get("needs_review"))
            if refused:
                report.feedback_refused.append((sample_id, refused[0]))
            elif done.feedback is not None:
                report.feedback_converted += 1
    if outbox is not None:
        report.outbox_dropped = _remap_outbox(outbox, mapping, report)
    for sid, why in report.feedback_refused[:_MAX_LOGGED]:
        log.warning("ontology v%s: feedback on %s refused: %s", new.version, sid, why)
    log.info("ontology v%s -> v%s: %s", old.version, new.version, report.to_dict())
    return report


def _remap_outbox(outbox: FeedbackOutbox, mapping: Mapping, report: RemapReport) -> int:
    predicted: dict[str, list[str]] = {}

    def sent_fn(entry: dict[str, Any]) -> dict[str, Any]:
        labels = [str(x) for x in entry.get("labels") or []]
        out = []
        for lbl in labels:
            conv = mapping.convert(lbl) if lbl in mapping.old_classes else None
            out.append(conv.label if conv is not None and conv.ok and conv.label else lbl)
        if out == labels:
            return entry
        report.outbox_remapped += 1
        return {**entry, "labels": out, "labels_before_remap": labels}

    def queued_fn(sample_id: str, fb: dict[str, Any]) -> dict[str, Any] | None:
        labels = predicted.get(sample_id) or []
        raw_item = fb.get("item")
        i = raw_item if isinstance(raw_item, int) else 0
        pred = labels[i] if 0 <= i < len(labels) else None
        new, why = convert_feedback(fb, pred, None, mapping)
        if new is None:
            report.feedback_refused.append((sample_id, f"queued {why}"))
        return new

    for sid in outbox.ids():
        s = outbox.sent(sid)
        if s is not None:
            predicted[sid] = list(s.labels)
    return outbox.rewrite_all(sent_fn, queued_fn)
