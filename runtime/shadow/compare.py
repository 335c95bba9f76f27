"""Compare a candidate's prediction with production's on the same frame, and add it up.

Pure functions and plain data, no I/O: the shadow runner calls :func:`compare` once per frame
both models saw, then :meth:`ShadowStats.add` folds the result into the persisted aggregates.

What "the same answer" means depends on the final stage's items:

- **whole-frame classification** (items without a box): top-1 agreement — the frame agrees when
  the first item's label is the same;
- **boxes** (detections, or a ``for_each`` classifier whose items carry the parent's box):
  boxes are matched greedily, highest IoU first, among pairs with IoU ≥ the threshold; a
  matched pair agrees when its labels are equal; a production box with no partner is *missed*
  by the candidate, a candidate box with no partner is *extra*. The frame agrees when every box
  is matched and every matched pair agrees.

Every matched pair (and every missed/extra box, against the label ``-``) goes into a flip
matrix ``production label -> candidate label -> count`` (the diagonal is agreement), every
matched pair's ``candidate score - production score`` into a histogram, and both models'
per-stage and total latencies into latency histograms. The per-frame ``disagreement`` score is
the fraction of units (matched pairs + missed + extra) that do not agree, in [0, 1]: it is what
the sample store's ``disagreement`` strategy reads from ``Prediction.shadow``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runtime.pipeline.prediction import Item, Prediction

__all__ = [
    "CONFIDENCE_EDGES",
    "LATENCY_EDGES_MS",
    "NONE_LABEL",
    "FrameComparison",
    "Histogram",
    "ShadowStats",
    "compare",
    "iou",
    "match_boxes",
]

NONE_LABEL = "-"
"""Flip-matrix label of "no box": a missed box is ``label -> -``, an extra one ``- -> label``."""

CONFIDENCE_EDGES = [-0.5, -0.2, -0.1, -0.05, -0.01, 0.01, 0.05, 0.1, 0.2, 0.5]
"""Bin edges of the candidate-minus-production confidence histogram (11 bins)."""

LATENCY_EDGES_MS = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
"""Bin edges of the latency histograms, in milliseconds (11 bins)."""

Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``x1, y1, x2, y2`` boxes (0 for empty boxes)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(
    prod: list[Item], cand: list[Item], threshold: float
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Greedy IoU matching: (matched (prod i, cand j) pairs, missed prod i, extra cand j).

    Pairs are taken highest IoU first (ties: lower indices first) among those with
    IoU ≥ ``threshold``; each box is used at most once.
    """
    cands = []
    for i, p in enumerate(prod):
        for j, c in enumerate(cand):
            if p.box is None or c.box is None:
                continue
            v = iou(p.box, c.box)
            if v >= threshold and v > 0:
                cands.append((-v, i, j))
    cands.sort()
    used_p: set[int] = set()
    used_c: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for _, i, j in cands:
        if i in used_p or j in used_c:
            continue
        used_p.add(i)
        used_c.add(j)
        pairs.append((i, j))
    pairs.sort()
    missed = [i for i in range(len(prod)) if i not in used_p]
    extra = [j for j in range(len(cand)) if j not in used_c]
    return pairs, missed, extra


@dataclass
class FrameComparison:
    """How the two predictions of one frame compare."""

    agree: bool
    disagreement: float  # fraction of units that disagree, in [0, 1]
    kind: str  # "classification" (top-1) or "boxes"
    flips: list[tuple[str, str]]  # (production label, candidate label), one per unit
    confidence_deltas: list[float]  # candidate - production score, per matched pair
    matched: int = 0
    label_agree: int = 0
    missed: int = 0
    extra: int = 0
    candidate_labels: list[str | None] = field(default_factory=list)  # per production item
    latency: dict[str, dict[str, float]] = field(default_factory=dict)

    def shadow_field(self, candidate: str, version: int) -> dict[str, Any]:
        """The ``Prediction.shadow`` dict for the production copy offered to the store."""
        return {
            "disagreement": round(self.disagreement, 6),
            "candidate": candidate,
            "candidate_version": version,
            "candidate_labels": self.candidate_labels,
            "missed": self.missed,
            "extra": self.extra,
        }


def _latencies(pred: Prediction) -> dict[str, float]:
    out = {name: st.latency_ms for name, st in pred.stages.items()}
    out["total"] = pred.latency_ms
    return out


