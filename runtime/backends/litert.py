"""LiteRT backend (formerly TensorFlow Lite): one interpreter per model and batch size.

The engine is ``ai_edge_litert.interpreter.Interpreter`` (package ``ai-edge-litert``, the
maintained successor of ``tflite-runtime``). ``tflite_runtime.interpreter`` is used only when
``ai-edge-litert`` is missing and ``tflite_runtime`` imports *and* can build an interpreter —
the last ``tflite-runtime`` wheels (2023) were built against NumPy 1 and fail beside NumPy 2.

``load`` builds the interpreter with ``num_threads`` from
:class:`~runtime.backends.base.BackendOptions` (0: the engine default), allocates its tensors,
reads the signature from ``get_input_details`` / ``get_output_details`` and warms it up.

**Shapes and layout.** The signature comes from each tensor's ``shape_signature``: ``-1`` marks
a dynamic axis (named ``batch`` on axis 0, ``dim<i>`` elsewhere). The backend never transposes:
a TFLite file exported from a torch network by ``litert-torch`` keeps torch's NCHW input, one
converted from TensorFlow is usually NHWC, and the pipeline's ``pre.layout`` (checked against
this signature when the pipeline is built) decides what the model gets.

**Batch sizes.** A TFLite interpreter has one set of allocated shapes. When ``run`` is given a
batch size other than the one allocated, the backend builds a second interpreter for that batch
size (``resize_tensor_input`` on axis 0, then ``allocate_tensors``) and keeps it in a small cache
(:data:`MAX_CACHED_BATCH_SIZES`, least recently used evicted) so a frame with three crops after
a frame with two does not re-plan memory every time. Some graphs cannot be resized (a TFLite
file exported with a fixed batch of 1 often bakes that batch into a reshape, and XNNPack refuses
to re-plan it); for a batch-1 model the backend then runs a larger batch one sample at a time
and stacks the outputs — same results, no batching speed-up — and remembers not to retry the
resize. Any other model that cannot take the batch size raises BackendError naming it.

**Batch probe.** ``litert-torch`` writes files with a fixed batch of 1 (a dynamic batch does not
lower for common networks), so the signature alone would make the pipeline feed a ``for_each``
stage one crop per call. At load, a model whose inputs all have a fixed batch of 1 is therefore
probed (:func:`_probe_batch`): it is resized to a batch of 2 and run on two random samples,
and the result compared with the two samples run one at a time. Only when the resize works *and*
the rows agree (the batch axis really is per-sample) does the backend report axis 0 of its
inputs and outputs as the dynamic ``batch``, so the pipeline sends all crops of a frame in one
call; otherwise the signature keeps the fixed 1, and a graph whose resize runs but mixes samples
is marked to run any larger batch one sample at a time (so a caller that batches anyway still
gets correct rows). :attr:`LiteRtBackend.batchable` tells which case a model is.

**Quantized tensors.** An ``int8``/``uint8`` tensor with a non-zero quantization scale is a
quantized real number ``real = scale * (q - zero_point)``. Such an *input* is reported in the
signature as ``float32``: the pipeline feeds real values (its ``pre`` spec says ``float32``)
and ``run`` quantizes them with the tensor's own parameters (round half to even, clipped to the
integer range). An array of the tensor's integer dtype is passed through unchanged, for callers
that quantize themselves. A quantized *output* is dequantized to ``float32`` (decoders such as
softmax or YOLO need real values) and reported as ``float32``. Per-axis (per-channel)
quantization of an input or output is refused at load: no image model we know uses it at the
boundary and guessing would be worse than failing.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends._common import EngineBackend, first_line
from runtime.backends.base import BackendOptions
from runtime.bundle.manifest import TensorSpec
from runtime.errors import BackendError

__all__ = [
    "MAX_CACHED_BATCH_SIZES",
    "NAME",
    "LiteRtBackend",
    "Quantization",
    "dequantize",
    "load",
    "quantize",
    "unavailable_reason",
]

NAME = "litert"
MAX_CACHED_BATCH_SIZES = 4
"""Interpreters kept per model for batch sizes other than the first; oldest evicted."""


def _import_interpreter() -> tuple[Any, str | None, str]:
    """(Interpreter class or None, why not, module used)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, None, "ai_edge_litert"
    except ImportError as e:
        first = f"ai-edge-litert is not installed ({e})"
    try:  # fallback only if it really works (old wheels break beside NumPy 2)
        mod = importlib.import_module("tflite_runtime.interpreter")
        fallback: Any = mod.Interpreter
    except Exception:
        return None, first, ""
    return fallback, None, "tflite_runtime"


