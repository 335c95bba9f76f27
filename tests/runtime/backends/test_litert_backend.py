"""The LiteRT backend: signature, batch sizes, quantized tensors, warm-up, threads, errors.

Real ``.tflite`` files are made from tiny torch modules with litert-torch (the hub-side
``leanloop[export]`` extra); tests that need one are skipped when it is not installed. The
quantized model is one of them with its float input and output wrapped in real LiteRT
``DEQUANTIZE`` / ``QUANTIZE`` ops (rewritten with the flatbuffer schema that ships in
``ai-edge-litert``): litert-torch itself writes float I/O only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.backends import available_backends, load_backend
from runtime.backends.base import Backend, BackendOptions
from runtime.errors import BackendError

lt = pytest.importorskip("runtime.backends.litert")
if lt.unavailable_reason() is not None:
    pytest.skip(lt.unavailable_reason(), allow_module_level=True)


def _convert(module: Any, sample_shape: tuple[int, ...], path: Path) -> Path:
    pytest.importorskip("litert_torch")
    import litert_torch
    import torch

    from trainer.export_formats import _quiet

    with _quiet():
        litert_torch.convert(module.eval(), (torch.zeros(*sample_shape),)).export(str(path))
    return path


@pytest.fixture(scope="module")
def affine_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``x`` float [1, 3, 4, 4] (NCHW, as torch) -> ``2 * x + 1`` (elementwise: resizable)."""
    import torch

    class Affine(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2.0 + 1.0

    return _convert(Affine(), (1, 3, 4, 4), tmp_path_factory.mktemp("lt") / "affine.tflite")


@pytest.fixture(scope="module")
def flat_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``[1, 1, 4, 4]`` -> flatten -> linear -> ``[1, 3]``: the batch is baked into a reshape."""
    import torch

    torch.manual_seed(0)

    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(x, 1))

    net = Flat()
    path = _convert(net, (1, 1, 4, 4), tmp_path_factory.mktemp("lt") / "flat.tflite")
    torch.save(net.state_dict(), path.with_suffix(".pt"))
    return path


@pytest.fixture(scope="module")
def mixing_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``x - mean(x)`` over *all* axes: per sample at batch 1, but a resized batch mixes rows."""
    import torch

    class Mixing(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x - x.mean()

    return _convert(Mixing(), (1, 3, 4, 4), tmp_path_factory.mktemp("lt") / "mixing.tflite")


def _with_quantized_io(
    src: Path, dst: Path, dtype: str, in_q: tuple[float, int], out_q: tuple[float, int]
) -> Path:
    """Rewrite ``src`` so its input is ``dtype`` quantized with ``in_q`` (scale, zero point)
    and dequantized by a DEQUANTIZE op, and its output quantized by a QUANTIZE op to ``out_q``.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(src.read_bytes(), 0))
    sg = model.subgraphs[0]
    tensor_type = {"int8": fb.TensorType.INT8, "uint8": fb.TensorType.UINT8}[dtype]

    def add_tensor(like: Any, name: bytes, q: tuple[float, int]) -> int:
        t = fb.TensorT()
        t.shape, t.shapeSignature = list(like.shape), like.shapeSignature
        t.type, t.name, t.buffer = tensor_type, name, 0
        t.quantization = fb.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [q[0]], [q[1]]
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    def add_op(code: int, inputs: list[int], outputs: list[int]) -> Any:
        oc = fb.OperatorCodeT()
        oc.builtinCode = oc.deprecatedBuiltinCode = code
        oc.version = 2
        model.operatorCodes.append(oc)
        op = fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = len(model.operatorCodes) - 1, inputs, outputs
        return op

    old_in, old_out = sg.inputs[0], sg.outputs[0]
    new_in = add_tensor(sg.tensors[old_in], b"q_input", in_q)
    new_out = add_tensor(sg.tensors[old_out], b"q_output", out_q)
    sg.operators = [
        add_op(fb.BuiltinOperator.DEQUANTIZE, [new_in], [old_in]),
        *sg.operators,
        add_op(fb.BuiltinOperator.QUANTIZE, [old_out], [new_out]),
    ]
    sg.inputs, sg.outputs = [new_in], [new_out]
    for sig in model.signatureDefs or []:
        for t in sig.inputs or []:
            t.tensorIndex = new_in if t.tensorIndex == old_in else t.tensorIndex
        for t in sig.outputs or []:
            t.tensorIndex = new_out if t.tensorIndex == old_out else t.tensorIndex
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(builder.Output())
    return dst


@pytest.mark.parametrize(
    ("dtype", "in_q", "out_q"), [("int8", (0.5, -3), (0.25, 1)), ("uint8", (0.05, 128), (0.1, 10))]
)
def test_quantized_model_takes_real_values_and_returns_real_values_when_run(
    affine_tflite: Path,
    tmp_path: Path,
    dtype: str,
    in_q: tuple[float, int],
    out_q: tuple[float, int],
) -> None:
    path = _with_quantized_io(affine_tflite, tmp_path / f"{dtype}.tflite", dtype, in_q, out_q)
    be = lt.load(path, BackendOptions(threads=1))
    [inp], [out] = be.inputs, be.outputs
    assert (inp.dtype, out.dtype) == ("float32", "float32")  # reported as the reals they encode
    assert inp.shape == ["batch", 3, 4, 4]  # the probe ran the quantized graph at batch 2
    info = np.iinfo(dtype)
    x = np.random.default_rng(3).uniform(-4, 4, (2, 3, 4, 4)).astype(np.float32)
    # What the engine must compute: quantize the input with its own scale and zero point,
    # dequantize, 2x + 1, quantize to the output's parameters; the backend dequantizes that.
    qx = np.clip(np.rint(x / np.float32(in_q[0])) + in_q[1], info.min, info.max)
    y = (qx - in_q[1]).astype(np.float32) * np.float32(in_q[0]) * 2 + 1
    qy = np.clip(np.rint(y / np.float32(out_q[0])) + out_q[1], info.min, info.max)
    want = (qy - out_q[1]).astype(np.float32) * np.float32(out_q[0])
    got = be.run({inp.name: x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=out_q[0] * 1.01)  # at most one step of rounding
    assert np.mean(got == want) > 0.95
    # An array of the tensor's own integer dtype is taken as already quantized.
    raw = be.run({inp.name: qx.astype(dtype)})[0]
    np.testing.assert_array_equal(raw, got)


def test_signature_reports_the_exported_nchw_layout_when_loaded(affine_tflite: Path) -> None:
    be = load_backend("litert", affine_tflite, BackendOptions())
    assert isinstance(be, Backend) and be.name == "litert"
    [inp], [out] = be.inputs, be.outputs
    # Exported with a fixed batch of 1; the batch probe found the axis per-sample.
    assert inp.shape == ["batch", 3, 4, 4] and inp.dtype == "float32"
    assert out.shape == ["batch", 3, 4, 4] and out.dtype == "float32"


def test_batch_probe_keeps_the_fixed_batch_when_the_graph_cannot_be_resized(
    flat_tflite: Path,
) -> None:
    be = lt.load(flat_tflite, BackendOptions(warmup_runs=0))
    assert not be.batchable and be.inputs[0].shape == [1, 1, 4, 4]
    assert be.outputs[0].shape == [1, 3] and be.split_batch_sizes == [2]


def test_batch_probe_runs_one_sample_at_a_time_when_the_resized_graph_mixes_samples(
    mixing_tflite: Path,
) -> None:
    be = lt.load(mixing_tflite, BackendOptions(warmup_runs=0))
    assert not be.batchable and be.inputs[0].shape == [1, 3, 4, 4]
    assert be.cached_batch_sizes == [1]
    x = np.random.default_rng(1).random((3, 3, 4, 4), dtype=np.float32)
    want = x - x.mean(axis=(1, 2, 3), keepdims=True)  # each sample on its own
    np.testing.assert_allclose(be.run({be.inputs[0].name: x})[0], want, atol=1e-6)


def test_run_computes_the_model_when_given_its_batch(affine_tflite: Path) -> None:
    be = lt.load(affine_tflite, BackendOptions(threads=1, warmup_runs=0))
    x = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)
    np.testing.assert_allclose(be.run({be.inputs[0].name: x})[0], 2 * x + 1)


def test_run_resizes_once_per_batch_size_when_batches_differ(affine_tflite: Path) -> None:
    be = lt.load(affine_tflite, BackendOptions(warmup_runs=0))
    name = be.inputs[0].name
    for batch in (3, 2, 3, 1, 2):
        x = np.full((batch, 3, 4, 4), batch, np.float32)
        np.testing.assert_allclose(be.run({name: x})[0], 2 * x + 1)
    assert be.cached_batch_sizes == [1, 3, 2]
    assert be.split_batch_sizes == []


def test_batch_cache_evicts_the_oldest_size_when_full(affine_tflite: Path) -> None:
    be = lt.load(affine_tflite, BackendOptions(warmup_runs=0))
    name = be.inputs[0].name
    for batch in range(2, 3 + lt.MAX_CACHED_BATCH_SIZES):
        be.run({name: np.zeros((batch, 3, 4, 4), np.float32)})
    assert len(be.cached_batch_sizes) == 1 + lt.MAX_CACHED_BATCH_SIZES
    assert 2 not in be.cached_batch_sizes


def test_run_goes_one_sample_at_a_time_when_the_graph_cannot_be_resized(
    flat_tflite: Path,
) -> None:
    import torch

    net = torch.nn.Linear(16, 3)
    net.load_state_dict({k[3:]: v for k, v in torch.load(flat_tflite.with_suffix(".pt")).items()})
    be = lt.load(flat_tflite, BackendOptions(warmup_runs=0))
    x = np.random.default_rng(0).random((5, 1, 4, 4), dtype=np.float32)
    got = be.run({be.inputs[0].name: x})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x.reshape(5, 16))).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert be.split_batch_sizes == [2, 5]  # 2: the load-time batch probe


@pytest.mark.parametrize("runs", [0, 1, 3])
def test_warmup_runs_the_model_on_zeros_when_loading(
    affine_tflite: Path, monkeypatch: pytest.MonkeyPatch, runs: int
) -> None:
    seen: list[dict[str, np.ndarray]] = []
    real_run = lt.LiteRtBackend.run

    def spy(self: object, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        seen.append(inputs)
        return real_run(self, inputs)

    monkeypatch.setattr(lt.LiteRtBackend, "run", spy)
    lt.load(affine_tflite, BackendOptions(warmup_runs=runs))
    assert len(seen) == runs
    assert all(not v.any() and v.shape == (1, 3, 4, 4) for f in seen for v in f.values())


@pytest.mark.parametrize("threads", [0, 1, 2])
def test_threads_reach_the_interpreter_when_set(
    affine_tflite: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    made: list[Any] = []
    real = lt._Interpreter

    def record(**kwargs: Any) -> Any:
        made.append(kwargs["num_threads"])
        return real(**kwargs)

    monkeypatch.setattr(lt, "_Interpreter", record)
    be = lt.load(affine_tflite, BackendOptions(threads=threads))
    be.run({be.inputs[0].name: np.zeros((2, 3, 4, 4), np.float32)})  # a second interpreter
    assert made == [threads or None] * 2 and be.threads == threads


def test_load_raises_naming_file_and_engine_when_the_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"nope\.tflite: litert: no such model file"):
        load_backend("litert", tmp_path / "nope.tflite")


def test_load_raises_naming_file_and_engine_when_the_file_is_corrupt(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(BackendError, match=r"bad\.tflite: litert cannot load the model: \S"):
        load_backend("litert", bad)


def test_run_raises_backend_error_when_input_is_wrong_or_model_closed(
    affine_tflite: Path,
) -> None:
    be = lt.load(affine_tflite, BackendOptions(warmup_runs=0))
    with pytest.raises(BackendError, match=r"litert: no input named 'nope'"):
        be.run({"nope": np.zeros((1, 3, 4, 4), np.float32)})
    with pytest.raises(BackendError, match="litert run failed"):
        be.run({be.inputs[0].name: np.zeros((1, 3, 5, 4), np.float32)})
    be.close()
    with pytest.raises(BackendError, match="litert: the model is closed"):
        be.run({be.inputs[0].name: np.zeros((1, 3, 4, 4), np.float32)})


# ---- quantized tensors (pure helpers) ---------------------------------------------------------


def _detail(dtype: type, scale: float, zero: int, scales: list[float] | None = None) -> dict:
    return {
        "name": "t",
        "shape": np.array([1, 4]),
        "shape_signature": np.array([-1, 4]),
        "dtype": dtype,
        "quantization": (scale, zero),
        "quantization_parameters": {
            "scales": np.array(scales if scales is not None else [scale] if scale else []),
            "zero_points": np.array([zero] * len(scales or ([scale] if scale else []))),
        },
    }


def test_quantized_tensors_are_reported_as_float_when_they_have_a_scale() -> None:
    q = lt._quantization(_detail(np.int8, 0.5, -3), "t")
    assert q is not None and (q.scale, q.zero_point, q.low, q.high) == (0.5, -3, -128, 127)
    spec = lt._spec(_detail(np.int8, 0.5, -3), q)
    assert spec.dtype == "float32" and spec.shape == ["batch", 4]
    assert lt._quantization(_detail(np.int32, 0.0, 0), "t") is None  # plain integers stay
    assert lt._quantization(_detail(np.float32, 0.0, 0), "t") is None


def test_quantize_and_dequantize_round_trip_and_clip_when_out_of_range() -> None:
    q = lt.Quantization(0.5, -3, np.dtype(np.int8))
    x = np.array([0.0, 1.0, -1.2, 1000.0, -1000.0], np.float32)
    qx = lt.quantize(x, q)
    assert qx.dtype == np.int8 and qx.tolist() == [-3, -1, -5, 127, -128]
    back = lt.dequantize(qx, q)
    assert back.dtype == np.float32 and back[:3].tolist() == [0.0, 1.0, -1.0]
    u = lt.Quantization(1 / 255, 0, np.dtype(np.uint8))
    assert lt.quantize(np.array([0.0, 0.25, 1.0, 2.0]), u).tolist() == [0, 64, 255, 255]


def test_per_axis_quantization_is_refused_when_found_at_the_boundary() -> None:
    with pytest.raises(BackendError, match="quantized per axis"):
        lt._quantization(_detail(np.int8, 0.1, 0, scales=[0.1, 0.2]), "input 't'")


def test_registry_reports_litert_unavailable_with_the_extra_when_import_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    monkeypatch.delitem(sys.modules, "runtime.backends.litert")
    reason = available_backends()["litert"]
    assert reason is not None and "ai-edge-litert is not installed" in reason
    assert "pip install 'leanloop[litert]'" in reason
    with pytest.raises(BackendError, match=r"m\.tflite: ai-edge-litert is not installed"):
        load_backend("litert", tmp_path / "m.tflite")
