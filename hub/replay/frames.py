"""The replay's plain records: a historical frame with its truth and tags, and what a bundle said.

These are the contract between the shells (history dataset, runner) and the pure cores
(metrics, gate, behaviour models, KPIs): no I/O, no numpy, JSON round-trips for the runner's
resumable result files.

A :class:`HistoryFrame` carries the ground truth as objects (a label, with a box when the truth
was drawn as one; a whole-frame label has none), and the tags slices are cut by: device,
cohort, camera, time, ontology version and how the frame was chosen (``random`` for the
device's uniform random slice, ``strategy`` for a sampling strategy's pick: hard cases).
An :class:`Outcome` is one bundle's final items on that frame, or the error that stopped it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Box", "Guess", "HistoryFrame", "Outcome", "PredItem", "TruthObject"]

Box = tuple[float, float, float, float]
Selection = Literal["random", "strategy"]


def _box(v: Any) -> Box | None:
    return None if v is None else (float(v[0]), float(v[1]), float(v[2]), float(v[3]))


@dataclass(frozen=True)
class TruthObject:
    """One true object of a frame: a label, and a box unless it labels the whole frame."""

    label: str
    box: Box | None = None


@dataclass(frozen=True)
class Guess:
    """One ranked guess of a classifier (the chooser offers the first k)."""

    label: str
    score: float


@dataclass(frozen=True)
class PredItem:
    """One final item of a prediction, as the metrics need it."""

    label: str
    score: float
    box: Box | None = None
    top_k: tuple[Guess, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label, "score": self.score}
        if self.box is not None:
            d["box"] = list(self.box)
        if self.top_k:
            d["top_k"] = [[g.label, g.score] for g in self.top_k]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PredItem:
        return cls(
            label=str(d["label"]),
            score=float(d["score"]),
            box=_box(d.get("box")),
            top_k=tuple(Guess(str(a), float(b)) for a, b in d.get("top_k", [])),
        )


@dataclass(frozen=True)
class Outcome:
    """What one bundle concluded on one frame (its final items), or why it could not."""

    items: tuple[PredItem, ...] = ()
    error: str | None = None
    latency_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"items": [i.to_dict() for i in self.items]}
        if self.error is not None:
            d["error"] = self.error
        d["latency_ms"] = round(self.latency_ms, 3)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Outcome:
        return cls(
            items=tuple(PredItem.from_dict(i) for i in d.get("items", [])),
            error=d.get("error"),
            latency_ms=float(d.get("latency_ms", 0.0)),
        )


@dataclass(frozen=True)
class HistoryFrame:
    """A frame of production history with its ground truth and tags."""

    id: str
    truth: tuple[TruthObject, ...]
    time: float = 0.0
    device: str = ""
    cohort: str | None = None
    camera: str | None = None
    selection: Selection = "strategy"
    ontology_version: int = 1
    bundle_version: int = 0
    image_sha256: str | None = None
    feedback: dict[str, Any] | None = None  # the human's recorded word on the device's output
    production: Outcome | None = None  # what the device's own bundle said at the time
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "truth": [
                {"label": t.label, "box": list(t.box) if t.box else None} for t in self.truth
            ],
            "time": self.time,
            "device": self.device,
            "cohort": self.cohort,
            "camera": self.camera,
            "selection": self.selection,
            "ontology_version": self.ontology_version,
            "bundle_version": self.bundle_version,
            "image_sha256": self.image_sha256,
            "feedback": self.feedback,
            "production": self.production.to_dict() if self.production else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HistoryFrame:
        sel = d.get("selection", "strategy")
        return cls(
            id=str(d["id"]),
            truth=tuple(TruthObject(str(t["label"]), _box(t.get("box"))) for t in d["truth"]),
            time=float(d.get("time", 0.0)),
            device=str(d.get("device", "")),
            cohort=d.get("cohort"),
            camera=d.get("camera"),
            selection="random" if sel == "random" else "strategy",
            ontology_version=int(d.get("ontology_version", 1)),
            bundle_version=int(d.get("bundle_version", 0)),
            image_sha256=d.get("image_sha256"),
            feedback=d.get("feedback"),
            production=Outcome.from_dict(d["production"]) if d.get("production") else None,
        )
