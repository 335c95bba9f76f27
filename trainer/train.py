"""Train the digit detector and classifier from annotated frames, in well under a minute.

Input: annotated frames (a BGR image, boxes, class ids), the same for the lab seed batch and for
production samples labelled later. Output: the two trained networks and a few metrics.

Classifier data are built with the device's own code: every box is cropped with
:func:`runtime.pipeline.preprocess.crop_box` and turned into a tensor with
:func:`runtime.pipeline.preprocess.preprocess`, using the specs of :mod:`trainer.stages` — the ones
the written ``pipeline.yaml`` carries. Augmentation happens *before* that path (rotation and
scale of the frame around the digit, box jitter so the classifier tolerates the detector's box
noise, stroke width, contrast, brightness, noise), so what the network sees stays what a device
would compute.

Detector data are the annotated frames plus synthetic frames made copy-paste style: the labelled
digits are cut out, the frames are cleaned of their digits by inpainting, and new frames are
composed by pasting 1–3 digits at new places, sizes and contrasts. This multiplies a small
labelled set without any new labels.

Training is deterministic for a given seed (``torch.set_num_threads`` is fixed too), counts
optimiser steps rather than epochs so its time does not grow with the data, and can warm-start
from a previous run's checkpoint folder (``detector.pt``, ``classifier.pt``: state dicts).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from runtime.pipeline.preprocess import crop_box, preprocess
from trainer.errors import TrainerError
from trainer.models import (
    ANCHOR_PX,
    DETECTOR_INPUT,
    DETECTOR_STRIDE,
    DigitClassifier,
    DigitDetector,
)
from trainer.stages import CLASSIFIER_CROP, CLASSIFIER_PRE, DETECTOR_PRE

__all__ = [
    "CHECKPOINT_FILES",
    "AnnotatedFrame",
    "TrainParams",
    "TrainedModels",
    "classifier_dataset",
    "classifier_input",
    "detector_dataset",
    "detector_input",
    "load_checkpoint",
    "synthesize_frames",
    "train_models",
]

log = logging.getLogger("leanloop.trainer")

CHECKPOINT_FILES = {"detector": "detector.pt", "classifier": "classifier.pt"}
_CELLS = DETECTOR_INPUT // DETECTOR_STRIDE
Box = tuple[float, float, float, float]


@dataclass
class AnnotatedFrame:
    """One labelled frame: what the hub exports for training."""

    image: np.ndarray
    """``H×W×3`` uint8 BGR."""
    boxes: list[Box]
    """``(x1, y1, x2, y2)`` pixel boxes."""
    labels: list[int]
    """Class id of each box (index into the ontology classes)."""

    def __post_init__(self) -> None:
        if len(self.boxes) != len(self.labels):
            raise TrainerError("an annotated frame needs exactly one label per box")


@dataclass(frozen=True)
class TrainParams:
    """Knobs of a training run. Steps, not epochs: run time stays flat as labels accumulate."""

    seed: int = 0
    threads: int = 2
    detector_steps: int = 360
    classifier_steps: int = 300
    warm_detector_steps: int = 160
    warm_classifier_steps: int = 200
    detector_batch: int = 24
    classifier_batch: int = 64
    lr: float = 3e-3
    warm_lr: float = 1e-3
    synthetic_per_frame: float = 2.0
    """Copy-paste frames made per annotated frame for the detector."""
    max_synthetic: int = 500
    views_per_digit: int = 16
    """Augmented crops per labelled digit for the classifier."""
    max_crops: int = 12000
    pos_weight: float = 15.0
    """Weight of the (rare) digit cells in the objectness loss."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainParams:
        """Build from a JSON object (e.g. the hub's job ``params``). Raises TrainerError."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise TrainerError(f"unknown training parameter(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            kind = type(getattr(cls(), name))
            try:
                values[name] = kind(value)
            except (TypeError, ValueError) as e:
                raise TrainerError(f"training parameter {name}: {e}") from e
        return cls(**values)


@dataclass
class TrainedModels:
    """The result of a training run (networks in eval mode, on CPU)."""

    detector: DigitDetector
    classifier: DigitClassifier
    metrics: dict[str, float] = field(default_factory=dict)

    def save_checkpoint(self, folder: Path) -> None:
        """Write the state dicts (``detector.pt``, ``classifier.pt``) for a later warm start."""
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.detector.state_dict(), folder / CHECKPOINT_FILES["detector"])
        torch.save(self.classifier.state_dict(), folder / CHECKPOINT_FILES["classifier"])


def load_checkpoint(folder: Path) -> TrainedModels:
    """Load both networks from a checkpoint folder. Raises TrainerError."""
    detector, classifier = DigitDetector(), DigitClassifier()
    for key, net in (("detector", detector), ("classifier", classifier)):
        path = Path(folder) / CHECKPOINT_FILES[key]
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except FileNotFoundError as e:
            raise TrainerError(f"{path}: checkpoint missing; train from scratch instead") from e
        except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise TrainerError(f"{path}: not a {key} checkpoint of this trainer: {first}") from e
        net.eval()
    return TrainedModels(detector, classifier)


# ---- the device path ----------------------------------------------------------------------


def detector_input(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """A frame → ``1×96×96`` float input as the device makes it, and the x/y scale applied."""
    tensor, lb = preprocess(image, DETECTOR_PRE)
    return tensor[0], lb.scale_x, lb.scale_y


def classifier_input(image: np.ndarray, box: Box) -> np.ndarray | None:
    """The device's classifier input for one box: ``1×28×28`` float, or None if too small."""
    crop = crop_box(image, box, CLASSIFIER_CROP)
    if crop is None:
        return None
    tensor, _ = preprocess(crop, CLASSIFIER_PRE)
    return tensor[0]


