"""ONNX Runtime backend: one ``InferenceSession`` per model.

``load`` builds the session with settings chosen for a small edge device running one frame at a
time: ``intra_op_num_threads`` from :class:`~runtime.backends.base.BackendOptions` (0 lets ORT
pick), one inter-op thread, sequential execution, every graph optimisation and **no
spin-waiting** in ORT's thread pools (see :data:`SESSION_CONFIG`). Execution
providers come from the options in order of preference (default: CPU); providers this ORT
build does not have are skipped with a warning rather than failing, so one device config can
serve a fleet with mixed hardware.

The model's signature is read once and reported as :class:`~runtime.bundle.manifest.TensorSpec`
with numpy dtype names (``tensor(float)`` -> ``float32``) and dynamic axes as strings. The
session is then warmed up with zero tensors (dynamic axes set to 1) so the first real frame
does not pay for lazy initialisation.

``run`` is the hot path: output names are pre-computed and, on the CPU provider, the call goes
straight to the C++ session (``InferenceSession._sess.run``). ORT's Python ``Session.run``
re-checks on every call what is fixed for a device: that every required input is fed (done
here with one set test against the names read at load), that no ``OrtValue`` of another
session is passed (the pipeline feeds numpy arrays) and that WebGPU graph capture is off; it
also retries on another provider after an ``EPFail``, which only a GPU provider raises, so
any other provider list keeps the public ``run``. The only extra cost left is the ``try`` that
wraps ORT's exceptions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends._common import EngineBackend, first_line
from runtime.backends.base import BackendOptions
from runtime.bundle.manifest import TensorSpec
from runtime.errors import BackendError

try:
    import onnxruntime as _ort
except ImportError as _e:  # pragma: no cover - depends on the install
    _ort = None
    _IMPORT_ERROR: str | None = f"onnxruntime is not installed ({_e})"
else:
    _IMPORT_ERROR = None

__all__ = ["NAME", "SESSION_CONFIG", "OrtBackend", "load", "ort_dtype", "unavailable_reason"]

NAME = "onnxruntime"
DEFAULT_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)

_log = logging.getLogger("leanloop.backends.onnxruntime")

SESSION_CONFIG: dict[str, str] = {
    "session.intra_op.allow_spinning": "0",
    "session.inter_op.allow_spinning": "0",
}
"""Session config entries set on every session.

ORT's worker threads spin on a core between (and after) parallel sections by default, to pick
up the next one a few microseconds sooner. On a 2-core device that also runs camera capture,
uploads and Python pre-/post-processing between engine calls, the spinning workers take the
core the main thread needs: measured on the bench's 2-core box under load, a detector ->
classifier frame with 2 threads took 2-10 ms p50 (p90 13 ms) with spinning against 1.5 ms
(p90 2 ms) without, the raw detector+classifier calls alone were no slower without spinning
(1.0 ms either way), and MobileNet-224 with 2 threads went from 20 ms to 11.7 ms.
``session.force_spinning_stop`` (spin during a run, stop when it returns) did not help there.
With one thread there are no workers and these entries change nothing."""

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(uint16)": "uint16",
    "tensor(int16)": "int16",
    "tensor(uint32)": "uint32",
    "tensor(int32)": "int32",
    "tensor(uint64)": "uint64",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
}


def ort_dtype(type_str: str) -> str:
    """Map an ORT type string (``'tensor(float)'``) to a numpy dtype name (``'float32'``).

    Unknown types keep their inner name (``'tensor(bfloat16)'`` -> ``'bfloat16'``).
    """
    known = _DTYPES.get(type_str)
    if known is not None:
        return known
    if type_str.startswith("tensor(") and type_str.endswith(")"):
        return type_str[len("tensor(") : -1]
    return type_str


def unavailable_reason() -> str | None:
    """None when onnxruntime can be imported, else why not (with the extra to install)."""
    if _IMPORT_ERROR is not None:
        return f"{_IMPORT_ERROR}; install it with pip install 'leanloop[device]'"
    return None


def _spec(arg: Any) -> TensorSpec:
    shape: list[int | str] = []
    for i, d in enumerate(arg.shape or []):
        if (isinstance(d, int) and d >= 0) or (isinstance(d, str) and d):
            shape.append(d)
        else:  # unnamed dynamic axis (None or -1)
            shape.append(f"dim{i}")
    return TensorSpec(name=arg.name, shape=shape, dtype=ort_dtype(arg.type))


def _choose_providers(wanted: tuple[str, ...], available: list[str]) -> list[str]:
    chosen = [p for p in wanted if p in available]
    for p in wanted:
        if p not in available:
            _log.warning(
                "onnxruntime: execution provider %s is not available here (have: %s); skipped",
                p,
                ", ".join(available),
            )
    return chosen or ["CPUExecutionProvider"]


class OrtBackend(EngineBackend):
    """A model loaded in an ONNX Runtime session. Construct with :func:`load`."""

    name = NAME

    def __init__(self, path: Path, options: BackendOptions) -> None:
        """Load and warm up ``path``. Raises BackendError naming the file and the engine."""
        if _ort is None:
            raise BackendError(f"{path}: {unavailable_reason()}")
        self.path = Path(path)
        so = _ort.SessionOptions()
        so.intra_op_num_threads = max(0, int(options.threads))
        so.inter_op_num_threads = 1
        so.execution_mode = _ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = _ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        for key, value in SESSION_CONFIG.items():
            so.add_session_config_entry(key, value)
        providers = _choose_providers(
            tuple(options.providers) or DEFAULT_PROVIDERS, _ort.get_available_providers()
        )
        if not self.path.is_file():
            raise BackendError(f"{self.path}: onnxruntime: no such model file")
        try:
            self._session: Any = _ort.InferenceSession(
                str(self.path), sess_options=so, providers=providers
            )
            self._inputs = [_spec(a) for a in self._session.get_inputs()]
            self._outputs = [_spec(a) for a in self._session.get_outputs()]
        except Exception as e:  # ORT raises its own pybind exception types
            raise BackendError(
                f"{self.path}: onnxruntime cannot load the model: {first_line(e)}"
            ) from e
        self._output_names = [o.name for o in self._outputs]
        self.providers: list[str] = list(self._session.get_providers())
        self._required = frozenset(
            a.name for a in self._session.get_inputs() if not a.type.startswith("optional")
        )
        self._run_direct: Any = None
        direct = getattr(getattr(self._session, "_sess", None), "run", None)
        if self.providers == ["CPUExecutionProvider"] and callable(direct):
            self._run_direct = direct
        self.threads = so.intra_op_num_threads
        self.warmup(options.warmup_runs)

    @property
    def session(self) -> Any:
        """The underlying ``ort.InferenceSession`` (benchmarks compare against it)."""
        return self._session

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; outputs in signature order. Raises BackendError."""
        try:
            if self._run_direct is not None and self._required <= inputs.keys():
                return self._run_direct(self._output_names, inputs, None)
            # A missing input (or a GPU provider): the public run, for its checks and message.
            return self._session.run(self._output_names, inputs)
        except Exception as e:
            if self._session is None:
                raise BackendError(f"{self.path}: onnxruntime: the model is closed") from e
            raise BackendError(f"{self.path}: onnxruntime run failed: {first_line(e)}") from e

    def close(self) -> None:
        """Release the session. Further ``run`` calls raise BackendError."""
        self._session = None
        self._run_direct = None


def load(path: Path, options: BackendOptions) -> OrtBackend:
    """Load (and warm up) the ONNX model at ``path``. Raises BackendError."""
    return OrtBackend(path, options)
