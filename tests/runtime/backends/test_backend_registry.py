"""The backend registry: names -> lazily imported modules."""

from __future__ import annotations

from pathlib import Path

import pytest

import runtime.backends as backends
from runtime.backends import REGISTRY, available_backends, load_backend
from runtime.backends.base import Backend, BackendOptions
from runtime.errors import BackendError


def test_load_backend_returns_a_loaded_backend_when_name_is_registered(float_model: Path) -> None:
    be = load_backend("onnxruntime", str(float_model), BackendOptions(warmup_runs=0))
    assert isinstance(be, Backend) and be.name == "onnxruntime"
    assert [t.name for t in be.inputs] == ["x"]


def test_load_backend_raises_naming_the_known_backends_when_name_is_unknown(
    float_model: Path,
) -> None:
    known = r"\(known: litert, onnxruntime, openvino\)"
    with pytest.raises(BackendError, match=r"unknown backend 'tensorrt' " + known):
        load_backend("tensorrt", float_model)


def test_available_backends_lists_onnxruntime_as_usable_when_installed() -> None:
    assert available_backends()["onnxruntime"] is None
    assert set(available_backends()) == set(REGISTRY)


def test_missing_engine_names_the_extra_when_its_module_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch, float_model: Path
) -> None:
    monkeypatch.setitem(backends.REGISTRY, "ghost", "runtime.backends._no_such_engine")
    reason = available_backends()["ghost"]
    assert reason is not None and "pip install 'leanloop[device]'" in reason
    with pytest.raises(BackendError, match=r"leanloop\[device\]"):
        load_backend("ghost", float_model)