# ---- classifier data ----------------------------------------------------------------------


def _augment_view(rng: np.random.Generator, image: np.ndarray, box: Box) -> np.ndarray | None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    # Rotate and scale the frame around the digit (digits tilt in the field).
    angle = float(rng.uniform(-15, 15))
    scale = float(rng.uniform(0.9, 1.1))
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    warped = cv2.warpAffine(
        image, m, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE
    )
    side = max(w, h) * scale
    # Shift and edge jitter: a detector's box is never exactly the annotator's.
    cx += float(rng.normal(0, 0.06)) * side
    cy += float(rng.normal(0, 0.06)) * side
    nw = w * scale * float(np.exp(rng.normal(0, 0.08)))
    nh = h * scale * float(np.exp(rng.normal(0, 0.08)))
    crop = crop_box(warped, (cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2), CLASSIFIER_CROP)
    if crop is None:
        return None
    crop = crop.astype(np.float32)
    if rng.random() < 0.3:  # stroke width
        op = cv2.dilate if rng.random() < 0.6 else cv2.erode
        crop = op(crop, np.ones((2, 2), np.uint8))
    if rng.random() < 0.2:
        crop = cv2.GaussianBlur(crop, (3, 3), 0.8)
    mean = float(crop.mean())
    crop = (crop - mean) * float(rng.uniform(0.45, 1.2)) + mean + float(rng.uniform(-30, 40))
    crop += rng.normal(0, float(rng.uniform(0, 8)), crop.shape).astype(np.float32)
    tensor, _ = preprocess(np.clip(crop, 0, 255).astype(np.uint8), CLASSIFIER_PRE)
    return tensor[0]


