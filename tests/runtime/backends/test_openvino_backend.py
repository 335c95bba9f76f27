"""The OpenVINO backend: signature, dynamic batch, warm-up, threads, errors, IR files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import runtime.backends as backends
from runtime.backends import available_backends, load_backend
from runtime.backends.base import Backend, BackendOptions
from runtime.errors import BackendError

ov_backend = pytest.importorskip("runtime.backends.openvino")
OpenVinoBackend = ov_backend.OpenVinoBackend
load = ov_backend.load


def test_signature_reports_numpy_dtypes_and_dynamic_batch_when_loaded_from_onnx(
    uint8_model: Path,
) -> None:
    be = load(uint8_model, BackendOptions())
    assert isinstance(be, Backend) and be.name == "openvino"
    assert [(t.name, t.shape, t.dtype) for t in be.inputs] == [
        ("image", ["batch", 4, 4, 3], "uint8")
    ]
    assert [(t.name, t.shape, t.dtype) for t in be.outputs] == [
        ("doubled", ["batch", 4, 4, 3], "float32"),
        ("best", ["batch", 4, 4], "int64"),
    ]


@pytest.mark.parametrize("batch", [1, 3, 2])
def test_run_takes_any_batch_size_when_the_batch_axis_is_dynamic(
    uint8_model: Path, batch: int
) -> None:
    be = load(uint8_model, BackendOptions(warmup_runs=0))
    x = np.zeros((batch, 4, 4, 3), np.uint8)
    x[..., 2] = 7
    doubled, best = be.run({"image": x})
    assert doubled.shape == (batch, 4, 4, 3) and float(doubled[-1, 0, 0, 2]) == 14.0
    assert (best == 2).all()


def test_run_returns_copies_when_called_again(float_model: Path) -> None:
    be = load(float_model, BackendOptions(warmup_runs=0))
    first = be.run({"x": np.zeros((2, 3), np.float32)})[0]
    be.run({"x": np.full((2, 3), 5.0, np.float32)})
    assert (first == 1.0).all()  # the reused request did not overwrite an earlier result


def test_ir_files_load_when_converted_with_openvino(float_model: Path, tmp_path: Path) -> None:
    import openvino as ov

    xml = tmp_path / "float.xml"
    ov.save_model(ov.convert_model(str(float_model)), str(xml), compress_to_fp16=False)
    be = load_backend("openvino", xml, BackendOptions(threads=1))
    assert [t.shape for t in be.inputs] == [[2, 3]]
    np.testing.assert_array_equal(be.run({"x": np.ones((2, 3), np.float32)})[0], 2.0)


@pytest.mark.parametrize("runs", [0, 1, 3])
def test_warmup_runs_the_model_on_zeros_when_loading(
    float_model: Path, monkeypatch: pytest.MonkeyPatch, runs: int
) -> None:
    seen: list[dict[str, np.ndarray]] = []
    real_run = OpenVinoBackend.run

    def spy(self: object, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        seen.append(inputs)
        return real_run(self, inputs)

    monkeypatch.setattr(OpenVinoBackend, "run", spy)
    load(float_model, BackendOptions(warmup_runs=runs))
    assert len(seen) == runs
    assert all(f["x"].shape == (2, 3) and not f["x"].any() for f in seen)


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_are_passed_to_the_compiled_model_when_set(float_model: Path, threads: int) -> None:
    be = load(float_model, BackendOptions(threads=threads, warmup_runs=0))
    assert be.threads == threads
    assert "LATENCY" in str(be.compiled_model.get_property("PERFORMANCE_HINT"))


def test_load_raises_naming_file_and_engine_when_the_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"nope\.onnx: openvino: no such model file"):
        load(tmp_path / "nope.onnx", BackendOptions())


def test_load_raises_naming_file_and_engine_when_the_file_is_corrupt(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(BackendError, match=r"bad\.onnx: openvino cannot load the model: \S"):
        load(bad, BackendOptions())


def test_load_raises_naming_the_bin_when_an_ir_has_no_weights_file(tmp_path: Path) -> None:
    xml = tmp_path / "m.xml"
    xml.write_text("<net/>")
    with pytest.raises(BackendError, match=r"m\.xml: openvino: the IR weights file m\.bin"):
        load(xml, BackendOptions())


def test_run_raises_backend_error_when_input_is_wrong_or_model_closed(float_model: Path) -> None:
    be = load(float_model, BackendOptions(warmup_runs=0))
    with pytest.raises(BackendError, match=r"no input named 'y' \(inputs: x\)"):
        be.run({"y": np.zeros((2, 3), np.float32)})
    with pytest.raises(BackendError, match="openvino run failed"):
        be.run({"x": np.zeros((5, 7), np.float32)})
    be.close()
    with pytest.raises(BackendError, match="openvino: the model is closed"):
        be.run({"x": np.zeros((2, 3), np.float32)})


def test_registry_reports_openvino_unavailable_with_the_extra_when_import_fails(
    monkeypatch: pytest.MonkeyPatch, float_model: Path
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    monkeypatch.delitem(sys.modules, "runtime.backends.openvino")
    reason = available_backends()["openvino"]
    assert reason is not None and "openvino is not installed" in reason
    assert "pip install 'leanloop[openvino]'" in reason
    with pytest.raises(BackendError, match=r"float\.onnx: openvino is not installed.*leanloop"):
        load_backend("openvino", float_model)
    assert backends.REGISTRY["openvino"] == "runtime.backends.openvino"
