"""The output of a pipeline: one :class:`Prediction` per frame.

Every stage yields a list of :class:`Item`. A whole-frame classifier yields one item without a
box; a detector yields one item per kept box; a ``for_each`` stage yields one item per parent
detection, with ``parent`` set to that detection's index in the parent stage. Scores are the
post-processed values (softmax probabilities, sigmoid scores); ``scores`` keeps the full vector
where the head has one, so uncertainty can be computed downstream.

The JSON form (``to_dict`` / ``from_dict``) is stable: it is what the results sink writes, what
the sample store keeps, what golden health checks compare, and what ``leanloop infer --json``
prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Item", "Prediction", "StageResult"]


class Item:
    """One result of one stage: a class (and box for detections).

    A plain class with ``__slots__`` rather than a dataclass: a frame builds several, and
    the full score vector may be left to be built on first read (:meth:`with_lazy_scores`).
    Items compare equal when every field does.
    """

    __slots__ = (
        "_lazy_scores",
        "_scores",
        "box",
        "class_id",
        "keypoints",
        "label",
        "parent",
        "score",
        "top_k",
    )

    def __init__(
        self,
        class_id: int,
        label: str,
        score: float,
        box: tuple[float, float, float, float] | None = None,
        scores: list[float] | None = None,
        parent: int | None = None,
        top_k: list[tuple[str, float]] | None = None,
        keypoints: list[tuple[float, float]] | None = None,
    ) -> None:
        self.class_id = class_id
        self.label = label
        self.score = score
        self.box = box  # x1, y1, x2, y2 in frame pixels
        self._scores = scores  # full score vector where the head has one
        self._lazy_scores: Callable[[], list[float]] | None = None
        self.parent = parent  # index of the parent detection for for_each stages
        self.top_k: list[tuple[str, float]] = [] if top_k is None else top_k
        self.keypoints = keypoints  # regressed (x, y) in frame pixels

    @classmethod
    def with_lazy_scores(
        cls,
        class_id: int,
        label: str,
        score: float,
        top_k: list[tuple[str, float]],
        scores: Callable[[], list[float]],
    ) -> Item:
        """An item whose full score vector is made by ``scores()`` when first read.

        A 1000-class head's vector costs more to turn into Python floats than the rest of its
        decoding; most frames are never asked for it."""
        item = cls(class_id, label, score, top_k=top_k)
        item._lazy_scores = scores
        return item

    @property
    def scores(self) -> list[float] | None:
        """The full score vector where the head has one (softmax probabilities, ...)."""
        if self._lazy_scores is not None:
            self._scores, self._lazy_scores = self._lazy_scores(), None
        return self._scores

    @scores.setter
    def scores(self, value: list[float] | None) -> None:
        self._scores, self._lazy_scores = value, None

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.class_id,
            self.label,
            self.score,
            self.box,
            self.scores,
            self.parent,
            self.top_k,
            self.keypoints,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Item):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaced

    def __repr__(self) -> str:
        names = ("class_id", "label", "score", "box", "scores", "parent", "top_k", "keypoints")
        return (
            "Item("
            + ", ".join(f"{n}={v!r}" for n, v in zip(names, self._fields(), strict=True))
            + ")"
        )

    def __reduce__(self) -> tuple[type[Item], tuple[Any, ...]]:
        # copy/deepcopy/pickle see the plain fields, the score vector made.
        return Item, self._fields()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"class_id": self.class_id, "label": self.label, "score": self.score}
        if self.box is not None:
            d["box"] = [round(float(v), 3) for v in self.box]
        if self.scores is not None:
            d["scores"] = [float(s) for s in self.scores]
        if self.parent is not None:
            d["parent"] = self.parent
        if self.top_k:
            d["top_k"] = [[lbl, float(s)] for lbl, s in self.top_k]
        if self.keypoints is not None:
            d["keypoints"] = [[round(float(x), 3), round(float(y), 3)] for x, y in self.keypoints]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Item:
        box = d.get("box")
        return cls(
            class_id=int(d["class_id"]),
            label=str(d["label"]),
            score=float(d["score"]),
            box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])) if box else None,
            scores=[float(s) for s in d["scores"]] if d.get("scores") is not None else None,
            parent=int(d["parent"]) if d.get("parent") is not None else None,
            top_k=[(str(a), float(b)) for a, b in d.get("top_k", [])],
            keypoints=[(float(x), float(y)) for x, y in d["keypoints"]]
            if d.get("keypoints") is not None
            else None,
        )


@dataclass
class StageResult:
    """All items of one stage for one frame, and the stage's wall time."""

    stage: str
    kind: str  # "classification" or "detection"
    items: list[Item]
    latency_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "items": [i.to_dict() for i in self.items],
            "latency_ms": round(self.latency_ms, 3),
        }

    @classmethod
    def from_dict(cls, stage: str, d: dict[str, Any]) -> StageResult:
        return cls(
            stage=stage,
            kind=str(d["kind"]),
            items=[Item.from_dict(i) for i in d["items"]],
            latency_ms=float(d.get("latency_ms", 0.0)),
        )


@dataclass
class Prediction:
    """Everything the pipeline says about one frame."""

    frame_id: str
    stages: dict[str, StageResult] = field(default_factory=dict)
    error: str | None = None  # set when the frame could not be processed (bad frame)
    bundle: str = ""
    bundle_version: int = 0
    ontology_version: int = 0
    latency_ms: float = 0.0
    width: int = 0
    height: int = 0
    # Set only on a copy the shadow worker made: how a candidate bundle's output on the same
    # frame compared with this one, e.g. {"disagreement": 0.0..1.0, "candidate_version": 3,
    # ...}. The sampling strategy "disagreement" reads ``shadow["disagreement"]``.
    shadow: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def final_items(self) -> list[Item]:
        """Items of the last stage: what the pipeline concludes (e.g. the digit classes)."""
        if not self.stages:
            return []
        return list(self.stages.values())[-1].items

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "frame_id": self.frame_id,
            "bundle": self.bundle,
            "bundle_version": self.bundle_version,
            "ontology_version": self.ontology_version,
            "latency_ms": round(self.latency_ms, 3),
            "size": [self.width, self.height],
            "stages": {k: v.to_dict() for k, v in self.stages.items()},
        }
        if self.error is not None:
            d["error"] = self.error
        if self.shadow is not None:
            d["shadow"] = self.shadow
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prediction:
        size = d.get("size", [0, 0])
        return cls(
            frame_id=str(d["frame_id"]),
            stages={k: StageResult.from_dict(k, v) for k, v in d.get("stages", {}).items()},
            error=d.get("error"),
            bundle=str(d.get("bundle", "")),
            bundle_version=int(d.get("bundle_version", 0)),
            ontology_version=int(d.get("ontology_version", 0)),
            latency_ms=float(d.get("latency_ms", 0.0)),
            width=int(size[0]),
            height=int(size[1]),
            shadow=dict(d["shadow"]) if isinstance(d.get("shadow"), dict) else None,
        )
