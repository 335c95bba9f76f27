"""What the tasks share: device-path inputs, a stratified split, classification metrics, and
the :class:`TaskResult` a task hands to the exporter and the model card."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from runtime.pipeline.graph import PipelineSpec, PreSpec
from runtime.pipeline.preprocess import Preprocessor
from trainer.engine import EpochReport, FitResult
from trainer.spec import ModelSpec

__all__ = [
    "ExportedNet",
    "OnEpoch",
    "TaskResult",
    "confusion",
    "device_pre",
    "per_class_report",
    "stratified_split",
    "uint8_inputs",
]

OnEpoch = Callable[[str, EpochReport], None]
"""Per-epoch hook: ``(model key, report)``."""


@dataclass
class ExportedNet:
    """One trained network and how it is fed (for export and parity checks)."""

    module: torch.nn.Module
    input_name: str
    output_name: str
    sample_shape: tuple[int, int, int]
    model_spec: ModelSpec


@dataclass
class TaskResult:
    """A task's trained networks, pipeline, and evaluation for the model card."""

    nets: dict[str, ExportedNet]
    pipeline: PipelineSpec
    classes: list[str]
    metrics: dict[str, dict[str, Any]]
    """Per model key: ``overall`` numbers, ``per_class``, ``confusion`` {labels, matrix}."""
    fits: dict[str, FitResult]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """``train`` / ``val`` counts per class."""
    golden: list[np.ndarray] = field(default_factory=list)
    """BGR frames for the bundle's health check."""

    @property
    def objective(self) -> float:
        """The number a search maximises: the last stage's best validation metric."""
        return list(self.fits.values())[-1].best_metric


def device_pre(spec: ModelSpec, dtype: str = "float32") -> PreSpec:
    """The pipeline's pre-processing for ``spec`` (stretch resize, colour, ``/255``)."""
    if dtype == "uint8":
        return PreSpec(resize=spec.input_size, color=spec.color, layout="nhwc", dtype="uint8")
    return PreSpec(resize=spec.input_size, color=spec.color, scale=1 / 255)


def uint8_inputs(images: Sequence[np.ndarray], spec: ModelSpec) -> tuple[np.ndarray, list[Any]]:
    """BGR images → ``N×H×W×C`` uint8 exactly as the device resizes and converts them (before
    its ``/255``), and each image's letterbox (the map from input to source pixels)."""
    pre = Preprocessor(device_pre(spec, "uint8"))
    w, h = spec.input_size
    ch = 1 if spec.color == "gray" else 3
    out = np.zeros((len(images), h, w, ch), np.uint8)
    boxes = []
    for i, img in enumerate(images):
        t, lb = pre.one(img)
        out[i] = t[0].reshape(h, w, ch)
        boxes.append(lb)
    return out, boxes


def stratified_split(
    keys: Sequence[str], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices split into train / validation, ``fraction`` of each key's items held out (at
    least one when a key has two or more items), the same for the same seed."""
    rng = np.random.default_rng(seed)
    by_key: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_key.setdefault(k, []).append(i)
    train: list[int] = []
    val: list[int] = []
    for k in sorted(by_key):
        idx = list(rng.permutation(by_key[k]))
        n_val = round(len(idx) * fraction)
        n_val = min(max(1, n_val), len(idx) - 1) if len(idx) >= 2 else 0
        val += [int(i) for i in idx[:n_val]]
        train += [int(i) for i in idx[n_val:]]
    if not val:  # tiny sets: validate on the training items rather than on nothing
        val = list(train)
    return sorted(train), sorted(val)


def confusion(truth: Sequence[int], pred: Sequence[int], n: int) -> np.ndarray:
    """``n×n`` counts, rows the true class, columns the predicted one."""
    m = np.zeros((n, n), np.int64)
    for t, p in zip(truth, pred, strict=True):
        m[t, p] += 1
    return m


def per_class_report(matrix: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class from a confusion matrix."""
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(labels):
        tp = float(matrix[i, i])
        fp = float(matrix[:, i].sum() - tp)
        fn = float(matrix[i, :].sum() - tp)
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        out[name] = {
            "precision": p,
            "recall": r,
            "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "support": float(matrix[i, :].sum()),
        }
    return out
