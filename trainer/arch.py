"""Networks built from well-known torchvision architectures, never with downloaded weights.

* :func:`build_classifier` — MobileNetV3 (small/large, width multiplier as the size knob) or
  ResNet 18/34/50, ``weights=None``, its first convolution adapted to one channel for gray
  input, its last layer sized to the classes. Output: logits ``[B, C]`` (``post: softmax``).
* :class:`FcosDetector` — the same backbones' stride-8 and stride-16 feature maps, a small
  lateral + shared head in the style of FCOS (anchor-free: per location, class logits and the
  distances to the box's left/top/right/bottom edges). Its ``forward`` decodes the head *inside
  the graph* into the YOLOv8 layout the device already reads (``post: {type: yolo_v8}``):
  ``[B, 4 + C, N]`` with ``cx, cy, w, h`` in input pixels and sigmoid class scores, so NMS stays
  on the device and the graph exports to ONNX, OpenVINO IR and TFLite without custom ops.
  (torchvision's own SSDlite/FCOS/RetinaNet wrap NMS and variable-size outputs into
  ``forward``, which neither TFLite nor the device pipeline can take.)
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from trainer.errors import TrainerError
from trainer.spec import ModelSpec

__all__ = ["FcosDetector", "backbone_stages", "build_classifier", "build_detector"]


def _in_channels(spec: ModelSpec) -> int:
    return 1 if spec.color == "gray" else 3


def _first_conv_to(model: nn.Module, channels: int) -> None:
    """Replace the first Conv2d so the network takes ``channels`` input planes."""
    if channels == 3:
        return
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                channels,
                module.out_channels,
                module.kernel_size,  # type: ignore[arg-type]
                module.stride,  # type: ignore[arg-type]
                module.padding,  # type: ignore[arg-type]
                bias=module.bias is not None,
            )
            parent = model
            *path, leaf = name.split(".")
            for part in path:
                parent = getattr(parent, part)
            setattr(parent, leaf, new)
            return


def _torchvision_model(spec: ModelSpec, num_classes: int) -> nn.Module:
    from torchvision import models

    arch = spec.architecture
    if arch == "mobilenet_v3_small":
        net: nn.Module = models.mobilenet_v3_small(
            weights=None, width_mult=spec.width, num_classes=num_classes
        )
    elif arch == "mobilenet_v3_large":
        net = models.mobilenet_v3_large(
            weights=None, width_mult=spec.width, num_classes=num_classes
        )
    elif arch in ("resnet18", "resnet34", "resnet50"):
        net = getattr(models, arch)(weights=None, num_classes=num_classes)
    else:  # the spec's Literal makes this unreachable; keep the message for callers
        raise TrainerError(f"unknown architecture {arch!r}")
    _first_conv_to(net, _in_channels(spec))
    for m in net.modules():
        # torchvision's MobileNetV3 keeps BN statistics with momentum 0.01 (tuned for long
        # ImageNet runs); short runs on small data would validate on nearly initial statistics.
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return net


def build_classifier(spec: ModelSpec, num_classes: int) -> nn.Module:
    """A classifier ``[B, ch, H, W]`` in [0, 1] → logits ``[B, num_classes]``."""
    if num_classes < 1:
        raise TrainerError("a classifier needs at least one class")
    return _torchvision_model(spec, num_classes)


def backbone_stages(spec: ModelSpec) -> tuple[nn.Module, nn.Module, int, int]:
    """The backbone cut into ``(to_stride_8, stride_8_to_16, channels_8, channels_16)``."""
    net = _torchvision_model(spec, 1)
    if spec.architecture.startswith("mobilenet"):
        layers = list(cast(nn.Sequential, net.features))
    else:
        r = net
        layers = [r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3]  # type: ignore[list-item]
    x = torch.zeros(1, _in_channels(spec), 64, 64)
    cut8 = cut16 = -1
    ch8 = ch16 = 0
    with torch.no_grad():
        for i, layer in enumerate(layers):
            layer.eval()
            x = layer(x)
            stride = 64 // x.shape[-1]
            if stride == 8:
                cut8, ch8 = i, x.shape[1]
            elif stride == 16:
                cut16, ch16 = i, x.shape[1]
    if cut8 < 0 or cut16 < 0:
        raise TrainerError(f"{spec.architecture}: no stride-8/16 feature maps found")
    return (
        nn.Sequential(*layers[: cut8 + 1]),
        nn.Sequential(*layers[cut8 + 1 : cut16 + 1]),
        ch8,
        ch16,
    )


class FcosDetector(nn.Module):
    """Anchor-free detector, ``[B, ch, H, W]`` in [0, 1] → ``[B, 4 + C, N]`` (YOLOv8 layout).

    ``N`` is the number of stride-8 plus stride-16 locations. :meth:`raw` gives the training
    head (class logits ``[B, C, N]``, log edge distances ``[B, 4, N]``); :attr:`points` are the
    location centres in input pixels and :attr:`strides` their strides.
    """

    def __init__(self, spec: ModelSpec, num_classes: int, head_width: int = 64) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stage8, self.stage16, ch8, ch16 = backbone_stages(spec)
        self.lat8 = nn.Conv2d(ch8, head_width, 1)
        self.lat16 = nn.Conv2d(ch16, head_width, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.tower = nn.Sequential(
            nn.Conv2d(head_width, head_width, 3, padding=1),
            nn.BatchNorm2d(head_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(head_width, head_width, 3, padding=1),
            nn.BatchNorm2d(head_width),
            nn.ReLU(inplace=True),
        )
        self.cls = nn.Conv2d(head_width, num_classes, 3, padding=1)
        self.reg = nn.Conv2d(head_width, 4, 3, padding=1)
        w, h = spec.input_size
        if w % 16 or h % 16:
            raise TrainerError(f"detector input_size {spec.input_size}: sides must be ×16")
        pts, strides = [], []
        for s in (8, 16):
            gy, gx = torch.meshgrid(torch.arange(h // s), torch.arange(w // s), indexing="ij")
            pts.append(torch.stack([gx, gy]).reshape(2, -1).float() * s + s / 2)
            strides.append(torch.full((h // s * (w // s),), float(s)))
        self.register_buffer("points", torch.cat(pts, 1), persistent=False)
        self.register_buffer("strides", torch.cat(strides), persistent=False)
        bias = cast(torch.Tensor, self.cls.bias)
        with torch.no_grad():  # focal-loss prior: every location starts as "background"
            bias.fill_(-math.log((1 - 0.01) / 0.01))

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f8 = self.stage8(x)
        f16 = self.stage16(f8)
        p16 = self.lat16(f16)
        p8 = self.lat8(f8) + self.up(p16)
        logits, dists = [], []
        for p in (p8, p16):
            t = self.tower(p)
            logits.append(self.cls(t).flatten(2))
            dists.append(self.reg(t).flatten(2))
        return torch.cat(logits, 2), torch.cat(dists, 2)

    def boxes(self, log_dist: torch.Tensor) -> torch.Tensor:
        """Log edge distances ``[B, 4, N]`` → ``x1, y1, x2, y2`` ``[B, 4, N]`` in input pixels."""
        strides: torch.Tensor = self.strides  # type: ignore[assignment]
        points: torch.Tensor = self.points  # type: ignore[assignment]
        d = torch.exp(log_dist.clamp(-6.0, 6.0)) * strides
        return torch.cat([points - d[:, 0:2], points + d[:, 2:4]], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, dists = self.raw(x)
        xyxy = self.boxes(dists)
        centre = (xyxy[:, 0:2] + xyxy[:, 2:4]) / 2
        size = xyxy[:, 2:4] - xyxy[:, 0:2]
        return torch.cat([centre, size, torch.sigmoid(logits)], 1)


def build_detector(spec: ModelSpec, num_classes: int) -> FcosDetector:
    """A detector for ``num_classes`` classes (1 for class-agnostic two-stage pipelines)."""
    if num_classes < 1:
        raise TrainerError("a detector needs at least one class")
    return FcosDetector(spec, num_classes)
