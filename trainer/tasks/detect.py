"""Object detection: an FCOS-style network (:class:`trainer.arch.FcosDetector`) whose output the
device decodes as ``yolo_v8``.

Training follows FCOS: a location is positive for a box when it lies inside the box and within
1.5 strides of its centre (the smallest such box wins); class targets are trained with the
sigmoid focal loss (weighted per class when the spec asks), boxes with the GIoU loss on the
positives. Validation decodes, thresholds and runs NMS like the device, matches detections to
truth one-to-one at IoU ≥ 0.5, and reports per-class precision/recall/F1 and a confusion matrix
with a ``background`` row/column (missed boxes / false detections). The metric maximised is the
micro F1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms, box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from runtime.pipeline.graph import PipelineSpec, StageSpec, YoloPost
from trainer.arch import FcosDetector, build_detector
from trainer.datasets.model import Dataset, DatasetError
from trainer.engine import FitResult, class_weights, fit, make_augment, to_tensor
from trainer.spec import ModelSpec, TrainingSpec
from trainer.tasks._common import (
    ExportedNet,
    OnEpoch,
    TaskResult,
    device_pre,
    per_class_report,
    stratified_split,
    uint8_inputs,
)

__all__ = ["BoxSet", "evaluate_detector", "fit_detector", "pipeline", "train"]

BoxSet = tuple[np.ndarray, np.ndarray]
"""Boxes ``K×4`` (x1, y1, x2, y2, input pixels, float32) and class ids ``K`` (int64)."""
NMS_IOU = 0.45
_CENTRE_RADIUS = 1.5


def _targets(
    det: FcosDetector, boxes: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per location: one-hot class target ``[N, C]``, positive mask ``[N]``, box ``[N, 4]``."""
    points: torch.Tensor = det.points  # type: ignore[assignment]
    strides: torch.Tensor = det.strides  # type: ignore[assignment]
    n = points.shape[1]
    onehot = torch.zeros(n, num_classes, device=points.device)
    if len(boxes) == 0:
        return onehot, torch.zeros(n, dtype=torch.bool, device=points.device), torch.zeros(n, 4)
    px, py = points[0][:, None], points[1][:, None]  # N×1
    x1, y1, x2, y2 = boxes.T  # K
    inside = (px > x1) & (px < x2) & (py > y1) & (py < y2)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    r = strides[:, None] * _CENTRE_RADIUS
    near = ((px - cx).abs() < r) & ((py - cy).abs() < r)
    ok = inside & near
    # Tiny boxes may hold no location at all: give them their nearest one.
    nearest = ((px - cx) ** 2 + (py - cy) ** 2).argmin(0)
    ok[nearest, torch.arange(len(boxes))] = True
    area = ((x2 - x1) * (y2 - y1))[None].expand_as(ok).clone()
    area[~ok] = float("inf")
    best_area, best = area.min(1)
    pos = torch.isfinite(best_area)
    onehot[pos, labels[best[pos]]] = 1.0
    return onehot, pos, boxes[best]


def detection_loss(
    det: FcosDetector,
    x: torch.Tensor,
    truth: list[tuple[torch.Tensor, torch.Tensor]],
    weights: torch.Tensor | None,
) -> torch.Tensor:
    """Focal loss on classes + GIoU loss on positive locations, normalised by positives."""
    logits, dists = det.raw(x)
    pred_boxes = det.boxes(dists)  # B×4×N
    cls_t, pos_t, box_t = [], [], []
    for boxes, labels in truth:
        oh, pos, bx = _targets(det, boxes, labels, det.num_classes)
        cls_t.append(oh)
        pos_t.append(pos)
        box_t.append(bx.to(x.device))
    target = torch.stack(cls_t)  # B×N×C
    pos = torch.stack(pos_t)  # B×N
    focal = sigmoid_focal_loss(logits.transpose(1, 2), target, reduction="none")
    if weights is not None:
        focal = focal * weights
    n_pos = max(1.0, float(pos.sum()))
    loss = focal.sum() / n_pos
    if bool(pos.any()):
        pb = pred_boxes.transpose(1, 2)[pos]
        tb = torch.stack(box_t)[pos]
        loss = loss + generalized_box_iou_loss(pb, tb, reduction="mean") * 2.0
    return loss


