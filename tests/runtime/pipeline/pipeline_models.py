"""Tiny models and fake backends for the pipeline tests (not a test module).

- :func:`export_brightness_classifier`: a torch conv classifier exported to ONNX whose class is
  the crop's mean brightness in ninths (``round(9 * mean / 255)``), so a test can paint patches
  and know what each crop must be classified as.
- :func:`make_constant_detector`: an ONNX graph (built with ``onnx.helper``) whose output is a
  fixed detector tensor (plus ``0 * max(input)`` so it depends on the input), e.g. a YOLOv8
  layout with known boxes.
- :class:`CountingBackend` wraps a real backend and records the batch size of every call;
  :class:`FailingBackend` raises on demand. Both implement the real Backend protocol.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.backends.base import Backend
from runtime.bundle.manifest import TensorSpec
from runtime.errors import BackendError

DIGITS = [str(i) for i in range(10)]


def _brightness_module() -> object:
    """Mean brightness ``m`` in [0, 1] -> 10 logits ``10 (18 k m - k^2)``, largest at ``k = 9m``.

    Elementwise ops after one mean only: litert-torch 0.10 bakes the batch of 1 into the
    transposes and reshapes around a convolution or a fully connected layer, so only a graph
    like this one keeps a resizable batch axis in its TFLite file.
    """
    import torch
    from torch import nn

    class Brightness(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            k = torch.arange(10, dtype=torch.float32)
            self.register_buffer("w", 10.0 * 18.0 * k)
            self.register_buffer("b", -10.0 * k * k)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w: torch.Tensor = self.w  # type: ignore[assignment]
            b: torch.Tensor = self.b  # type: ignore[assignment]
            return x.mean(dim=(2, 3)) * w + b

    return Brightness().eval()


def export_brightness_classifier(path: Path, batch: int | None, size: int = 28) -> Path:
    """Export the brightness classifier to ONNX; ``batch=None`` makes the batch axis dynamic."""
    import torch

    model: Any = _brightness_module()
    dummy = torch.zeros(batch or 1, 1, size, size)
    dynamic = None if batch else {"image": {0: "batch"}, "logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    return path


def export_brightness_tflite(path: Path, size: int = 28) -> Path:
    """The brightness classifier as TFLite (litert-torch; batch 1 in the file, NCHW)."""
    import litert_torch
    import torch

    from trainer.export_formats import _quiet

    with _quiet():
        litert_torch.convert(_brightness_module(), (torch.zeros(1, 1, size, size),)).export(
            str(path)
        )
    return path


def export_constant_detector_tflite(
    path: Path, preds: np.ndarray, input_shape: tuple[int, ...] = (1, 1, 96, 96)
) -> Path:
    """:func:`make_constant_detector` as TFLite (litert-torch): ``preds + 1e-12 * max(image)``
    (the converter folds ``0 * max(image)`` away, and OpenVINO then sees a graph with no
    outputs)."""
    import litert_torch
    import torch

    from trainer.export_formats import _quiet

    class Constant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("preds", torch.from_numpy(np.asarray(preds, np.float32)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.preds + 1e-12 * x.amax()
            return out

    with _quiet():
        litert_torch.convert(Constant().eval(), (torch.zeros(*input_shape),)).export(str(path))
    return path


def make_constant_detector(
    path: Path,
    preds: np.ndarray | list[np.ndarray],
    input_shape: tuple[int, ...] = (1, 1, 96, 96),
    output_names: list[str] | None = None,
) -> Path:
    """An ONNX model returning ``preds`` (one array or several) whatever the image."""
    outs = preds if isinstance(preds, list) else [preds]
    names = output_names or [f"out{i}" for i in range(len(outs))]
    nodes = [
        helper.make_node("ReduceMax", ["image"], ["mx"], keepdims=0),
        helper.make_node("Mul", ["mx", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outputs = []
    for i, (arr, name) in enumerate(zip(outs, names, strict=True)):
        a = np.asarray(arr, dtype=np.float32)
        inits.append(numpy_helper.from_array(a, f"const{i}"))
        nodes.append(helper.make_node("Add", [f"const{i}", "nothing"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(a.shape)))
    graph = helper.make_graph(
        nodes,
        "constant_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(input_shape))],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def yolo_v8_preds(rows: list[tuple[float, float, float, float, list[float]]]) -> np.ndarray:
    """``[(cx, cy, w, h, class_scores), ...]`` -> a ``[1, 4+C, N]`` YOLOv8 tensor."""
    cols = [[cx, cy, w, h, *scores] for cx, cy, w, h, scores in rows]
    return np.asarray(cols, dtype=np.float32).T[None]


class CountingBackend:
    """A real backend, with the batch size of every ``run`` recorded."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.batches: list[int] = []
        self.closed = False

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.inner.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.inner.outputs

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.batches.append(int(next(iter(inputs.values())).shape[0]))
        return self.inner.run(inputs)

    def close(self) -> None:
        self.closed = True


class FailingBackend(CountingBackend):
    """Raises BackendError while ``fail`` is set."""

    fail = False

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.fail:
            raise BackendError("fake engine: run failed")
        return super().run(inputs)
