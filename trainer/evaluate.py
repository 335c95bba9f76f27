"""Measure trained networks the way a device would run them, on frames with ground truth.

Inputs go through the device pre-processing (:mod:`trainer.stages` specs); the detector's
``[1, 5, 144]`` YOLOv8-layout output is decoded here with a score threshold and class-agnostic
NMS, mirroring the pipeline's ``yolo_v8`` post-processing. Two numbers matter for the demo:

* classifier crop accuracy: crops taken at the *true* boxes, arg-max class right;
* detector recall at IoU 0.5: true boxes matched one-to-one by a detection (and its precision).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from trainer.models import DigitClassifier, DigitDetector
from trainer.stages import DETECTOR_POST
from trainer.train import classifier_input, detector_input

__all__ = ["FrameTruth", "box_iou", "decode_yolo_v8", "detect", "evaluate"]

Box = tuple[float, float, float, float]


class FrameTruth(Protocol):
    """Anything with an image, true boxes and labels (``data.Frame``, ``AnnotatedFrame``)."""

    image: np.ndarray
    boxes: list[Box]
    labels: list[int]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def decode_yolo_v8(
    output: np.ndarray, score_threshold: float, nms_iou: float
) -> list[tuple[Box, float]]:
    """``[5, N]`` (cx, cy, w, h, score) → boxes ``(x1, y1, x2, y2)`` with scores, after NMS."""
    cx, cy, w, h, score = output
    keep = np.flatnonzero(score >= score_threshold)
    keep = keep[np.argsort(-score[keep], kind="stable")]
    chosen: list[tuple[Box, float]] = []
    for i in keep:
        box = (
            float(cx[i] - w[i] / 2),
            float(cy[i] - h[i] / 2),
            float(cx[i] + w[i] / 2),
            float(cy[i] + h[i] / 2),
        )
        if all(box_iou(box, other) <= nms_iou for other, _ in chosen):
            chosen.append((box, float(score[i])))
    return chosen


@torch.no_grad()
def detect(
    detector: DigitDetector,
    image: np.ndarray,
    score_threshold: float = DETECTOR_POST.score_threshold,
    nms_iou: float = DETECTOR_POST.nms_iou,
) -> list[tuple[Box, float]]:
    """Detections in frame pixels for one BGR frame."""
    x, sx, sy = detector_input(image)
    out = detector.eval()(torch.from_numpy(x[None])).numpy()[0]
    return [
        ((b[0] / sx, b[1] / sy, b[2] / sx, b[3] / sy), s)
        for b, s in decode_yolo_v8(out, score_threshold, nms_iou)
    ]


@torch.no_grad()
def evaluate(
    detector: DigitDetector, classifier: DigitClassifier, frames: Sequence[FrameTruth]
) -> dict[str, float]:
    """Classifier crop accuracy, detector recall/precision at IoU 0.5 over ``frames``."""
    classifier.eval()
    crops, truth = [], []
    hits = n_true = n_pred = 0
    for fr in frames:
        for box, label in zip(fr.boxes, fr.labels, strict=True):
            x = classifier_input(fr.image, box)
            if x is not None:
                crops.append(x)
                truth.append(label)
        dets = [b for b, _ in detect(detector, fr.image)]
        n_pred += len(dets)
        n_true += len(fr.boxes)
        used: set[int] = set()
        for box in fr.boxes:
            best, best_iou = -1, 0.5
            for j, d in enumerate(dets):
                iou = box_iou(box, d)
                if j not in used and iou >= best_iou:
                    best, best_iou = j, iou
            if best >= 0:
                used.add(best)
                hits += 1
    acc = float("nan")
    if crops:
        logits = classifier(torch.from_numpy(np.stack(crops)))
        acc = float((logits.argmax(1).numpy() == np.asarray(truth)).mean())
    return {
        "classifier_accuracy": acc,
        "detector_recall": hits / n_true if n_true else float("nan"),
        "detector_precision": hits / n_pred if n_pred else float("nan"),
        "digits": float(n_true),
    }