@torch.no_grad()
def decode(
    out: torch.Tensor, score_threshold: float, nms_iou: float = NMS_IOU
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """YOLOv8-layout ``[B, 4+C, N]`` → per image (boxes xyxy, scores, classes) after NMS,
    as the device's ``yolo_v8`` post-processing does."""
    res = []
    for o in out:
        cxcy, wh, scores = o[0:2].T, o[2:4].T, o[4:].T  # N×2, N×2, N×C
        score, cls = scores.max(1)
        keep = score >= score_threshold
        xyxy = torch.cat([cxcy - wh / 2, cxcy + wh / 2], 1)[keep]
        score, cls = score[keep], cls[keep]
        k = batched_nms(xyxy, score, cls, nms_iou)[:100]
        res.append((xyxy[k].numpy(), score[k].numpy(), cls[k].numpy()))
    return res


def evaluate_detector(
    det: torch.nn.Module,
    x: np.ndarray,
    truth: list[BoxSet],
    classes: list[str],
    device: torch.device,
    score_threshold: float,
) -> dict[str, Any]:
    """Per-class precision/recall/F1 at IoU 0.5 and a confusion matrix with ``background``."""
    n = len(classes)
    m = np.zeros((n + 1, n + 1), np.int64)  # last row/col: background
    with torch.no_grad():
        for i in range(0, len(x), 64):
            outs = decode(det(to_tensor(x[i : i + 64]).to(device)).cpu(), score_threshold)
            for (pb, _ps, pc), (tb, tc) in zip(outs, truth[i : i + 64], strict=True):
                used: set[int] = set()
                if len(tb) and len(pb):
                    iou = box_iou(torch.from_numpy(tb), torch.from_numpy(pb)).numpy()
                else:
                    iou = np.zeros((len(tb), len(pb)))
                for t in np.argsort(-iou.max(1) if len(pb) else np.zeros(len(tb))):
                    cand = [j for j in np.argsort(-iou[t]) if j not in used and iou[t, j] >= 0.5]
                    if cand:
                        used.add(int(cand[0]))
                        m[int(tc[t]), int(pc[cand[0]])] += 1
                    else:
                        m[int(tc[t]), n] += 1
                for j in range(len(pb)):
                    if j not in used:
                        m[n, int(pc[j])] += 1
    labels = [*classes, "background"]
    per_class = per_class_report(m, labels)
    per_class.pop("background")
    tp = float(np.trace(m[:n, :n]))
    n_pred = float(m[:, :n].sum())
    n_true = float(m[:n, :].sum())
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return {
        "overall": {
            "precision": p,
            "recall": r,
            "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "boxes": int(n_true),
        },
        "per_class": per_class,
        "confusion": {"labels": labels, "matrix": m.tolist()},
    }


def fit_detector(
    det: FcosDetector,
    train_x: np.ndarray,
    train_t: list[BoxSet],
    val_x: np.ndarray,
    val_t: list[BoxSet],
    classes: list[str],
    spec: TrainingSpec,
    device: torch.device,
    on_epoch: Any = None,
) -> FitResult:
    """Train ``det``; validation micro F1 at IoU 0.5 drives best-state and stopping."""
    det.to(device)
    counts = np.bincount(
        np.concatenate([c for _, c in train_t]) if train_t else np.zeros(0, np.int64),
        minlength=len(classes),
    )
    weights = class_weights(counts.tolist(), spec.class_weighting)
    weights = weights.to(device) if weights is not None else None
    aug = make_augment(spec.augment, boxes=True, seed=spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    batch = min(spec.batch, len(train_x))
    steps = max(1, len(train_x) // batch)

    def batches(epoch: int) -> Iterator[tuple[Any, ...]]:
        order = torch.randperm(len(train_x), generator=gen).numpy()
        for s in range(steps):
            idx = order[s * batch : (s + 1) * batch]
            imgs, truth = [], []
            for i in idx:
                im, (bx, cl) = train_x[i], train_t[i]
                if aug is not None:
                    out = aug(image=im, bboxes=bx.reshape(-1, 4), labels=cl)
                    im = out["image"].reshape(im.shape)
                    bx = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
                    cl = np.asarray(out["labels"], np.int64).reshape(-1)
                imgs.append(im)
                truth.append((torch.from_numpy(bx).to(device), torch.from_numpy(cl).to(device)))
            yield to_tensor(np.stack(imgs)).to(device), truth

    def loss_fn(m: torch.nn.Module, b: tuple[Any, ...]) -> torch.Tensor:
        return detection_loss(m, b[0], b[1], weights)  # type: ignore[arg-type]

    def validate(m: torch.nn.Module) -> tuple[float, dict[str, Any]]:
        ev = evaluate_detector(m, val_x, val_t, classes, device, spec.score_threshold)
        return ev["overall"]["f1"], {"confusion": ev["confusion"]["matrix"]}

    return fit(det, batches, steps, loss_fn, validate, spec, on_epoch)


def pipeline_stage(model_spec: ModelSpec, classes: list[str] | None, score: float) -> StageSpec:
    """The detector stage: whole frame, ``yolo_v8`` decoding, NMS on the device."""
    return StageSpec(
        name="detector",
        model="detector",
        pre=device_pre(model_spec),
        post=YoloPost(
            type="yolo_v8",
            score_threshold=score,
            nms_iou=NMS_IOU,
            class_agnostic=classes is not None and len(classes) == 1,
            max_detections=100,
            classes=classes,
        ),
    )


def pipeline(model_spec: ModelSpec, score: float) -> PipelineSpec:
    return PipelineSpec(stages=[pipeline_stage(model_spec, None, score)])


def box_targets(dataset: Dataset, root: Path, spec: ModelSpec, agnostic: bool = False) -> Any:
    """Device-path inputs and per-image boxes in input pixels (class 0 for all if
    ``agnostic``), plus the BGR images. Raises DatasetError when no item has a box."""
    items = dataset.items
    if not any(it.boxes for it in items):
        raise DatasetError([f"dataset {dataset.name}: no item has a box to detect"])
    images = [it.load_bgr(root) for it in items]
    x, lbs = uint8_inputs(images, spec)
    targets: list[BoxSet] = []
    for it, lb in zip(items, lbs, strict=True):
        bx = np.asarray([b.xyxy() for b in it.boxes], np.float32).reshape(-1, 4)
        bx[:, [0, 2]] = bx[:, [0, 2]] * lb.scale_x + lb.pad_x
        bx[:, [1, 3]] = bx[:, [1, 3]] * lb.scale_y + lb.pad_y
        cl = [0 if agnostic else dataset.class_index(b.label) for b in it.boxes]
        targets.append((bx, np.asarray(cl, np.int64)))
    return x, targets, images


def _dominant_class(t: BoxSet) -> str:
    return str(int(np.bincount(t[1]).argmax())) if len(t[1]) else "none"


def _box_counts(ts: list[BoxSet], classes: list[str]) -> dict[str, int]:
    labels = np.concatenate([c for _, c in ts]) if ts else np.zeros(0, np.int64)
    n = np.bincount(labels, minlength=len(classes))
    return {c: int(n[i]) for i, c in enumerate(classes)}


def train(
    spec: TrainingSpec,
    dataset: Dataset,
    root: Path,
    device: torch.device,
    init: torch.nn.Module | None = None,
    on_epoch: OnEpoch | None = None,
) -> TaskResult:
    """Train a detector for the dataset's classes."""
    classes = dataset.classes
    x, targets, images = box_targets(dataset, root, spec.model)
    tr, va = stratified_split(
        [_dominant_class(t) for t in targets], spec.dataset.val_fraction, spec.seed
    )
    det = init if init is not None else build_detector(spec.model, len(classes))
    if not isinstance(det, FcosDetector):
        raise DatasetError(
            ["a detector warm start must be a state dict of this trainer's detector"]
        )
    hook = None if on_epoch is None else (lambda r: on_epoch("detector", r))
    result = fit_detector(
        det, x[tr], [targets[i] for i in tr], x[va], [targets[i] for i in va],
        classes, spec, device, hook,
    )  # fmt: skip
    det.cpu()
    ev = evaluate_detector(
        det, x[va], [targets[i] for i in va], classes, torch.device("cpu"), spec.score_threshold
    )
    w, h = spec.model.input_size
    ch = 1 if spec.model.color == "gray" else 3
    return TaskResult(
        nets={"detector": ExportedNet(det, "images", "detections", (ch, h, w), spec.model)},
        pipeline=pipeline(spec.model, spec.score_threshold),
        classes=classes,
        metrics={"detector": ev},
        fits={"detector": result},
        counts={
            "train": _box_counts([targets[i] for i in tr], classes),
            "val": _box_counts([targets[i] for i in va], classes),
        },
        golden=[images[i] for i in va[:4]],
    )