_Interpreter, _IMPORT_ERROR, ENGINE_MODULE = _import_interpreter()


def unavailable_reason() -> str | None:
    """None when a LiteRT interpreter can be imported, else why not (with the extra to install)."""
    if _IMPORT_ERROR is not None:
        return f"{_IMPORT_ERROR}; install it with pip install 'leanloop[litert]'"
    return None


class Quantization:
    """An affine per-tensor quantization: ``real = scale * (q - zero_point)``."""

    __slots__ = ("dtype", "high", "low", "scale", "zero_point")

    def __init__(self, scale: float, zero_point: int, dtype: np.dtype[Any]) -> None:
        self.scale = float(scale)
        self.zero_point = int(zero_point)
        self.dtype = np.dtype(dtype)
        info = np.iinfo(self.dtype)
        self.low, self.high = int(info.min), int(info.max)


def quantize(x: np.ndarray, q: Quantization) -> np.ndarray:
    """Real values -> the integer tensor: ``clip(rint(x / scale) + zero_point)``."""
    scaled = np.rint(np.asarray(x, dtype=np.float32) / np.float32(q.scale)) + q.zero_point
    return np.clip(scaled, q.low, q.high).astype(q.dtype)


def dequantize(x: np.ndarray, q: Quantization) -> np.ndarray:
    """Integer tensor -> real values as float32: ``scale * (x - zero_point)``."""
    return (x.astype(np.float32) - np.float32(q.zero_point)) * np.float32(q.scale)


def _quantization(detail: dict[str, Any], where: str) -> Quantization | None:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu":
        return None
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), dtype=np.float64)
    zeros = np.asarray(params.get("zero_points", []), dtype=np.int64)
    if scales.size == 0:
        scale, zero = detail.get("quantization", (0.0, 0))
        if not scale:
            return None  # a plain integer tensor (e.g. indices), not a quantized real
        return Quantization(scale, zero, dtype)
    if scales.size > 1:
        raise BackendError(f"{where} is quantized per axis; only per-tensor is supported")
    return Quantization(float(scales[0]), int(zeros[0]) if zeros.size else 0, dtype)


def _dynamic_batch(spec: TensorSpec) -> TensorSpec:
    """``spec`` with axis 0 reported as the dynamic ``batch`` axis."""
    if not spec.shape:
        return spec
    return spec.model_copy(update={"shape": ["batch", *spec.shape[1:]]})


def _spec(detail: dict[str, Any], quant: Quantization | None) -> TensorSpec:
    sig = detail.get("shape_signature")
    dims = list(sig if sig is not None and len(sig) else detail["shape"])
    shape: list[int | str] = [
        int(d) if d >= 0 else ("batch" if i == 0 else f"dim{i}") for i, d in enumerate(dims)
    ]
    dtype = "float32" if quant is not None else np.dtype(detail["dtype"]).name
    return TensorSpec(name=str(detail["name"]), shape=shape, dtype=dtype)


class _Runner:
    """One interpreter with its tensors allocated for one set of input shapes."""

    __slots__ = ("batch", "in_index", "interp", "out_index")

    def __init__(self, interp: Any, batch: int) -> None:
        self.interp = interp
        self.batch = batch
        self.in_index = [int(d["index"]) for d in interp.get_input_details()]
        self.out_index = [int(d["index"]) for d in interp.get_output_details()]


