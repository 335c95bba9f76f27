"""The benchmark's networks, built here in torch (no torchvision, no downloads).

:class:`MobileNetV2Like` follows MobileNetV2 (Sandler et al. 2018): a stride-2 stem, 17
inverted-residual blocks (1×1 expand, 3×3 depthwise, 1×1 linear project, residual when shapes
allow) with the paper's (t, c, n, s) table, a 1×1 conv to 1280 channels, global pooling and a
1000-way linear layer: ~3.5 M parameters, ~300 M multiply-adds at 224×224 — "MobileNet size".
Weights are random (seeded); speed does not depend on them.

:class:`FixedBoxesDetector` runs the real :class:`~trainer.models.DigitDetector` but blends its
output into a constant YOLOv8 tensor with exactly three confident, well-separated boxes, so the
detector → classifier benchmark always fans out to three crops while paying the real compute.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models import DigitDetector

__all__ = ["FixedBoxesDetector", "MobileNetV2Like"]

_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip
"""MobileNetV2's (expansion t, channels c, repeats n, first stride s)."""


def _cbr(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    ]


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else _cbr(cin, hidden, 1)
        layers += _cbr(hidden, hidden, 3, stride, groups=hidden)
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.body(x)
        return x + y if self.residual else y


class MobileNetV2Like(nn.Module):
    """``[B, 3, 224, 224]`` float → ``[B, 1000]`` logits, MobileNetV2 layout, width 1.0."""

    def __init__(self, classes: int = 1000, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        layers: list[nn.Module] = _cbr(3, 32, 3, 2)
        cin = 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += _cbr(cin, 1280, 1)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x).mean(dim=(2, 3))
        out: torch.Tensor = self.classifier(y)
        return out


class FixedBoxesDetector(DigitDetector):
    """A real DigitDetector whose ``[B, 5, 144]`` output always holds the same three boxes."""

    def __init__(self, boxes: list[tuple[float, float, float, float]], seed: int = 0) -> None:
        torch.manual_seed(seed)
        super().__init__()
        fixed = torch.zeros(1, 5, 144)
        for i, (cx, cy, w, h) in enumerate(boxes):
            fixed[0, :, 10 + 40 * i] = torch.tensor([cx, cy, w, h, 0.95])
        self.register_buffer("fixed", fixed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fixed: torch.Tensor = self.fixed  # type: ignore[assignment]
        # The tiny weight keeps the detector's compute in the graph (nothing folds away).
        return fixed + 1e-6 * super().forward(x)
