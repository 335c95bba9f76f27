"""Tiny ONNX models built with ``onnx.helper`` for the backend tests (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def uint8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``image`` uint8 [batch, 4, 4, 3] -> ``doubled`` float [batch, 4, 4, 3], ``best`` int64."""
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "two"], ["doubled"]),
        helper.make_node("ArgMax", ["doubled"], ["best"], axis=3, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "uint8_model",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", 4, 4, 3])],
        [
            helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["batch", 4, 4, 3]),
            helper.make_tensor_value_info("best", TensorProto.INT64, ["batch", 4, 4]),
        ],
        initializer=[numpy_helper.from_array(np.array(2.0, np.float32), "two")],
    )
    return _save(graph, tmp_path_factory.mktemp("ort") / "uint8.onnx")


@pytest.fixture(scope="session")
def float_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``x`` float [2, 3] (fixed) -> ``y`` = x + 1."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "float_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    return _save(graph, tmp_path_factory.mktemp("ort") / "float.onnx")