def classifier_dataset(
    frames: list[AnnotatedFrame], rng: np.random.Generator, views_per_digit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Crops of every labelled digit: one exact device view plus ``views_per_digit - 1``
    augmented ones. Returns ``N×1×28×28`` float32 and ``N`` int64 labels."""
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for fr in frames:
        for box, label in zip(fr.boxes, fr.labels, strict=True):
            exact = classifier_input(fr.image, box)
            if exact is None:
                continue
            xs.append(exact)
            ys.append(label)
            for _ in range(views_per_digit - 1):
                view = _augment_view(rng, fr.image, box)
                if view is not None:
                    xs.append(view)
                    ys.append(label)
    if not xs:
        return np.zeros((0, 1, 28, 28), np.float32), np.zeros(0, np.int64)
    return np.stack(xs).astype(np.float32), np.asarray(ys, dtype=np.int64)


# ---- detector data ------------------------------------------------------------------------


@dataclass
class _Patch:
    image: np.ndarray
    box: Box  # the digit's box inside the patch
    label: int


def _cut_patches(frames: list[AnnotatedFrame], pad: int = 3) -> list[_Patch]:
    patches = []
    for fr in frames:
        h, w = fr.image.shape[:2]
        for (x1, y1, x2, y2), label in zip(fr.boxes, fr.labels, strict=True):
            ix1, iy1 = max(0, int(x1) - pad), max(0, int(y1) - pad)
            ix2, iy2 = min(w, math.ceil(x2) + pad), min(h, math.ceil(y2) + pad)
            if ix2 - ix1 < 4 or iy2 - iy1 < 4:
                continue
            patches.append(
                _Patch(
                    fr.image[iy1:iy2, ix1:ix2].copy(),
                    (x1 - ix1, y1 - iy1, x2 - ix1, y2 - iy1),
                    label,
                )
            )
    return patches


def _clean_background(fr: AnnotatedFrame) -> np.ndarray:
    """The frame with its digits painted out (what the scene looks like without them)."""
    mask = np.zeros(fr.image.shape[:2], np.uint8)
    for x1, y1, x2, y2 in fr.boxes:
        cv2.rectangle(
            mask, (int(x1) - 2, int(y1) - 2), (math.ceil(x2) + 2, math.ceil(y2) + 2), 255, -1
        )
    if not mask.any():
        return fr.image.copy()
    return cv2.inpaint(fr.image, mask, 3, cv2.INPAINT_TELEA)


def _paste(
    rng: np.random.Generator, canvas: np.ndarray, patch: _Patch, x: int, y: int, scale: float
) -> None:
    img = cv2.resize(patch.image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    # A soft matte from the patch's own contrast: ink is what is clearly above its background.
    low, peak = float(np.percentile(gray, 25)) + 6.0, float(np.percentile(gray, 99))
    alpha = np.clip((gray - low) / max(peak - low, 10.0), 0, 1)
    alpha *= float(rng.uniform(0.55, 1.0))
    h, w = gray.shape
    region = canvas[y : y + h, x : x + w].astype(np.float32)
    a = alpha[:, :, None]
    canvas[y : y + h, x : x + w] = np.clip(region * (1 - a) + img * a, 0, 255).astype(np.uint8)


def synthesize_frames(
    frames: list[AnnotatedFrame], rng: np.random.Generator, count: int
) -> list[AnnotatedFrame]:
    """Copy-paste ``count`` new frames from the digits and backgrounds of ``frames``."""
    patches = _cut_patches(frames)
    if not patches or count <= 0:
        return []
    backgrounds = [_clean_background(fr) for fr in frames]
    out: list[AnnotatedFrame] = []
    for _ in range(count):
        canvas = backgrounds[int(rng.integers(len(backgrounds)))].copy()
        if rng.random() < 0.5:  # a scene, unlike a digit, can be mirrored
            canvas = canvas[:, ::-1].copy()
        h, w = canvas.shape[:2]
        boxes: list[Box] = []
        labels: list[int] = []
        taken: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, 4))):
            p = patches[int(rng.integers(len(patches)))]
            scale = float(rng.uniform(0.8, 1.2))
            ph, pw = round(p.image.shape[0] * scale), round(p.image.shape[1] * scale)
            if ph >= h - 1 or pw >= w - 1 or ph < 4 or pw < 4:
                continue
            for _attempt in range(20):
                x, y = int(rng.integers(0, w - pw)), int(rng.integers(0, h - ph))
                if not any(
                    x < b[2] and b[0] < x + pw and y < b[3] and b[1] < y + ph for b in taken
                ):
                    break
            else:
                continue
            _paste(rng, canvas, p, x, y, scale)
            taken.append((x, y, x + pw, y + ph))
            bx1, by1, bx2, by2 = p.box
            boxes.append((x + bx1 * scale, y + by1 * scale, x + bx2 * scale, y + by2 * scale))
            labels.append(p.label)
        out.append(AnnotatedFrame(canvas, boxes, labels))
    return out


def _detector_target(boxes: list[Box], sx: float, sy: float) -> np.ndarray:
    """Dense target ``5×12×12``: objectness, centre offset in the cell, log size vs the prior."""
    target = np.zeros((5, _CELLS, _CELLS), np.float32)
    for x1, y1, x2, y2 in boxes:
        cx, cy = (x1 + x2) / 2 * sx, (y1 + y2) / 2 * sy
        bw, bh = (x2 - x1) * sx, (y2 - y1) * sy
        if bw < 1 or bh < 1:
            continue
        gx = min(_CELLS - 1, max(0, int(cx // DETECTOR_STRIDE)))
        gy = min(_CELLS - 1, max(0, int(cy // DETECTOR_STRIDE)))
        if target[0, gy, gx]:
            continue  # two digits in one cell: keep the first
        target[:, gy, gx] = (
            1.0,
            np.clip(cx / DETECTOR_STRIDE - gx, 0, 1),
            np.clip(cy / DETECTOR_STRIDE - gy, 0, 1),
            math.log(bw / ANCHOR_PX),
            math.log(bh / ANCHOR_PX),
        )
    return target


def detector_dataset(frames: list[AnnotatedFrame]) -> tuple[np.ndarray, np.ndarray]:
    """Device-path inputs ``N×1×96×96`` and dense targets ``N×5×12×12`` for ``frames``."""
    xs, ts = [], []
    for fr in frames:
        x, sx, sy = detector_input(fr.image)
        xs.append(x)
        ts.append(_detector_target(fr.boxes, sx, sy))
    if not xs:
        return np.zeros((0, 1, 96, 96), np.float32), np.zeros((0, 5, _CELLS, _CELLS), np.float32)
    return np.stack(xs), np.stack(ts)


def _giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of ``N×4`` (cx, cy, w, h) boxes."""
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(min=0).prod(1)
    union = a[:, 2:].prod(1) + b[:, 2:].prod(1) - inter
    hull = (torch.max(a2, b2) - torch.min(a1, b1)).prod(1)
    iou = inter / union.clamp(min=1e-6)
    return iou - (hull - union) / hull.clamp(min=1e-6)


def _detector_loss(raw: torch.Tensor, target: torch.Tensor, pos_weight: float) -> torch.Tensor:
    obj = F.binary_cross_entropy_with_logits(
        raw[:, 0], target[:, 0], pos_weight=torch.tensor(pos_weight)
    )
    pos = target[:, 0] > 0.5
    if not bool(pos.any()):
        return obj
    pred = raw.permute(0, 2, 3, 1)[pos]  # P×5
    tgt = target.permute(0, 2, 3, 1)[pos]
    off = torch.sigmoid(pred[:, 1:3])
    log_size = pred[:, 3:5].clamp(-3, 3)
    l1 = (off - tgt[:, 1:3]).abs().sum(1).mean() + (log_size - tgt[:, 3:5]).abs().sum(1).mean()
    pb = torch.cat([off * DETECTOR_STRIDE, torch.exp(log_size) * ANCHOR_PX], 1)
    tb = torch.cat([tgt[:, 1:3] * DETECTOR_STRIDE, torch.exp(tgt[:, 3:5]) * ANCHOR_PX], 1)
    return obj + l1 + (1 - _giou(pb, tb)).mean()


def _photometric(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-image contrast, brightness and noise jitter on a batch in [0, 1]."""
    n = x.shape[0]
    a = torch.empty(n, 1, 1, 1).uniform_(0.55, 1.2, generator=gen)
    b = torch.empty(n, 1, 1, 1).uniform_(-0.08, 0.2, generator=gen)
    sigma = torch.empty(n, 1, 1, 1).uniform_(0, 0.035, generator=gen)
    mean = x.mean(dim=(2, 3), keepdim=True)
    noise = torch.randn(x.shape, generator=gen) * sigma
    return ((x - mean) * a + mean + b + noise).clamp(0, 1)


# ---- training loop ------------------------------------------------------------------------


def _fit(
    model: torch.nn.Module,
    n: int,
    batch: int,
    steps: int,
    lr: float,
    gen: torch.Generator,
    loss_fn: Any,
    name: str = "",
) -> float:
    """AdamW with a one-cycle schedule over ``steps`` batches; returns the last-epoch mean loss.

    Prints ``progress <name> <step>/<steps> loss=<x>`` to stdout every tenth of the run (the
    hub keeps stdout as the job log; ``leanloop demo`` shows the last such line live).
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    model.train()
    order = torch.randperm(n, generator=gen)
    pos = 0
    recent: list[float] = []
    every = max(1, steps // 10)
    for step in range(1, steps + 1):
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + batch]
        pos += batch
        loss = loss_fn(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        recent = [*recent[-19:], loss.item()]
        if name and (step % every == 0 or step == steps):
            print(f"progress {name} {step}/{steps} loss={np.mean(recent):.3f}", flush=True)
    model.eval()
    return float(np.mean(recent)) if recent else float("nan")


def train_models(
    annotated: list[AnnotatedFrame], init: Path | None, params: TrainParams | None = None
) -> TrainedModels:
    """Train (or, with ``init``, fine-tune) both networks on ``annotated``.

    Raises TrainerError when there is no labelled digit or ``init`` is not a usable checkpoint.
    """
    params = params or TrainParams()
    torch.set_num_threads(params.threads)
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    gen = torch.Generator().manual_seed(params.seed)
    n_digits = sum(len(fr.labels) for fr in annotated)
    if n_digits == 0:
        raise TrainerError("no labelled digits to train on")
    bad = sorted({lbl for fr in annotated for lbl in fr.labels if not 0 <= lbl < 10})
    if bad:
        raise TrainerError(f"class ids out of range 0..9: {bad}")

    if init is not None:
        models = load_checkpoint(init)
        det_steps, cls_steps, lr = (
            params.warm_detector_steps,
            params.warm_classifier_steps,
            params.warm_lr,
        )
    else:
        models = TrainedModels(DigitDetector(), DigitClassifier())
        det_steps, cls_steps, lr = params.detector_steps, params.classifier_steps, params.lr
    metrics: dict[str, float] = {
        "frames": float(len(annotated)),
        "digits": float(n_digits),
        "warm_start": float(init is not None),
    }

    t0 = time.perf_counter()
    n_syn = min(params.max_synthetic, round(params.synthetic_per_frame * len(annotated)))
    det_frames = annotated + synthesize_frames(annotated, rng, n_syn)
    det_x, det_t = (torch.from_numpy(a) for a in detector_dataset(det_frames))
    metrics["detector_data_s"] = time.perf_counter() - t0

    def det_loss(idx: torch.Tensor) -> torch.Tensor:
        x = _photometric(det_x[idx], gen)
        return _detector_loss(models.detector.raw(x), det_t[idx], params.pos_weight)

    t1 = time.perf_counter()
    metrics["detector_loss"] = _fit(
        models.detector, len(det_x), params.detector_batch, det_steps, lr, gen, det_loss, "detector"
    )
    metrics["detector_train_s"] = time.perf_counter() - t1
    metrics["detector_samples"] = float(len(det_x))

    t2 = time.perf_counter()
    views = max(1, min(params.views_per_digit, params.max_crops // max(1, n_digits)))
    cls_np, cls_y_np = classifier_dataset(annotated, rng, views)
    cls_x, cls_y = torch.from_numpy(cls_np), torch.from_numpy(cls_y_np)
    if len(cls_x) == 0:
        raise TrainerError("every labelled box is too small to crop")
    metrics["classifier_data_s"] = time.perf_counter() - t2

    def cls_loss(idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(models.classifier(cls_x[idx]), cls_y[idx], label_smoothing=0.05)

    t3 = time.perf_counter()
    metrics["classifier_loss"] = _fit(
        models.classifier,
        len(cls_x),
        params.classifier_batch,
        cls_steps,
        lr,
        gen,
        cls_loss,
        "classifier",
    )
    metrics["classifier_train_s"] = time.perf_counter() - t3
    metrics["classifier_samples"] = float(len(cls_x))
    metrics["train_s"] = time.perf_counter() - t0
    log.info(
        "trained on %d frames (%d digits) in %.1f s", len(annotated), n_digits, metrics["train_s"]
    )
    models.metrics = metrics
    return models
