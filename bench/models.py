"""The benchmark's networks, built here in torch (no torchvision, no downloads).

:class:`MobileNetV2Like` follows MobileNetV2 (Sandler et al. 2018): a stride-2 stem, 17
inverted-residual blocks (1×1 expand, 3×3 depthwise, 1×1 linear project, residual when shapes
allow) with the paper's (t, c, n, s) table, a 1×1 conv to 1280 channels, global pooling and a
1000-way linear layer: ~3.5 M parameters, ~300 M multiply-adds at 224×224 — "MobileNet size".
Weights are random (seeded); speed does not depend on them.

:class:`FixedBoxesDetector` runs the real :class:`~trainer.models.DigitDetector` but blends its
output into a constant YOLOv8 tensor with exactly three confident, well-separated boxes, so the
detector → classifier benchmark always fans out to three crops while paying the real compute.

:class:`YoloV8nLike` follows Ultralytics YOLOv8n (Jocher et al. 2023, width 0.25, depth 0.33):
a CSP backbone of C2f blocks and SPPF, a PAN neck, and the anchor-free decoupled head with DFL
box regression (16 bins), decoded inside the graph to the ``[B, 4+80, N]`` YOLOv8 output
layout (cx, cy, w, h in input pixels, sigmoid class scores) exactly as an Ultralytics ONNX
export is: ~3.2 M parameters, N = 2100 candidates at 320×320. Like the small detector it
blends in a constant tensor with three confident boxes (``boxes``), so every frame fans out
to three crops while the engine pays for the whole network and the pipeline decodes all 2100
candidates over 80 classes.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models import DigitDetector

__all__ = ["FixedBoxesDetector", "MobileNetV2Like", "YoloV8nLike"]

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


# ---- YOLOv8n ------------------------------------------------------------------------------


class _Conv(nn.Sequential):
    """Conv (no bias) + BatchNorm + SiLU, the YOLOv8 building block."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU()
        )


class _Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(_Conv(c, c, 3), _Conv(c, c, 3))
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.body(x)
        return x + y if self.shortcut else y


class _C2f(nn.Module):
    """CSP bottleneck with two convolutions (split, n bottlenecks, concatenate every stage)."""

    def __init__(self, cin: int, cout: int, n: int, shortcut: bool) -> None:
        super().__init__()
        self.c = cout // 2
        self.cv1 = _Conv(cin, 2 * self.c)
        self.cv2 = _Conv((2 + n) * self.c, cout)
        self.m = nn.ModuleList(_Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.cv1(x).split((self.c, self.c), dim=1))
        for m in self.m:
            parts.append(m(parts[-1]))
        out: torch.Tensor = self.cv2(torch.cat(parts, dim=1))
        return out


