"""The training loop every task shares: device choice, augmentation, class weights, the epoch
loop with early stopping and a per-epoch hook (progress bars, Optuna pruning, job status).

It reads like torchvision's ``references/`` loops on purpose: one optimiser, a cosine schedule
per step, ``model.train()`` / ``model.eval()``, the best validation state kept. Inputs arrive as
uint8 ``N×H×W×C`` arrays already made by the device's own pre-processing (so a network is
trained on exactly what the device feeds it); augmentation (albumentations, box-aware for
detection) runs on those arrays per batch, then ``/255`` and NCHW.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainer.errors import TrainerError
from trainer.spec import AugmentSpec, SpecError, TrainingSpec

__all__ = [
    "EpochReport",
    "FitResult",
    "class_weights",
    "fit",
    "make_augment",
    "select_device",
    "to_tensor",
]

log = logging.getLogger(__name__)


@dataclass
class EpochReport:
    """What one epoch gave (passed to the ``on_epoch`` hook)."""

    epoch: int
    epochs: int
    train_loss: float
    metric: float
    """The validation metric the loop maximises (accuracy, or detection F1 at IoU 0.5)."""
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    samples: int = 0


@dataclass
class FitResult:
    """The loop's outcome; the model holds the best state on return."""

    best_metric: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    train_s: float
    samples_per_s: float
    history: list[dict[str, float]]


def select_device(pref: str) -> torch.device:
    """``auto`` → CUDA when a GPU is present, else the CPU. Raises TrainerError for a missing
    CUDA device asked for explicitly."""
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainerError("device: cuda asked for, but torch sees no CUDA GPU here")
        return torch.device("cuda")
    return torch.device("cpu")


def make_augment(specs: Sequence[AugmentSpec], boxes: bool, seed: int) -> Any | None:
    """An ``albumentations.Compose`` of the named transforms (``pascal_voc`` boxes kept aligned
    when ``boxes``), or None for no augmentation. Raises SpecError for an unknown transform or
    bad parameters, naming it."""
    if not specs:
        return None
    import albumentations as A

    transforms = []
    for i, s in enumerate(specs):
        cls = getattr(A, s.name, None)
        if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
            raise SpecError(f"augment[{i}]: {s.name!r} is not an albumentations transform")
        try:
            transforms.append(cls(**s.params))
        except Exception as e:  # albumentations validates params with pydantic and others
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SpecError(f"augment[{i}] {s.name}: {first}") from e
    bbox = (
        A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.3)
        if boxes
        else None
    )
    return A.Compose(transforms, bbox_params=bbox, seed=seed)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``N×H×W×C`` → float ``N×C×H×W`` in [0, 1] (the device's ``scale: 1/255``)."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / 255.0


def class_weights(counts: Sequence[int], mode: str) -> torch.Tensor | None:
    """Loss weight per class from training counts, normalised to mean 1 (None for ``none``).
    A class with no example gets the largest weight of the others."""
    if mode == "none":
        return None
    c = np.asarray(counts, dtype=np.float64)
    present = c > 0
    if not present.any():
        return None
    w = np.zeros_like(c)
    w[present] = 1.0 / c[present] if mode == "inverse_frequency" else 1.0 / np.sqrt(c[present])
    w[~present] = w[present].max()
    w = w / w.mean()
    return torch.tensor(w, dtype=torch.float32)


def _optimizer(model: torch.nn.Module, spec: TrainingSpec) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=spec.lr, momentum=0.9, nesterov=True, weight_decay=spec.weight_decay
        )
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)


Batches = Callable[[int], Iterator[tuple[Any, ...]]]
"""``batches(epoch)`` yields training batches (inputs first, already on the device)."""


def fit(
    model: torch.nn.Module,
    batches: Batches,
    steps_per_epoch: int,
    loss_fn: Callable[[torch.nn.Module, tuple[Any, ...]], torch.Tensor],
    validate: Callable[[torch.nn.Module], tuple[float, dict[str, Any]]],
    spec: TrainingSpec,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> FitResult:
    """Train ``model`` for ``spec.epochs`` (or until early stopping); keep the best validation
    state. ``on_epoch`` may raise (e.g. ``optuna.TrialPruned``) to stop the run."""
    opt = _optimizer(model, spec)
    total = max(1, spec.epochs * max(1, steps_per_epoch))
    warm = min(total // 10, 50)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (s + 1) / (warm + 1) if s < warm else 0.5 * (1 + np.cos(np.pi * s / total)),
    )
    best_metric, best_epoch, since_best = -float("inf"), 0, 0
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    train_s = 0.0
    samples = 0
    stopped = False
    epoch = 0
    for epoch in range(1, spec.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        losses: list[torch.Tensor] = []  # kept on the device: no sync per step
        n = 0
        for batch in batches(epoch):
            loss = loss_fn(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
            n += len(batch[0])
        mean_loss = float(torch.stack(losses).mean()) if losses else float("nan")
        seconds = time.perf_counter() - t0
        train_s += seconds
        samples += n
        model.eval()
        with torch.no_grad():
            metric, details = validate(model)
        history.append({"epoch": epoch, "loss": mean_loss, "metric": metric, "seconds": seconds})
        improved = metric > best_metric + (
            spec.early_stopping.min_delta if spec.early_stopping else 0
        )
        if improved:
            best_metric, best_epoch, since_best = metric, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        if on_epoch is not None:
            on_epoch(EpochReport(epoch, spec.epochs, mean_loss, metric, details, seconds, n))
        if spec.early_stopping and since_best >= spec.early_stopping.patience:
            stopped = epoch < spec.epochs
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        best_metric=best_metric,
        best_epoch=best_epoch,
        epochs_run=epoch,
        stopped_early=stopped,
        train_s=train_s,
        samples_per_s=samples / train_s if train_s > 0 else 0.0,
        history=history,
    )
