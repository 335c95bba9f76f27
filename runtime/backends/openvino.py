"""OpenVINO backend: one compiled model and one reusable infer request per model.

``load`` reads OpenVINO IR (``model.xml`` with its ``model.bin`` beside it) or an ONNX file
directly with ``openvino.Core.read_model`` and compiles it for ``options.device`` (default
``CPU``) with settings for a small edge device running one frame at a time:

- ``PERFORMANCE_HINT: LATENCY`` (one stream; the frame loop is synchronous),
- ``INFERENCE_NUM_THREADS`` from :class:`~runtime.backends.base.BackendOptions` (0 lets
  OpenVINO pick),
- ``INFERENCE_PRECISION_HINT: f32`` — on CPUs with bf16/AMX units OpenVINO would otherwise run
  fp32 models in bf16, and a bundle's golden outputs (and the parity test) expect fp32 results.

Dynamic axes stay dynamic: the CPU plugin runs dynamic shapes natively, so a model exported
with a dynamic batch axis takes any batch size (the classifier fan-out sends all crops of a
frame at once) without a reshape per call. The signature is reported as
:class:`~runtime.bundle.manifest.TensorSpec` with numpy dtype names; a dynamic first axis is
named ``batch`` and any other dynamic axis ``dim<i>`` (OpenVINO keeps no axis names).

One ``InferRequest`` is created at load and reused by every ``run``: it owns the input and
output buffers, so a call allocates nothing but the returned copies. Inputs are shared with
the request (``share_inputs=True``: no copy, safe because the call is synchronous); outputs are
copied (``share_outputs=False``) because the request overwrites its buffers on the next call.
The model is warmed up with zero tensors (dynamic axes set to 1) inside ``load``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends._common import EngineBackend, first_line
from runtime.backends.base import BackendOptions
from runtime.bundle.manifest import TensorSpec
from runtime.errors import BackendError

try:
    import openvino as _ov
except ImportError as _e:  # pragma: no cover - depends on the install
    _ov = None
    _IMPORT_ERROR: str | None = f"openvino is not installed ({_e})"
else:
    _IMPORT_ERROR = None

__all__ = ["NAME", "OpenVinoBackend", "load", "unavailable_reason"]

NAME = "openvino"
_CORE: Any = None  # one openvino.Core per process: it caches plugins and is costly to create


def unavailable_reason() -> str | None:
    """None when openvino can be imported, else why not (with the extra to install)."""
    if _IMPORT_ERROR is not None:
        return f"{_IMPORT_ERROR}; install it with pip install 'leanloop[openvino]'"
    return None


def _core() -> Any:
    global _CORE
    if _CORE is None:
        _CORE = _ov.Core()
    return _CORE


def _port_name(port: Any, fallback: str) -> str:
    try:
        name = str(port.get_any_name())
    except RuntimeError:  # a port without a tensor name
        return fallback
    return name or fallback


def _spec(port: Any, fallback: str) -> TensorSpec:
    shape: list[int | str] = []
    for i, dim in enumerate(port.get_partial_shape()):
        if dim.is_static:
            shape.append(int(dim.get_length()))
        else:
            shape.append("batch" if i == 0 else f"dim{i}")
    dtype = np.dtype(port.get_element_type().to_dtype()).name
    return TensorSpec(name=_port_name(port, fallback), shape=shape, dtype=dtype)


class OpenVinoBackend(EngineBackend):
    """A model compiled by OpenVINO with one reusable infer request. Construct with :func:`load`."""

    name = NAME

    def __init__(self, path: Path, options: BackendOptions) -> None:
        """Read, compile and warm up ``path``. Raises BackendError naming the file and engine."""
        if _ov is None:
            raise BackendError(f"{path}: {unavailable_reason()}")
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendError(f"{self.path}: openvino: no such model file")
        if self.path.suffix == ".xml" and not self.path.with_suffix(".bin").is_file():
            raise BackendError(
                f"{self.path}: openvino: the IR weights file {self.path.with_suffix('.bin').name} "
                "is missing"
            )
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        }
        if options.threads > 0:
            config["INFERENCE_NUM_THREADS"] = int(options.threads)
        self.device = options.device or "CPU"
        try:
            core = _core()
            model = core.read_model(str(self.path))
            self._compiled: Any = core.compile_model(model, self.device, config)
            self._request: Any = self._compiled.create_infer_request()
            self._inputs = [_spec(p, f"input{i}") for i, p in enumerate(self._compiled.inputs)]
            self._outputs = [_spec(p, f"output{i}") for i, p in enumerate(self._compiled.outputs)]
            self.threads = int(self._compiled.get_property("INFERENCE_NUM_THREADS"))
        except Exception as e:  # OpenVINO raises RuntimeError and its own pybind types
            raise BackendError(
                f"{self.path}: openvino cannot load the model: {first_line(e)}"
            ) from e
        self._ports = dict(zip((t.name for t in self._inputs), self._compiled.inputs, strict=True))
        self.warmup(options.warmup_runs)

    @property
    def compiled_model(self) -> Any:
        """The underlying ``openvino.CompiledModel`` (benchmarks compare against it)."""
        return self._compiled

    @property
    def request(self) -> Any:
        """The reused ``openvino.InferRequest``."""
        return self._request

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; outputs in signature order. Raises BackendError."""
        try:
            feed = {self._ports[k]: v for k, v in inputs.items()}
            result = self._request.infer(feed, share_inputs=True, share_outputs=False)
            return list(result.to_tuple())
        except KeyError as e:
            raise BackendError(
                f"{self.path}: openvino: no input named {e.args[0]!r} "
                f"(inputs: {', '.join(self._ports)})"
            ) from e
        except Exception as e:
            if self._request is None:
                raise BackendError(f"{self.path}: openvino: the model is closed") from e
            raise BackendError(f"{self.path}: openvino run failed: {first_line(e)}") from e

    def close(self) -> None:
        """Release the request and the compiled model. Further ``run`` calls raise BackendError."""
        self._request = None
        self._compiled = None


def load(path: Path, options: BackendOptions) -> OpenVinoBackend:
    """Load (and warm up) the OpenVINO IR or ONNX model at ``path``. Raises BackendError."""
    return OpenVinoBackend(path, options)
