"""The two small networks of the digit reader: a one-class detector and a digit classifier.

Both are sized for a 2-core CPU: the detector is ~22 M multiply-adds per 96×96 frame, the
classifier ~4 M per 28×28 crop.

:class:`DigitDetector` is fully convolutional with stride 8: a 96×96 gray frame gives a 12×12
grid. Each cell predicts an objectness logit and a box (centre offset inside the cell, log width
and height relative to a 24-pixel prior). :meth:`DigitDetector.raw` gives those raw maps to the
loss; :meth:`DigitDetector.forward` decodes them into the **YOLOv8 layout** the device pipeline
reads (``post: {type: yolo_v8}``): one tensor ``[B, 5, 144]`` holding ``cx, cy, w, h`` in input
pixels and ``score = sigmoid(objectness)`` for its single class. The decoding is part of the
exported graph, so the device runs no detector-specific code.

:class:`DigitClassifier` maps a 28×28 gray crop to ten logits (``post: {type: softmax}``).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

__all__ = ["ANCHOR_PX", "DETECTOR_INPUT", "DETECTOR_STRIDE", "DigitClassifier", "DigitDetector"]

DETECTOR_INPUT = 96
DETECTOR_STRIDE = 8
ANCHOR_PX = 24.0
"""Box size prior: width and height are ``ANCHOR_PX * exp(t)``."""
_LOG_SIZE_LIMIT = 3.0  # exp(±3) keeps any box between ~1 and ~480 pixels


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DigitDetector(nn.Module):
    """Class-agnostic digit detector: ``[B, 1, 96, 96]`` in [0, 1] → ``[B, 5, 144]`` (YOLOv8)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(1, 16, 2),  # 48
            conv_bn_relu(16, 32, 2),  # 24
            conv_bn_relu(32, 32),
            conv_bn_relu(32, 64, 2),  # 12
            conv_bn_relu(64, 64),
            conv_bn_relu(64, 64),
        )
        self.head = nn.Conv2d(64, 5, 1)
        self.cells = cells = DETECTOR_INPUT // DETECTOR_STRIDE
        gy, gx = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        self.register_buffer("grid", torch.stack([gx, gy]).float().reshape(1, 2, -1), False)
        bias = cast(torch.Tensor, self.head.bias)
        with torch.no_grad():  # start with few, confident "no digit" cells: stable BCE
            bias.zero_()
            bias[0] = -4.0

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Raw head ``[B, 5, 12, 12]``: objectness logit, dx, dy (logits), log w, log h."""
        return self.head(self.features(x))

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw head → ``[B, 5, 144]``: cx, cy, w, h (input pixels) and sigmoid score."""
        # A constant target shape (not flatten) keeps the exported output's 5 and 144 static.
        flat = raw.reshape(-1, 5, self.cells * self.cells)
        grid: torch.Tensor = self.grid  # type: ignore[assignment]
        centre = (grid + torch.sigmoid(flat[:, 1:3])) * DETECTOR_STRIDE
        size = torch.exp(flat[:, 3:5].clamp(-_LOG_SIZE_LIMIT, _LOG_SIZE_LIMIT)) * ANCHOR_PX
        score = torch.sigmoid(flat[:, 0:1])
        return torch.cat([centre, size, score], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.raw(x))


class DigitClassifier(nn.Module):
    """Digit classifier: ``[B, 1, 28, 28]`` in [0, 1] → logits ``[B, 10]``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        # Strided convolutions instead of conv + max-pool: a third of the cost on a CPU, and
        # just as accurate on 28×28 digits.
        self.features = nn.Sequential(
            conv_bn_relu(1, 32, 2),  # 14
            conv_bn_relu(32, 64, 2),  # 7
            conv_bn_relu(64, 64),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(64 * 7 * 7, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.25),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