def compare(prod: Prediction, cand: Prediction, iou_threshold: float = 0.5) -> FrameComparison:
    """Compare two successful predictions of one frame (see the module story)."""
    p_items, c_items = prod.final_items(), cand.final_items()
    latency = {"production": _latencies(prod), "candidate": _latencies(cand)}
    boxed = any(i.box is not None for i in p_items) or any(i.box is not None for i in c_items)
    if not boxed:
        p = p_items[0] if p_items else None
        c = c_items[0] if c_items else None
        pl = p.label if p else NONE_LABEL
        cl = c.label if c else NONE_LABEL
        agree = pl == cl
        top1_delta = [c.score - p.score] if p is not None and c is not None else []
        return FrameComparison(
            agree=agree,
            disagreement=0.0 if agree else 1.0,
            kind="classification",
            flips=[(pl, cl)] if p is not None or c is not None else [],
            confidence_deltas=top1_delta,
            matched=int(p is not None and c is not None),
            label_agree=int(agree and p is not None),
            missed=int(p is not None and c is None),
            extra=int(p is None and c is not None),
            candidate_labels=[c.label if c else None] if p is not None else [],
            latency=latency,
        )
    pairs, missed, extra = match_boxes(p_items, c_items, iou_threshold)
    flips: list[tuple[str, str]] = []
    deltas: list[float] = []
    cand_labels: list[str | None] = [None] * len(p_items)
    same = 0
    for i, j in pairs:
        flips.append((p_items[i].label, c_items[j].label))
        deltas.append(c_items[j].score - p_items[i].score)
        cand_labels[i] = c_items[j].label
        same += int(p_items[i].label == c_items[j].label)
    flips += [(p_items[i].label, NONE_LABEL) for i in missed]
    flips += [(NONE_LABEL, c_items[j].label) for j in extra]
    units = len(pairs) + len(missed) + len(extra)
    bad = units - same
    return FrameComparison(
        agree=bad == 0,
        disagreement=bad / units if units else 0.0,
        kind="boxes",
        flips=flips,
        confidence_deltas=deltas,
        matched=len(pairs),
        label_agree=same,
        missed=len(missed),
        extra=len(extra),
        candidate_labels=cand_labels,
        latency=latency,
    )


class Histogram(BaseModel):
    """Counts per bin: bin ``k`` holds values in ``[edges[k-1], edges[k])``; plus sum and n."""

    model_config = ConfigDict(extra="forbid")
    edges: list[float]
    counts: list[int]
    total: float = 0.0
    n: int = 0

    @classmethod
    def empty(cls, edges: list[float]) -> Histogram:
        return cls(edges=list(edges), counts=[0] * (len(edges) + 1))

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_right(self.edges, value)] += 1
        self.total += value
        self.n += 1

    def merge(self, other: Histogram) -> None:
        """Add another histogram with the same edges (raises ValueError otherwise)."""
        if other.edges != self.edges:
            raise ValueError("histograms with different edges cannot be merged")
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
        self.n += other.n

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def quantile(self, q: float) -> float | None:
        """The upper edge of the bin holding the ``q`` quantile (None when empty)."""
        if not self.n:
            return None
        need = q * self.n
        seen = 0
        for k, c in enumerate(self.counts):
            seen += c
            if seen >= need and c:
                return self.edges[k] if k < len(self.edges) else float("inf")
        return float("inf")


class ShadowStats(BaseModel):
    """What every compared frame added up to (persisted in ``shadow.json``, sent to the hub)."""

    model_config = ConfigDict(extra="forbid")
    compared: int = Field(default=0, description="frames both models answered")
    agreed: int = Field(default=0, description="frames where the two answers agree")
    matched: int = Field(default=0, description="matched box pairs (or top-1 pairs)")
    label_agree: int = Field(default=0, description="matched pairs with the same label")
    missed: int = Field(default=0, description="production boxes the candidate did not find")
    extra: int = Field(default=0, description="candidate boxes production did not find")
    flip_matrix: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="production label -> candidate label -> count"
    )
    confidence_delta: Histogram = Field(
        default_factory=lambda: Histogram.empty(CONFIDENCE_EDGES),
        description="candidate score - production score per matched pair",
    )
    latency_ms: dict[str, dict[str, Histogram]] = Field(
        default_factory=dict, description="production|candidate -> stage|total -> histogram"
    )

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def add(self, cmp: FrameComparison) -> None:
        self.compared += 1
        self.agreed += int(cmp.agree)
        self.matched += cmp.matched
        self.label_agree += cmp.label_agree
        self.missed += cmp.missed
        self.extra += cmp.extra
        for p, c in cmp.flips:
            row = self.flip_matrix.setdefault(p, {})
            row[c] = row.get(c, 0) + 1
        for d in cmp.confidence_deltas:
            self.confidence_delta.add(d)
        for who, stages in cmp.latency.items():
            hists = self.latency_ms.setdefault(who, {})
            for stage, ms in stages.items():
                hists.setdefault(stage, Histogram.empty(LATENCY_EDGES_MS)).add(ms)

    def merge(self, other: ShadowStats) -> None:
        """Add another device's (or period's) stats into this one."""
        for name in ("compared", "agreed", "matched", "label_agree", "missed", "extra"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for p, row in other.flip_matrix.items():
            mine = self.flip_matrix.setdefault(p, {})
            for c, n in row.items():
                mine[c] = mine.get(c, 0) + n
        self.confidence_delta.merge(other.confidence_delta)
        for who, stages in other.latency_ms.items():
            hists = self.latency_ms.setdefault(who, {})
            for stage, h in stages.items():
                if stage in hists:
                    hists[stage].merge(h)
                else:
                    hists[stage] = h.model_copy(deep=True)

    def flips_only(self) -> dict[str, dict[str, int]]:
        """The off-diagonal part of the flip matrix (where the two models disagree)."""
        out: dict[str, dict[str, int]] = {}
        for p, row in self.flip_matrix.items():
            for c, n in row.items():
                if p != c and n:
                    out.setdefault(p, {})[c] = n
        return out