class _Sppf(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        hidden = cin // 2
        self.cv1 = _Conv(cin, hidden)
        self.cv2 = _Conv(hidden * 4, cout)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        out: torch.Tensor = self.cv2(torch.cat(y, dim=1))
        return out


class YoloV8nLike(nn.Module):
    """``[B, 3, S, S]`` RGB in [0, 1] → ``[B, 4 + classes, N]`` decoded YOLOv8 predictions."""

    REG_MAX = 16
    STRIDES = (8, 16, 32)

    def __init__(
        self,
        boxes: list[tuple[float, float, float, float, int]],
        size: int = 320,
        classes: int = 80,
        seed: int = 0,
    ) -> None:
        """``boxes``: (cx, cy, w, h, class) in input pixels, always reported with score 0.95."""
        torch.manual_seed(seed)
        super().__init__()
        self.nc = classes
        self.b1 = nn.Sequential(
            _Conv(3, 16, 3, 2), _Conv(16, 32, 3, 2), _C2f(32, 32, 1, True),
            _Conv(32, 64, 3, 2), _C2f(64, 64, 2, True),
        )  # fmt: skip
        self.b2 = nn.Sequential(_Conv(64, 128, 3, 2), _C2f(128, 128, 2, True))
        self.b3 = nn.Sequential(_Conv(128, 256, 3, 2), _C2f(256, 256, 1, True), _Sppf(256, 256))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n1 = _C2f(384, 128, 1, False)
        self.n2 = _C2f(192, 64, 1, False)
        self.d1 = _Conv(64, 64, 3, 2)
        self.n3 = _C2f(192, 128, 1, False)
        self.d2 = _Conv(128, 128, 3, 2)
        self.n4 = _C2f(384, 256, 1, False)
        c2, c3 = max(16, 64 // 4, self.REG_MAX * 4), max(64, min(classes, 100))
        self.box_heads = nn.ModuleList(
            nn.Sequential(_Conv(c, c2, 3), _Conv(c2, c2, 3), nn.Conv2d(c2, 4 * self.REG_MAX, 1))
            for c in (64, 128, 256)
        )
        self.cls_heads = nn.ModuleList(
            nn.Sequential(_Conv(c, c3, 3), _Conv(c3, c3, 3), nn.Conv2d(c3, classes, 1))
            for c in (64, 128, 256)
        )
        points, strides = [], []
        for s in self.STRIDES:
            cells = size // s
            gy, gx = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
            points.append(torch.stack([gx, gy]).float().reshape(2, -1) + 0.5)
            strides.append(torch.full((1, cells * cells), float(s)))
        self.register_buffer("points", torch.cat(points, dim=1)[None], persistent=False)
        self.register_buffer("strides", torch.cat(strides, dim=1)[None], persistent=False)
        self.register_buffer("bins", torch.arange(self.REG_MAX).float().reshape(1, -1, 1, 1))
        n = sum((size // s) ** 2 for s in self.STRIDES)
        fixed = torch.zeros(1, 4 + classes, n)
        for i, (cx, cy, w, h, c) in enumerate(boxes):
            fixed[0, :4, 100 + 300 * i] = torch.tensor([cx, cy, w, h])
            fixed[0, 4 + c, 100 + 300 * i] = 0.95
        self.register_buffer("fixed", fixed)

    def _dfl(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 64, N]`` bin logits -> ``[B, 4, N]`` expected distances (softmax over 16 bins)."""
        b, _, n = x.shape
        probs = x.reshape(b, 4, self.REG_MAX, n).transpose(1, 2).softmax(dim=1)
        bins: torch.Tensor = self.bins  # type: ignore[assignment]
        return (probs * bins).sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.b1(x)
        p4 = self.b2(p3)
        p5 = self.b3(p4)
        h4 = self.n1(torch.cat([self.up(p5), p4], dim=1))
        o3 = self.n2(torch.cat([self.up(h4), p3], dim=1))
        o4 = self.n3(torch.cat([self.d1(o3), h4], dim=1))
        o5 = self.n4(torch.cat([self.d2(o4), p5], dim=1))
        b = x.shape[0]
        box = torch.cat([h(o).reshape(b, 4 * self.REG_MAX, -1) for h, o in
                         zip(self.box_heads, (o3, o4, o5), strict=True)], dim=2)  # fmt: skip
        cls = torch.cat([h(o).reshape(b, self.nc, -1) for h, o in
                         zip(self.cls_heads, (o3, o4, o5), strict=True)], dim=2)  # fmt: skip
        dist = self._dfl(box)
        points: torch.Tensor = self.points  # type: ignore[assignment]
        strides: torch.Tensor = self.strides  # type: ignore[assignment]
        lt, rb = dist[:, :2], dist[:, 2:]
        centre = (points + (rb - lt) / 2) * strides
        wh = (lt + rb) * strides
        real = torch.cat([centre, wh, cls.sigmoid()], dim=1)
        fixed: torch.Tensor = self.fixed  # type: ignore[assignment]
        # The tiny weight keeps the whole network in the graph (nothing folds away) while
        # the three fixed boxes are the only candidates above any sane score threshold.
        return fixed + 1e-6 * real
