"""Export a trained network to the device's other engines: OpenVINO IR and TFLite (LiteRT).

The ONNX file written by :mod:`trainer.export` is the reference. From the same torch network:

- **OpenVINO IR** (``<name>.xml`` + ``<name>.bin``): ``openvino.convert_model`` reads the
  verified ONNX file (so IR and ONNX share one graph, names and dynamic ``batch`` axis) and
  ``openvino.save_model`` writes it with ``compress_to_fp16=False`` — ``save_model`` compresses
  weights to fp16 by default, which would break fp32 parity.
- **TFLite** (``<name>.tflite``): ``litert_torch.convert`` (package ``litert-torch``, the
  successor of ``ai-edge-torch``; extra ``leanloop[export]``; it needs no TensorFlow) lowers
  the torch module through ``torch.export`` to a LiteRT flatbuffer, fp32, no quantization.
  The file has a **fixed batch of 1** and keeps torch's NCHW layout: ``torch.export`` with a
  dynamic batch fails for these networks in litert-torch 0.10 (the classifier's flatten does
  not lower; the detector lowers but XNNPack cannot re-plan it), so the device pipeline runs the
  TFLite classifier once per crop, and the LiteRT backend resizes to other batch sizes only when
  the graph allows it.

Every export is verified like the ONNX one: the written file is run by the device's own engine
on a fixed random batch and compared with torch; a difference above ``tolerance`` (1e-4) raises
:class:`~trainer.errors.TrainerError`. :func:`tflite_unavailable_reason` says why TFLite cannot
be written here (the extra is missing), so callers can skip the format instead of failing.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.errors import TrainerError

__all__ = [
    "export_openvino",
    "export_tflite",
    "tflite_unavailable_reason",
    "verify_openvino",
    "verify_tflite",
]


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _reference(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out: np.ndarray = model.eval()(torch.from_numpy(x)).numpy()
    return out


def _compare(path: Path, engine: str, got: np.ndarray, want: np.ndarray, tolerance: float) -> float:
    if got.shape != want.shape:
        raise TrainerError(
            f"{path}: {engine} output shape {got.shape} differs from torch {want.shape}"
        )
    diff = float(np.max(np.abs(got - want)))
    if diff > tolerance:
        raise TrainerError(f"{path}: {engine} differs from torch by {diff:.2e} > {tolerance}")
    return diff


# ---- OpenVINO IR ---------------------------------------------------------------------------


def export_openvino(
    model: torch.nn.Module,
    onnx_path: Path,
    xml_path: Path,
    sample_shape: tuple[int, ...],
    tolerance: float = 1e-4,
) -> float:
    """Convert the verified ONNX file ``onnx_path`` to fp32 OpenVINO IR at ``xml_path`` (+ .bin)
    and verify it against ``model``. Returns the max abs difference.

    Raises TrainerError when openvino is missing, the conversion fails, or the IR disagrees.
    """
    try:
        import openvino as ov
    except ImportError as e:
        raise TrainerError(
            f"OpenVINO IR export needs openvino: pip install 'leanloop[device]' ({e})"
        ) from e
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ov_model = ov.convert_model(str(onnx_path))
        ov.save_model(ov_model, str(xml_path), compress_to_fp16=False)
    except Exception as e:  # OpenVINO raises RuntimeError / OpConversionFailure and others
        raise TrainerError(f"{onnx_path}: OpenVINO IR conversion failed: {_first_line(e)}") from e
    return verify_openvino(model, xml_path, sample_shape, tolerance)


def verify_openvino(
    model: torch.nn.Module,
    xml_path: Path,
    sample_shape: tuple[int, ...],
    tolerance: float = 1e-4,
    batch: int = 3,
) -> float:
    """Run the IR on the device's OpenVINO backend and ``model`` in torch; compare."""
    from runtime.backends import BackendOptions, load_backend
    from runtime.errors import BackendError

    x = np.random.default_rng(0).random((batch, *sample_shape), dtype=np.float32)
    try:
        be = load_backend("openvino", xml_path, BackendOptions(warmup_runs=0))
        got = be.run({be.inputs[0].name: x})[0]
        be.close()
    except BackendError as e:
        raise TrainerError(f"{xml_path}: the exported IR does not run: {e}") from e
    return _compare(xml_path, "openvino", got, _reference(model, x), tolerance)


# ---- TFLite --------------------------------------------------------------------------------


def tflite_unavailable_reason() -> str | None:
    """None when TFLite export works here, else why not (with the extra to install)."""
    try:
        import litert_torch  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising anything at import
        return f"litert-torch is not installed ({_first_line(e)}); pip install 'leanloop[export]'"
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the converter's progress bars and deprecation chatter (stdout and warnings)."""
    old = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        if old is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = old


def export_tflite(
    model: torch.nn.Module,
    path: Path,
    sample_shape: tuple[int, ...],
    tolerance: float = 1e-4,
) -> float:
    """Write ``model`` to ``path`` as fp32 TFLite (batch 1, NCHW) with litert-torch and verify
    it on the device's LiteRT backend. Returns the max abs difference.

    Raises TrainerError when litert-torch is missing, the conversion fails, or LiteRT disagrees.
    """
    reason = tflite_unavailable_reason()
    if reason is not None:
        raise TrainerError(f"TFLite export of {type(model).__name__}: {reason}")
    import litert_torch

    model = model.eval()
    sample = torch.zeros(1, *sample_shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet():
            converted: Any = litert_torch.convert(model, (sample,))
            converted.export(str(path))
    except Exception as e:  # torch.export and the MLIR converter raise many unrelated types
        raise TrainerError(
            f"TFLite export of {type(model).__name__} failed: {_first_line(e)}"
        ) from e
    return verify_tflite(model, path, sample_shape, tolerance)


def verify_tflite(
    model: torch.nn.Module,
    path: Path,
    sample_shape: tuple[int, ...],
    tolerance: float = 1e-4,
    batch: int = 3,
) -> float:
    """Run ``path`` on the device's LiteRT backend (one sample per call, as the file has a fixed
    batch of 1) and ``model`` in torch on the same ``batch`` samples; compare."""
    from runtime.backends import BackendOptions, load_backend
    from runtime.errors import BackendError

    x = np.random.default_rng(0).random((batch, *sample_shape), dtype=np.float32)
    try:
        be = load_backend("litert", path, BackendOptions(warmup_runs=0))
        name = be.inputs[0].name
        got = np.concatenate([be.run({name: x[i : i + 1]})[0] for i in range(batch)])
        be.close()
    except BackendError as e:
        raise TrainerError(f"{path}: the exported TFLite model does not run: {e}") from e
    return _compare(path, "litert", got, _reference(model, x), tolerance)
