"""The ONNX Runtime backend: signature, dtypes, warm-up, threads, providers, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from runtime.backends.base import Backend, BackendOptions
from runtime.backends.onnxruntime import OrtBackend, load, ort_dtype
from runtime.errors import BackendError


def test_signature_reports_numpy_dtypes_and_dynamic_axes_when_loaded(uint8_model: Path) -> None:
    be = load(uint8_model, BackendOptions())
    assert isinstance(be, Backend) and be.name == "onnxruntime"
    assert [(t.name, t.shape, t.dtype) for t in be.inputs] == [
        ("image", ["batch", 4, 4, 3], "uint8")
    ]
    assert [(t.name, t.shape, t.dtype) for t in be.outputs] == [
        ("doubled", ["batch", 4, 4, 3], "float32"),
        ("best", ["batch", 4, 4], "int64"),
    ]


def test_run_returns_outputs_in_signature_order_when_batched(uint8_model: Path) -> None:
    be = load(uint8_model, BackendOptions(warmup_runs=0))
    x = np.zeros((2, 4, 4, 3), np.uint8)
    x[..., 2] = 7
    doubled, best = be.run({"image": x})
    assert doubled.dtype == np.float32 and doubled.shape == (2, 4, 4, 3)
    assert float(doubled[1, 0, 0, 2]) == 14.0
    assert best.dtype == np.int64 and (best == 2).all()


def test_ort_dtype_maps_type_strings_when_known_or_not() -> None:
    assert ort_dtype("tensor(float)") == "float32"
    assert ort_dtype("tensor(int8)") == "int8"
    assert ort_dtype("tensor(float16)") == "float16"
    assert ort_dtype("tensor(bfloat16)") == "bfloat16"


@pytest.mark.parametrize("runs", [0, 1, 3])
def test_warmup_runs_the_model_on_zeros_when_loading(
    float_model: Path, monkeypatch: pytest.MonkeyPatch, runs: int
) -> None:
    seen: list[dict[str, np.ndarray]] = []
    real_run = OrtBackend.run

    def spy(self: OrtBackend, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        seen.append(inputs)
        return real_run(self, inputs)

    monkeypatch.setattr(OrtBackend, "run", spy)
    load(float_model, BackendOptions(warmup_runs=runs))
    assert len(seen) == runs
    for feed in seen:
        assert feed["x"].shape == (2, 3) and not feed["x"].any()


def test_warmup_uses_batch_one_when_the_batch_axis_is_dynamic(uint8_model: Path) -> None:
    be = load(uint8_model, BackendOptions(warmup_runs=0))
    be.warmup(2)  # zeros [1, 4, 4, 3] uint8 — would raise if shape or dtype were wrong


def test_session_uses_the_configured_threads_when_set(float_model: Path) -> None:
    be = load(float_model, BackendOptions(threads=2))
    so = be.session.get_session_options()
    assert (be.threads, so.intra_op_num_threads, so.inter_op_num_threads) == (2, 2, 1)


def test_thread_pools_do_not_spin_when_a_session_is_built(float_model: Path) -> None:
    # Spinning workers steal the core the Python pre/post-processing needs on a 2-core device.
    so = load(float_model, BackendOptions(threads=2)).session.get_session_options()
    for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        assert so.get_session_config_entry(key) == "0"


def test_unavailable_providers_are_skipped_with_a_warning_when_requested(
    float_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="leanloop.backends.onnxruntime"):
        be = load(
            float_model,
            BackendOptions(providers=("NoSuchExecutionProvider", "CPUExecutionProvider")),
        )
    assert be.providers == ["CPUExecutionProvider"]
    assert "NoSuchExecutionProvider" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such model file"), (b"this is not a protobuf", "cannot load the model")],
)
def test_load_failure_names_the_file_and_engine_when_model_is_bad(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "broken.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BackendError) as info:
        load(path, BackendOptions())
    text = str(info.value)
    assert str(path) in text and "onnxruntime" in text and message in text
    assert "\n" not in text


def test_run_failure_is_a_backend_error_when_inputs_are_wrong(float_model: Path) -> None:
    be = load(float_model, BackendOptions())
    with pytest.raises(BackendError, match=r"float\.onnx: onnxruntime run failed"):
        be.run({"x": np.zeros((5, 5), np.float32)})
    with pytest.raises(BackendError, match="run failed"):
        be.run({"nope": np.zeros((2, 3), np.float32)})


def test_run_raises_backend_error_when_closed(float_model: Path) -> None:
    be = load(float_model, BackendOptions())
    be.close()
    with pytest.raises(BackendError, match="closed"):
        be.run({"x": np.zeros((2, 3), np.float32)})


def test_run_goes_straight_to_the_cpu_session_and_matches_session_run_when_on_cpu(
    uint8_model: Path,
) -> None:
    be = load(uint8_model, BackendOptions(warmup_runs=0))
    assert be._run_direct is not None  # the C++ session's run, without the Python re-checks
    x = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    got = be.run({"image": x})
    want = be.session.run(None, {"image": x})
    assert [a.tolist() for a in got] == [a.tolist() for a in want]


def test_run_names_the_missing_input_when_a_required_input_is_not_fed(float_model: Path) -> None:
    be = load(float_model, BackendOptions())
    with pytest.raises(BackendError, match=r"run failed: Required inputs \(\['x'\]\) are missing"):
        be.run({})
