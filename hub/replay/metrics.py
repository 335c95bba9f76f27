"""Metrics of one bundle on a set of frames, as sums of per-frame counts (so they bootstrap).

Each frame's outcome is matched to its truth once (:func:`frame_counts`): whole-frame labels
compare the best item's label with the true label; boxes are matched greedily by score at the
spec's IoU, class-agnostically for top-1 accuracy (a box found but named wrong is a wrong
answer) and class-aware for mAP@0.5. Every ratio metric is ``sum(numerator) / sum(denominator)``
over frames, so a resample of frames is a weighted sum (:meth:`CountTable.values`), and the
paired bootstrap weighs the candidate's and the baseline's rows with the same weights.

Metrics (``hub.replay.spec.METRIC_DIRECTIONS``):

- ``top1_accuracy``: true objects whose matched item has the true label / true objects;
- ``precision:<c>`` / ``recall:<c>``: items named ``c`` that are right / true ``c`` found right;
- ``map50``: mean over classes of VOC all-point average precision at IoU ``iou``;
- ``event_recall``: frames with a true event class that alerted / frames with an event;
- ``false_alarm_rate``: frames without an event that alerted / frames without an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hub.replay.frames import Box, HistoryFrame, Outcome, PredItem, TruthObject

__all__ = [
    "CountTable",
    "box_iou",
    "build_counts",
    "metric_names",
    "object_pairs",
    "resample_weights",
]


def box_iou(a: Box, b: Box) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _match(items: Sequence[PredItem], truth: Sequence[Box], iou: float) -> dict[int, int]:
    """Greedy one-to-one matching by score: truth index -> item index."""
    order = sorted(range(len(items)), key=lambda i: -items[i].score)
    taken: dict[int, int] = {}
    for i in order:
        box = items[i].box
        if box is None:
            continue
        best, best_iou = -1, iou
        for t, tbox in enumerate(truth):
            if t in taken:
                continue
            v = box_iou(box, tbox)
            if v >= best_iou:
                best, best_iou = t, v
        if best >= 0:
            taken[best] = i
    return taken


def object_pairs(
    frame: HistoryFrame, out: Outcome, iou: float
) -> list[tuple[TruthObject, PredItem | None]]:
    """Every true object with the item the bundle gave it (None: nothing matched).

    A whole-frame label is answered by the best-scored item; boxes by greedy IoU matching.
    """
    whole = [t for t in frame.truth if t.box is None]
    boxed = [t for t in frame.truth if t.box is not None]
    pairs: list[tuple[TruthObject, PredItem | None]] = []
    if whole:
        pairs.append((whole[0], max(out.items, key=lambda i: i.score, default=None)))
    if boxed:
        m = _match(out.items, [t.box for t in boxed if t.box], iou)
        pairs += [(t, out.items[m[k]] if k in m else None) for k, t in enumerate(boxed)]
    return pairs


def _frame_pairs(frame: HistoryFrame, out: Outcome, iou: float) -> list[tuple[str, str | None]]:
    """(true label, the label the bundle gave it or None) for every true object."""
    return [(t.label, i.label if i else None) for t, i in object_pairs(frame, out, iou)]


def _predicted_labels(frame: HistoryFrame, out: Outcome) -> list[str]:
    """The labels a bundle asserted: its best item for a whole-frame truth, else every item."""
    if any(t.box is None for t in frame.truth):
        best = max(out.items, key=lambda i: i.score, default=None)
        return [best.label] if best else []
    return [i.label for i in out.items]


def metric_names(classes: Sequence[str], events: bool, boxes: bool) -> list[str]:
    """Every metric computable for this ontology and history."""
    names = ["top1_accuracy"]
    if boxes:
        names.append("map50")
    if events:
        names += ["event_recall", "false_alarm_rate"]
    for c in classes:
        names += [f"precision:{c}", f"recall:{c}"]
    return names


@dataclass
class CountTable:
    """Per-frame counts of one bundle on N frames, and the detections for mAP."""

    classes: list[str]
    columns: dict[str, int]
    counts: np.ndarray  # N x K float64
    ratios: dict[str, tuple[str, str]]  # metric -> (numerator column, denominator column)
    det_frame: dict[str, np.ndarray]  # class -> frame index of each detection, by score desc
    det_tp: dict[str, np.ndarray]  # class -> 1.0 if that detection matched a true box
    has_boxes: bool

    @property
    def n(self) -> int:
        return int(self.counts.shape[0])

    def subset(self, rows: np.ndarray) -> CountTable:
        """The same table on the frames ``rows`` (indices, ascending)."""
        remap = np.full(self.n, -1, np.int64)
        remap[rows] = np.arange(len(rows))
        det_frame, det_tp = {}, {}
        for c, f in self.det_frame.items():
            keep = remap[f] >= 0
            det_frame[c], det_tp[c] = remap[f][keep], self.det_tp[c][keep]
        return CountTable(
            self.classes, self.columns, self.counts[rows], self.ratios, det_frame, det_tp,
            self.has_boxes,
        )  # fmt: skip

    def values(self, metric: str, weights: np.ndarray) -> np.ndarray:
        """The metric under each row of ``weights`` (B x N frame weights); nan where undefined."""
        if metric == "map50":
            return self._map(weights)
        num, den = self.ratios[metric]
        sums = weights @ self.counts[:, [self.columns[num], self.columns[den]]]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(sums[:, 1] > 0, sums[:, 0] / sums[:, 1], np.nan)

    def value(self, metric: str) -> float:
        """The metric on all frames once (nan where undefined)."""
        return float(self.values(metric, np.ones((1, self.n)))[0])

    def _map(self, weights: np.ndarray) -> np.ndarray:
        aps = []
        for c in self.classes:
            npos = weights @ self.counts[:, self.columns[f"truth:{c}"]]
            frames = self.det_frame.get(c)
            if frames is None or len(frames) == 0:
                aps.append(np.where(npos > 0, 0.0, np.nan))
                continue
            w = weights[:, frames]
            tp = np.cumsum(w * self.det_tp[c], axis=1)
            fp = np.cumsum(w * (1.0 - self.det_tp[c]), axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-12), 0.0)
                rec = tp / np.maximum(npos, 1e-12)[:, None]
            env = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
            drec = np.diff(np.concatenate([np.zeros((len(rec), 1)), rec], axis=1), axis=1)
            aps.append(np.where(npos > 0, (drec * env).sum(axis=1), np.nan))
        stack = np.vstack(aps) if aps else np.full((1, len(weights)), np.nan)
        with np.errstate(invalid="ignore"):
            all_nan = np.all(np.isnan(stack), axis=0)
            safe = np.where(np.isnan(stack), 0.0, stack)
            count = np.sum(~np.isnan(stack), axis=0)
            return np.where(all_nan, np.nan, safe.sum(axis=0) / np.maximum(count, 1))


def build_counts(
    frames: Sequence[HistoryFrame],
    outcomes: Sequence[Outcome],
    classes: Sequence[str],
    event_classes: Sequence[str] = (),
    alert_threshold: float = 0.5,
    iou: float = 0.5,
) -> CountTable:
    """Match every outcome to its frame's truth and tabulate the counts the metrics sum."""
    cols = ["objects", "correct", "events", "alerted_events", "non_events", "false_alarms"]
    for c in classes:
        cols += [f"tp:{c}", f"pred:{c}", f"truth:{c}"]
    columns = {name: k for k, name in enumerate(cols)}
    counts = np.zeros((len(frames), len(cols)))
    dets: dict[str, list[tuple[float, int, float]]] = {c: [] for c in classes}
    has_boxes = any(t.box is not None for f in frames for t in f.truth)
    events = set(event_classes)
    for n, (frame, out) in enumerate(zip(frames, outcomes, strict=True)):
        row = counts[n]
        pairs = _frame_pairs(frame, out, iou)
        for truth, got in pairs:
            row[columns["objects"]] += 1
            row[columns["correct"]] += truth == got
            if f"truth:{truth}" in columns:
                row[columns[f"truth:{truth}"]] += 1
                row[columns[f"tp:{truth}"]] += truth == got
        for label in _predicted_labels(frame, out):
            if f"pred:{label}" in columns:
                row[columns[f"pred:{label}"]] += 1
        if events:
            is_event = any(t.label in events for t in frame.truth)
            alerted = any(i.label in events and i.score >= alert_threshold for i in out.items)
            row[columns["events" if is_event else "non_events"]] += 1
            row[columns["alerted_events" if is_event else "false_alarms"]] += alerted
        if has_boxes:
            _collect_detections(frame, out, iou, dets, n)
    ratios = {"top1_accuracy": ("correct", "objects")}
    ratios["event_recall"] = ("alerted_events", "events")
    ratios["false_alarm_rate"] = ("false_alarms", "non_events")
    for c in classes:
        ratios[f"precision:{c}"] = (f"tp:{c}", f"pred:{c}")
        ratios[f"recall:{c}"] = (f"tp:{c}", f"truth:{c}")
    det_frame: dict[str, np.ndarray] = {}
    det_tp: dict[str, np.ndarray] = {}
    for c, found in dets.items():
        found.sort(key=lambda d: (-d[0], d[1]))
        det_frame[c] = np.array([d[1] for d in found], np.int64)
        det_tp[c] = np.array([d[2] for d in found], np.float64)
    return CountTable(list(classes), columns, counts, ratios, det_frame, det_tp, has_boxes)


def _collect_detections(
    frame: HistoryFrame,
    out: Outcome,
    iou: float,
    dets: dict[str, list[tuple[float, int, float]]],
    n: int,
) -> None:
    """Class-aware matching for mAP: each detection is a (score, frame, tp) of its class."""
    for c in dets:
        items = [i for i in out.items if i.label == c and i.box is not None]
        truth = [t.box for t in frame.truth if t.label == c and t.box is not None]
        m = _match(items, truth, iou)
        hit = set(m.values())
        dets[c] += [(it.score, n, 1.0 if k in hit else 0.0) for k, it in enumerate(items)]


def resample_weights(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """B x N bootstrap weights: how often each frame is drawn in each resample."""
    idx = rng.integers(0, n, size=(resamples, n)) + (np.arange(resamples) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)