class LiteRtBackend(EngineBackend):
    """A ``.tflite`` model in a LiteRT interpreter. Construct with :func:`load`."""

    name = NAME

    def __init__(self, path: Path, options: BackendOptions) -> None:
        """Load and warm up ``path``. Raises BackendError naming the file and the engine."""
        if _Interpreter is None:
            raise BackendError(f"{path}: {unavailable_reason()}")
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendError(f"{self.path}: litert: no such model file")
        self.threads = max(0, int(options.threads))
        try:
            interp = self._new_interpreter()
            interp.allocate_tensors()
            in_details = interp.get_input_details()
            out_details = interp.get_output_details()
        except BackendError:
            raise
        except Exception as e:  # the interpreter raises ValueError / RuntimeError
            raise BackendError(f"{self.path}: litert cannot load the model: {first_line(e)}") from e
        self._in_quant = [
            _quantization(d, f"{self.path}: litert: input {d['name']!r}") for d in in_details
        ]
        self._out_quant = [
            _quantization(d, f"{self.path}: litert: output {d['name']!r}") for d in out_details
        ]
        self._inputs = [_spec(d, q) for d, q in zip(in_details, self._in_quant, strict=True)]
        self._outputs = [_spec(d, q) for d, q in zip(out_details, self._out_quant, strict=True)]
        self._native_dtypes = [np.dtype(d["dtype"]) for d in in_details]
        self._position = {t.name: i for i, t in enumerate(self._inputs)}
        self._base_shapes = [list(map(int, d["shape"])) for d in in_details]
        first_batch = self._base_shapes[0][0] if self._base_shapes and self._base_shapes[0] else 1
        self._runner = _Runner(interp, first_batch)
        self._others: OrderedDict[int, _Runner] = OrderedDict()
        self._split: set[int] = set()  # batch sizes run one sample at a time (resize refused)
        self._per_sample = False  # the resized graph mixes samples: always one at a time
        self._closed = False
        self.batchable = first_batch != 1 or self._probe_batch()
        if first_batch == 1 and self.batchable:
            self._inputs = [_dynamic_batch(t) for t in self._inputs]
            self._outputs = [_dynamic_batch(t) for t in self._outputs]
        self.warmup(options.warmup_runs)

    def _probe_batch(self) -> bool:
        """Can this batch-1 graph run a batch of 2 with per-sample results? (See the module
        docstring.) Raises BackendError only when the model cannot run at all."""
        if any(not shape or shape[0] != 1 for shape in self._base_shapes):
            return False
        if any(
            q is None and d.kind != "f"
            for q, d in zip(self._in_quant, self._native_dtypes, strict=True)
        ):
            return False  # integer inputs (ids, indices): random probes mean nothing
        rng = np.random.default_rng(0)
        feeds = [rng.random((2, *shape[1:]), dtype=np.float32) for shape in self._base_shapes]
        feeds = [f if q is not None else f.astype(d) for f, q, d in
                 zip(feeds, self._in_quant, self._native_dtypes, strict=True)]  # fmt: skip
        runner = self._runner_for(2)
        if runner.batch != 2:
            return False  # resize refused: already recorded as split
        rows = [self._invoke(self._runner, [f[r : r + 1] for f in feeds]) for r in (0, 1)]
        apart = [np.concatenate(parts) for parts in zip(*rows, strict=True)]
        try:
            together = self._invoke(runner, feeds)
        except BackendError:
            agree = False  # allocated, but does not run at batch 2
        else:
            agree = all(
                a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5)
                for a, b in zip(together, apart, strict=True)
            )
        if not agree:
            self._others.pop(2, None)
            self._per_sample = True
        return agree

    def _new_interpreter(self) -> Any:
        assert _Interpreter is not None
        threads = self.threads if self.threads > 0 else None
        return _Interpreter(model_path=str(self.path), num_threads=threads)

    @property
    def interpreter(self) -> Any:
        """The interpreter allocated for the model's own batch size (benchmarks use it)."""
        return self._runner.interp

    @property
    def cached_batch_sizes(self) -> list[int]:
        """Batch sizes with an allocated interpreter, the model's own first."""
        return [self._runner.batch, *self._others]

    @property
    def split_batch_sizes(self) -> list[int]:
        """Batch sizes the graph refused to resize to, run one sample at a time."""
        return sorted(self._split)

    def _runner_for(self, batch: int) -> _Runner:
        if batch == self._runner.batch:
            return self._runner
        runner = self._others.get(batch)
        if runner is not None:
            self._others.move_to_end(batch)
            return runner
        try:
            interp = self._new_interpreter()
            details = interp.get_input_details()
            for detail, shape in zip(details, self._base_shapes, strict=True):
                # the tensor index, not the input's position: they differ in general
                interp.resize_tensor_input(detail["index"], [batch, *shape[1:]], strict=False)
            interp.allocate_tensors()
        except Exception as e:
            if self._runner.batch == 1:
                self._split.add(batch)
                return self._runner
            raise BackendError(
                f"{self.path}: litert cannot run batch size {batch} "
                f"(the model is built for {self._runner.batch}): {first_line(e)}"
            ) from e
        runner = _Runner(interp, batch)
        self._others[batch] = runner
        if len(self._others) > MAX_CACHED_BATCH_SIZES:
            self._others.popitem(last=False)
        return runner

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; outputs in signature order. Raises BackendError."""
        if self._closed:
            raise BackendError(f"{self.path}: litert: the model is closed")
        if len(inputs) != len(self._inputs):
            raise BackendError(
                f"{self.path}: litert: got inputs {sorted(inputs)}, the model takes "
                f"{[t.name for t in self._inputs]}"
            )
        try:
            ordered: list[np.ndarray] = [np.empty(0)] * len(self._inputs)
            for name, value in inputs.items():
                ordered[self._position[name]] = value
        except KeyError as e:
            raise BackendError(
                f"{self.path}: litert: no input named {e.args[0]!r} "
                f"(inputs: {', '.join(self._position)})"
            ) from e
        batch = int(ordered[0].shape[0]) if ordered[0].ndim else 1
        split = self._per_sample or batch in self._split
        runner = self._runner if split else self._runner_for(batch)
        if runner.batch != batch:  # a batch-1 graph that cannot be resized: one sample per call
            rows = [self._invoke(runner, [v[r : r + 1] for v in ordered]) for r in range(batch)]
            return [np.concatenate(parts) for parts in zip(*rows, strict=True)]
        return self._invoke(runner, ordered)

    def _invoke(self, runner: _Runner, ordered: list[np.ndarray]) -> list[np.ndarray]:
        interp = runner.interp
        try:
            for i, value in enumerate(ordered):
                quant = self._in_quant[i]
                if quant is not None and value.dtype != self._native_dtypes[i]:
                    value = quantize(value, quant)
                interp.set_tensor(runner.in_index[i], value)
            interp.invoke()
            outs: list[np.ndarray] = []
            for j, index in enumerate(runner.out_index):
                out = interp.get_tensor(index)  # a copy, safe across calls
                quant = self._out_quant[j]
                outs.append(out if quant is None else dequantize(out, quant))
            return outs
        except Exception as e:
            raise BackendError(f"{self.path}: litert run failed: {first_line(e)}") from e

    def close(self) -> None:
        """Drop the interpreters. Further ``run`` calls raise BackendError."""
        self._closed = True
        self._others.clear()


def load(path: Path, options: BackendOptions) -> LiteRtBackend:
    """Load (and warm up) the ``.tflite`` model at ``path``. Raises BackendError."""
    return LiteRtBackend(path, options)
