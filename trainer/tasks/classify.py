"""Image classification: one network, whole image in, class logits out (``post: softmax``).

Also the second stage of :mod:`trainer.tasks.detect_then_classify`, which feeds it crops made
by the device's own ``crop_box``: :func:`fit_classifier` takes ready uint8 inputs and labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from runtime.pipeline.graph import ClassifyPost, PipelineSpec, StageSpec
from trainer.arch import build_classifier
from trainer.datasets.model import Dataset, DatasetError
from trainer.engine import EpochReport, FitResult, class_weights, fit, make_augment, to_tensor
from trainer.spec import ModelSpec, TrainingSpec
from trainer.tasks._common import (
    ExportedNet,
    OnEpoch,
    TaskResult,
    confusion,
    device_pre,
    per_class_report,
    stratified_split,
    uint8_inputs,
)

__all__ = ["evaluate_classifier", "fit_classifier", "train"]

_EVAL_BATCH = 256


@torch.no_grad()
def predict(model: torch.nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
    """Arg-max class of each uint8 input."""
    out = []
    for i in range(0, len(x), _EVAL_BATCH):
        out.append(model(to_tensor(x[i : i + _EVAL_BATCH]).to(device)).argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def evaluate_classifier(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, classes: list[str], device: torch.device
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix on ``x``, ``y``."""
    pred = predict(model, x, device)
    m = confusion(y.tolist(), pred.tolist(), len(classes))
    return {
        "overall": {"accuracy": float((pred == y).mean()) if len(y) else 0.0, "count": len(y)},
        "per_class": per_class_report(m, classes),
        "confusion": {"labels": list(classes), "matrix": m.tolist()},
    }


def fit_classifier(
    model: torch.nn.Module,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    classes: list[str],
    spec: TrainingSpec,
    device: torch.device,
    on_epoch: Any = None,
) -> FitResult:
    """Train ``model`` on uint8 inputs; validation accuracy drives best-state and stopping."""
    model.to(device)
    weights = class_weights(
        np.bincount(train_y, minlength=len(classes)).tolist(), spec.class_weighting
    )
    weights = weights.to(device) if weights is not None else None
    aug = make_augment(spec.augment, boxes=False, seed=spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    batch = min(spec.batch, len(train_x))
    steps = max(1, len(train_x) // batch)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(train_x), generator=gen).numpy()
        for s in range(steps):
            idx = order[s * batch : (s + 1) * batch]
            imgs = train_x[idx]
            if aug is not None:
                imgs = np.stack([_augmented(aug, im) for im in imgs])
            yield to_tensor(imgs).to(device), torch.from_numpy(train_y[idx]).to(device)

    def loss_fn(m: torch.nn.Module, b: tuple[Any, ...]) -> torch.Tensor:
        return F.cross_entropy(m(b[0]), b[1], weight=weights, label_smoothing=0.05)

    def validate(m: torch.nn.Module) -> tuple[float, dict[str, Any]]:
        ev = evaluate_classifier(m, val_x, val_y, classes, device)
        return ev["overall"]["accuracy"], {"confusion": ev["confusion"]["matrix"]}

    return fit(model, batches, steps, loss_fn, validate, spec, on_epoch)


def _augmented(aug: Any, image: np.ndarray) -> np.ndarray:
    out: np.ndarray = aug(image=image)["image"]
    return out.reshape(image.shape)


def _hook(on_epoch: OnEpoch | None, key: str) -> Any:
    if on_epoch is None:
        return None

    def call(report: EpochReport) -> None:
        on_epoch(key, report)

    return call


def pipeline(model_spec: ModelSpec) -> PipelineSpec:
    """A one-stage pipeline: ``classifier`` on the whole frame, softmax, top 3."""
    return PipelineSpec(
        stages=[
            StageSpec(
                name="classifier",
                model="classifier",
                pre=device_pre(model_spec),
                post=ClassifyPost(type="softmax", top_k=3),
            )
        ]
    )


def train(
    spec: TrainingSpec,
    dataset: Dataset,
    root: Path,
    device: torch.device,
    init: torch.nn.Module | None = None,
    on_epoch: OnEpoch | None = None,
) -> TaskResult:
    """Train a classifier on the items' ``label``. ``init`` replaces the fresh network (warm
    start). Raises DatasetError when items lack labels or a class has no example."""
    items = [it for it in dataset.items if it.label is not None]
    if len(items) < 2:
        raise DatasetError([f"dataset {dataset.name}: fewer than 2 items with a class label"])
    classes = dataset.classes
    labels = np.asarray([dataset.class_index(it.label or "") for it in items], np.int64)
    train_idx, val_idx = stratified_split(
        [it.label or "" for it in items], spec.dataset.val_fraction, spec.seed
    )
    images = [it.load_bgr(root) for it in items]
    x, _ = uint8_inputs(images, spec.model)
    model = init if init is not None else build_classifier(spec.model, len(classes))
    result = fit_classifier(
        model,
        x[train_idx],
        labels[train_idx],
        x[val_idx],
        labels[val_idx],
        classes,
        spec,
        device,
        _hook(on_epoch, "classifier"),
    )
    model.cpu()
    ev = evaluate_classifier(model, x[val_idx], labels[val_idx], classes, torch.device("cpu"))
    w, h = spec.model.input_size
    ch = 1 if spec.model.color == "gray" else 3
    return TaskResult(
        nets={"classifier": ExportedNet(model, "images", "logits", (ch, h, w), spec.model)},
        pipeline=pipeline(spec.model),
        classes=classes,
        metrics={"classifier": ev},
        fits={"classifier": result},
        counts={
            "train": _counts(labels[train_idx], classes),
            "val": _counts(labels[val_idx], classes),
        },
        golden=[images[i] for i in val_idx[:4]],
    )


def _counts(y: np.ndarray, classes: list[str]) -> dict[str, int]:
    n = np.bincount(y, minlength=len(classes))
    return {c: int(n[i]) for i, c in enumerate(classes)}
