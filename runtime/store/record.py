"""The sample record: what a device keeps of a frame that may teach the next model.

Records are time-ordered by ``id`` (``<unix-ns as 16 hex>-<8 hex random>``), carry the JPEG
of the frame, the production prediction (and the shadow one if a candidate ran), the scores
the sampling strategies gave, the combined ``priority``, any corrective feedback, and the upload
state. ``to_meta`` is the JSON part the uploader sends beside the image.
"""

from __future__ import annotations

import os
import time
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
        return cls(
            kind=str(d["kind"]),
            label=d.get("label"),
            who=str(d.get("who", "")),
            when=float(d.get("when", 0.0)),
            bundle_version=int(d.get("bundle_version", 0)),
            item=d.get("item"),
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
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], image: bytes) -> SampleRecord:
        fb = meta.get("feedback")
        return cls(
            id=str(meta["id"]),
            device_id=str(meta["device_id"]),
            created=float(meta["created"]),
            frame_id=str(meta["frame_id"]),
            bundle=str(meta["bundle"]),
            bundle_version=int(meta["bundle_version"]),
            ontology_version=int(meta["ontology_version"]),
            image=image,
            image_format=str(meta.get("image_format", "jpeg")),
            prediction=dict(meta["prediction"]),
            scores={str(k): float(v) for k, v in meta.get("scores", {}).items()},
            priority=float(meta["priority"]),
            shadow_prediction=meta.get("shadow_prediction"),
            feedback=Feedback.from_dict(fb) if fb else None,
            upload_state=str(meta.get("upload_state", "pending")),
            extra=dict(meta.get("extra", {})),
        )
