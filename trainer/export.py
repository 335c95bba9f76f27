"""Export the trained networks to ONNX and prove the files compute what torch computes.

Both graphs are exported with opset 17 by the TorchScript-based exporter (``dynamo=False``:
deterministic, no extra dependencies, and these small CNNs need nothing newer). Both have a
dynamic batch axis named ``batch``. The detector's graph includes its box decoding, so its single
output is the ``[batch, 5, 144]`` YOLOv8 layout the device pipeline decodes.

:func:`export_alternates` then writes the same networks for the device's other engines
(OpenVINO IR and TFLite, :mod:`trainer.export_formats`), each verified the same way.

Every export is checked: the file is loaded by onnxruntime (the device engine), run on a fixed
random input, and compared with torch; a difference above ``tolerance`` (1e-4) raises
:class:`~trainer.errors.TrainerError` rather than shipping a model that disagrees with itself.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from trainer.errors import TrainerError
from trainer.train import TrainedModels

__all__ = [
    "ALTERNATE_FORMATS",
    "CLASSIFIER_IO",
    "DETECTOR_IO",
    "OPSET",
    "export_alternates",
    "export_models",
    "export_onnx",
    "verify_onnx",
]

OPSET = 17
DETECTOR_IO = ("images", "detections", (1, 96, 96))
"""Input name, output name, and the per-sample input shape of the detector."""
CLASSIFIER_IO = ("crops", "logits", (1, 28, 28))
"""Input name, output name, and the per-sample input shape of the classifier."""


def export_onnx(
    model: torch.nn.Module,
    path: Path,
    input_name: str,
    output_name: str,
    sample_shape: tuple[int, ...],
    tolerance: float = 1e-4,
) -> float:
    """Write ``model`` to ``path`` as ONNX and verify it. Returns the max abs difference.

    Raises TrainerError when the export fails or onnxruntime disagrees with torch.
    """
    model = model.eval()
    dummy = torch.zeros(1, *sample_shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as e:  # the exporter raises many unrelated types
        raise TrainerError(f"ONNX export of {type(model).__name__} failed: {e}") from e
    with torch.no_grad():
        out_shape = tuple(model(dummy).shape)
    path.write_bytes(_static_output_dims(path.read_bytes(), out_shape))
    return verify_onnx(model, path, sample_shape, tolerance)


def _static_output_dims(data: bytes, out_shape: tuple[int, ...]) -> bytes:
    """Pin every output dimension but the batch to its value (the exporter leaves some
    symbolic), so engines and the bundle manifest see ``[batch, 5, 144]``, not names."""
    import onnx

    proto = onnx.load_from_string(data)
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        for dim, value in zip(list(dims)[1:], out_shape[1:], strict=True):
            dim.ClearField("dim_param")
            dim.dim_value = value
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise TrainerError(f"exported ONNX graph is invalid: {e}") from e
    return proto.SerializeToString()


def verify_onnx(
    model: torch.nn.Module,
    path: Path,
    sample_shape: tuple[int, ...],
    tolerance: float = 1e-4,
    batch: int = 3,
) -> float:
    """Run ``path`` in onnxruntime and ``model`` in torch on the same input; compare.

    Returns the max abs difference; raises TrainerError above ``tolerance``.
    """
    import onnxruntime as ort

    x = np.random.default_rng(0).random((batch, *sample_shape), dtype=np.float32)
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy()
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    except Exception as e:  # onnxruntime's errors share no base class worth naming
        raise TrainerError(f"{path}: onnxruntime cannot run the exported model: {e}") from e
    if got.shape != want.shape:
        raise TrainerError(f"{path}: output shape {got.shape} differs from torch {want.shape}")
    diff = float(np.max(np.abs(got - want)))
    if diff > tolerance:
        raise TrainerError(f"{path}: onnxruntime differs from torch by {diff:.2e} > {tolerance}")
    return diff


def export_models(models: TrainedModels, folder: Path) -> dict[str, float]:
    """Write ``folder/detector.onnx`` and ``folder/classifier.onnx``; return the max diffs."""
    diffs = {}
    for key, net, (inp, out, shape) in (
        ("detector", models.detector, DETECTOR_IO),
        ("classifier", models.classifier, CLASSIFIER_IO),
    ):
        diffs[key] = export_onnx(net, folder / f"{key}.onnx", inp, out, shape)
    return diffs


ALTERNATE_FORMATS = ("openvino", "tflite")
"""Formats written beside the ONNX files by :func:`export_alternates` (see
:mod:`trainer.export_formats`)."""


def export_alternates(
    models: TrainedModels,
    folder: Path,
    formats: tuple[str, ...] = ALTERNATE_FORMATS,
    skip_unavailable: bool = True,
) -> tuple[dict[str, float], dict[str, str]]:
    """Write the other engines' files next to the ONNX files :func:`export_models` wrote:
    ``<key>.xml`` + ``<key>.bin`` (``openvino``) and ``<key>.tflite`` (``tflite``).

    Returns ``({"<format>.<key>": max abs diff vs torch}, {"<format>": why it was skipped})``.
    A format whose exporter is not installed (TFLite without ``leanloop[export]``) is skipped
    when ``skip_unavailable``, else raises. Raises TrainerError for a failed or wrong export.
    """
    from trainer.export_formats import export_openvino, export_tflite, tflite_unavailable_reason

    unknown = set(formats) - set(ALTERNATE_FORMATS)
    if unknown:
        raise TrainerError(f"unknown export formats {sorted(unknown)} (known: {ALTERNATE_FORMATS})")
    diffs: dict[str, float] = {}
    skipped: dict[str, str] = {}
    pairs = (
        ("detector", models.detector, DETECTOR_IO),
        ("classifier", models.classifier, CLASSIFIER_IO),
    )
    if "openvino" in formats:
        for key, net, (_, _, shape) in pairs:
            diffs[f"openvino.{key}"] = export_openvino(
                net, folder / f"{key}.onnx", folder / f"{key}.xml", shape
            )
    if "tflite" in formats:
        reason = tflite_unavailable_reason()
        if reason is not None and skip_unavailable:
            skipped["tflite"] = reason
        else:
            for key, net, (_, _, shape) in pairs:
                diffs[f"tflite.{key}"] = export_tflite(net, folder / f"{key}.tflite", shape)
    return diffs, skipped
