"""The sample record: what a device keeps of a frame that may teach the next model.

Records are time-ordered by ``id`` (``<unix-ns as 16 hex>-<8 hex random>``), carry the encoded
frame (JPEG or PNG), the production prediction (and the shadow one if a candidate ran), the scores
the sampling strategies gave, the combined ``priority``, any corrective feedback, and the upload
state. ``random_slice`` flags a record kept uniformly at random (not for its score) so the hub
can evaluate on an unbiased sample. ``to_meta`` is the JSON part the uploader sends beside the
image. :meth:`SampleRecord.final_class` is the class quotas count it under.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Feedback", "SampleRecord", "new_sample_id"]


def new_sample_id(now_ns: int | None = None) -> str:
    """A sortable, unique id: 16 hex digits of time in ns, a dash, 8 random hex digits."""
    t = time.time_ns() if now_ns is None else now_ns
    return f"{t:016x}-{os.urandom(4).hex()}"


@dataclass
class Feedback:
    """A human's word on a stored prediction."""

    kind: str  # "confirm" or "correct"
    label: str | None  # the corrected label (None for confirm)
    who: str
    when: float
    bundle_version: int
    item: int | None = None  # which final-stage item it is about (None: the whole frame)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "label": self.label,
            "who": self.who,
            "when": self.when,
            "bundle_version": self.bundle_version,
            "item": self.item,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Feedback:
        if not isinstance(d, dict):
            raise ValueError("feedback must be an object")
        item = d.get("item")
        return cls(
            kind=str(d["kind"]),
            label=d.get("label"),
            who=str(d.get("who", "")),
            when=_finite(d.get("when", 0.0), "feedback.when"),
            bundle_version=_int(d.get("bundle_version", 0), "feedback.bundle_version"),
            item=None if item is None else _int(item, "feedback.item"),
        )


@dataclass
class SampleRecord:
    """One stored sample."""

    id: str
    device_id: str
    created: float  # unix seconds
    frame_id: str
    bundle: str
    bundle_version: int
    ontology_version: int
    image: bytes  # encoded image
    image_format: str  # "jpeg" or "png"
    prediction: dict[str, Any]  # Prediction.to_dict()
    scores: dict[str, float]  # strategy name -> score in [0, 1]
    priority: float
    shadow_prediction: dict[str, Any] | None = None
    feedback: Feedback | None = None
    upload_state: str = "pending"  # "pending" | "uploaded"
    extra: dict[str, Any] = field(default_factory=dict)
    random_slice: bool = False  # kept uniformly at random, for unbiased evaluation

    def final_class(self) -> str:
        """The frame's class for quotas: the most common label among the final stage's items
        (ties: the higher summed score, then the name), with a correction applied; "" when
        the frame has no items."""
        items = _final_items(self.prediction)
        labels = [str(it.get("label", "")) for it in items]
        fb = self.feedback
        if fb is not None and fb.kind == "correct" and fb.label:
            if fb.item is None or len(labels) <= 1:
                return fb.label
            if 0 <= fb.item < len(labels):
                labels[fb.item] = fb.label
        if not labels:
            return ""
        counts = Counter(labels)
        mass: dict[str, float] = {}
        for lbl, it in zip(labels, items, strict=True):
            try:
                mass[lbl] = mass.get(lbl, 0.0) + float(it.get("score", 0.0))
            except (TypeError, ValueError):
                mass[lbl] = mass.get(lbl, 0.0)
        return min(counts, key=lambda lbl: (-counts[lbl], -mass.get(lbl, 0.0), lbl))

    def to_meta(self) -> dict[str, Any]:
        """Everything but the image bytes, as JSON-able data."""
        return {
            "id": self.id,
            "device_id": self.device_id,
            "created": self.created,
            "frame_id": self.frame_id,
            "bundle": self.bundle,
            "bundle_version": self.bundle_version,
            "ontology_version": self.ontology_version,
            "image_format": self.image_format,
            "image_size": len(self.image),
            "prediction": self.prediction,
            "shadow_prediction": self.shadow_prediction,
            "scores": self.scores,
            "priority": self.priority,
            "feedback": self.feedback.to_dict() if self.feedback else None,
            "upload_state": self.upload_state,
            "extra": self.extra,
            "random_slice": self.random_slice,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], image: bytes) -> SampleRecord:
        """The record of a meta object (JSON from the store or a device). Raises KeyError for a
        missing field, ValueError for one of the wrong type or out of range."""
        if not isinstance(meta, dict):
            raise ValueError("sample meta must be an object")
        fb = meta.get("feedback")
        shadow = meta.get("shadow_prediction")
        return cls(
            id=str(meta["id"]),
            device_id=str(meta["device_id"]),
            created=_finite(meta["created"], "created"),
            frame_id=str(meta["frame_id"]),
            bundle=str(meta["bundle"]),
            bundle_version=_int(meta["bundle_version"], "bundle_version"),
            ontology_version=_int(meta["ontology_version"], "ontology_version"),
            image=image,
            image_format=str(meta.get("image_format", "jpeg")),
            prediction=_object(meta["prediction"], "prediction"),
            scores={
                str(k): _finite(v, f"scores.{k}")
                for k, v in _object(meta.get("scores", {}), "scores").items()
            },
            priority=_finite(meta["priority"], "priority"),
            shadow_prediction=None if shadow is None else _object(shadow, "shadow_prediction"),
            feedback=Feedback.from_dict(fb) if fb else None,
            upload_state=str(meta.get("upload_state", "pending")),
            extra=_object(meta.get("extra", {}), "extra"),
            random_slice=bool(meta.get("random_slice", False)),
        )


_INT_LIMIT = 1 << 63


def _finite(value: Any, name: str) -> float:
    """A finite float from a JSON number. Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if isinstance(value, int) and abs(value) >= _INT_LIMIT:
        raise ValueError(f"{name} is out of range")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite")
    return out


def _int(value: Any, name: str) -> int:
    """A 64-bit integer from a JSON number. Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    if abs(value) >= _INT_LIMIT:
        raise ValueError(f"{name} is out of range")
    return value


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object")
    return value


def _final_items(prediction: dict[str, Any]) -> list[dict[str, Any]]:
    stages = prediction.get("stages") if isinstance(prediction, dict) else None
    if not isinstance(stages, dict) or not stages:
        return []
    last = list(stages.values())[-1]
    items = last.get("items") if isinstance(last, dict) else None
    return [it for it in items if isinstance(it, dict)] if isinstance(items, list) else []
