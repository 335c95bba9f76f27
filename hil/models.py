"""Small real bundles for the hardware-in-the-loop fleet: sizes chosen for slow links.

The fleet runs the project's two-stage digits pipeline (detector → crops → classifier) with
networks small enough to cross a 256 kbit/s link in seconds: a detector whose output always
holds the same two boxes (a real convolution stays in the graph, scaled to nothing) and a
two-layer classifier whose hidden width sets the bundle size (``hidden=16``: ~50 KB).
Version 2 changes only the classifier's last layer, as a fine-tune of the head would, so its
update travels as a tensor-aware delta. Exported with the trainer's own ONNX export and
written by ``trainer.source`` / ``runtime.bundle.build`` like any trained bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from runtime.bundle.build import build_bundle
from trainer.models import DigitClassifier, DigitDetector
from trainer.source import write_bundle_source
from trainer.train import TrainedModels

__all__ = ["build_fleet_bundles", "golden_frame"]

BOXES = [(30.0, 48.0, 24.0, 24.0), (66.0, 48.0, 24.0, 24.0)]


class _FixedBoxes(nn.Module):
    """``[B, 1, 96, 96]`` → ``[B, 5, 144]`` (YOLOv8 layout) always holding ``BOXES``."""

    def __init__(self) -> None:
        super().__init__()
        self.cells = nn.Conv2d(1, 5, 8, stride=8)  # 96 / 8 = 12 → 144 cells
        fixed = torch.zeros(1, 5, 144)
        for i, (cx, cy, w, h) in enumerate(BOXES):
            fixed[0, :, 30 + 50 * i] = torch.tensor([cx, cy, w, h, 0.9])
        self.register_buffer("fixed", fixed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fixed: torch.Tensor = self.fixed  # type: ignore[assignment]
        return fixed + 1e-6 * self.cells(x).reshape(-1, 5, 144)


class _SmallClassifier(nn.Module):
    """``[B, 1, 28, 28]`` → logits ``[B, 10]``; 784 × ``hidden`` weights carry the size."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(x))
        return out


def golden_frame(level: int = 40) -> np.ndarray:
    """A 96×96 BGR frame with two patches where the boxes are (also what devices are fed)."""
    img = np.full((96, 96, 3), level, np.uint8)
    img[36:60, 18:42] = 200
    img[36:60, 54:78] = 90
    return img


def build_fleet_bundles(work: Path, hidden: int = 16, seed: int = 0) -> dict[int, Path]:
    """Build ``digits`` v1 and v2 under ``work``; return {version: bundle folder}."""
    torch.manual_seed(seed)
    det, cls = _FixedBoxes().eval(), _SmallClassifier(hidden).eval()
    out = {}
    for version in (1, 2):
        if version == 2:  # a fine-tuned head: one small tensor changes, the rest is shared
            with torch.no_grad():
                cls.head.weight.add_(0.01 * torch.randn_like(cls.head.weight))
        models = TrainedModels(cast(DigitDetector, det), cast(DigitClassifier, cls))
        src = write_bundle_source(work / f"source-v{version}", models, [golden_frame()], {}, ())
        out[version] = work / f"bundle-v{version}"
        build_bundle(src, out[version], name="digits", version=version)
    return out
