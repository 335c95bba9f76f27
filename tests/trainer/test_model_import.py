"""``leanloop model import`` on small real ONNX models built here (YOLOv8 / YOLOv5 / classifier
conventions): the source builds into a bundle and ``leanloop infer`` runs it; what cannot be
guessed ends in one error line naming the options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from leanloop.cli import app
from tests.trainer.datasets.dsgen import write_png

runner = CliRunner()
SIZE = 32


def tiny_model(path: Path, out_shape: list[int], bias: np.ndarray, softmax: bool = False) -> Path:
    """image [1,3,32,32] -> GlobalAveragePool -> Gemm -> Reshape(out_shape) [-> Softmax]."""
    n = int(np.prod(out_shape))
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.normal(size=(3, n)) * 1e-3).astype(np.float32), "W")
    b = numpy_helper.from_array(bias.reshape(n).astype(np.float32), "B")
    shape = numpy_helper.from_array(np.array(out_shape, dtype=np.int64), "S")
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "W", "B"], ["y"]),
        helper.make_node("Reshape", ["y", "S"], ["raw" if softmax else "output0"]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["raw"], ["output0"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)],
        [w, b, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def yolo_v8(path: Path, classes: int, anchors: int = 6) -> Path:
    bias = np.zeros((4 + classes, anchors), np.float32)
    bias[:4, :] = [[16.0], [12.0], [10.0], [8.0]]  # cx, cy, w, h in input pixels
    bias[4:, :] = 0.02
    bias[4 + 1, 0] = 0.9  # anchor 0 is class 1 with 0.9
    return tiny_model(path, [1, 4 + classes, anchors], bias)


def cli(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_yolo_v8_model_imports_builds_and_infers_when_outputs_follow_the_convention(
    tmp_path: Path,
) -> None:
    model = yolo_v8(tmp_path / "det.onnx", classes=3)
    src, bundle = tmp_path / "src", tmp_path / "bundle"
    code, out, err = cli(
        "model", "import", str(model), "--task", "detection", "--labels", "cat,dog,bird",
        "--out", str(src), "--json",
    )  # fmt: skip
    assert code == 0, err
    got = json.loads(out)
    assert got["post"]["type"] == "yolo_v8"
    assert got["pre"] == {"resize": [32, 32], "color": "rgb", "layout": "nchw", "scale": 1 / 255}
    assert sorted(p.name for p in (src / "golden").iterdir()) == ["000.png", "001.png", "002.png"]
    code, out, err = cli("bundle", "build", str(src), "--out", str(bundle), "--name", "pets")
    assert code == 0, err
    image = write_png(tmp_path / "frame.png", 64, 48)
    code, out, err = cli("infer", "--bundle", str(bundle), str(image), "--json")
    assert code == 0, err
    pred = json.loads(out.splitlines()[0]) if out.startswith("{") else json.loads(out)[0]
    items = pred["stages"]["detector"]["items"]
    assert [i["label"] for i in items] == ["dog"]
    assert items[0]["score"] == pytest.approx(0.9, abs=0.01)
    # Box (16, 12, 10, 8) in 32x32 input pixels, mapped back to the 64x48 frame.
    assert items[0]["box"] == pytest.approx([22.0, 12.0, 42.0, 24.0], abs=0.5)


def test_yolo_v5_and_softmax_classifier_are_recognised_when_shapes_say_so(tmp_path: Path) -> None:
    bias = np.zeros((10, 5 + 2), np.float32)
    tiny_model(tmp_path / "v5.onnx", [1, 10, 7], bias)
    code, out, err = cli(
        "model", "import", str(tmp_path / "v5.onnx"), "--task", "detection",
        "--labels", "a", "--labels", "b", "--out", str(tmp_path / "s5"), "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["post"]["type"] == "yolo_v5"
    tiny_model(tmp_path / "cls.onnx", [1, 4], np.arange(4, dtype=np.float32), softmax=True)
    labels = tmp_path / "labels.txt"
    labels.write_text("w\nx\ny\nz\n")
    code, out, err = cli(
        "model", "import", str(tmp_path / "cls.onnx"), "--task", "classification",
        "--labels", str(labels), "--out", str(tmp_path / "sc"), "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["post"] == {"type": "identity", "top_k": 3}  # already probabilities


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--labels", "a,b"], "matches no known convention (-); expected [1, 6, N] (yolo_v8)"),
        (["--labels", "a,b,c", "--decoder", "ssd"], "anchors are not part of the model"),
        (["--labels", "a,b,c", "--decoder", "softmax"], "not a detection decoder"),
        (["--labels", "a,a"], "--labels must name distinct classes"),
    ],
)
def test_import_asks_for_what_it_cannot_guess_when_outputs_do_not_match(
    tmp_path: Path, args: list[str], message: str
) -> None:
    model = yolo_v8(tmp_path / "det.onnx", classes=3)
    code, out, err = cli(
        "model", "import", str(model), "--task", "detection", "--out", str(tmp_path / "s"), *args
    )
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "s").exists()


def ssd_model(path: Path, anchors: int, classes: int) -> Path:
    """Two outputs: box deltas [1, N, 4] (zero: the anchors themselves) and class logits
    [1, N, C+1] where anchor 0 is class 1 (index 2 with background at 0)."""
    logits = np.full((anchors, classes + 1), -4.0, np.float32)
    logits[:, 0] = 4.0  # background everywhere ...
    logits[0] = [-4.0, -4.0, 4.0]  # ... except anchor 0
    inits = [
        numpy_helper.from_array(np.zeros((3, anchors * 4), np.float32), "Wb"),
        numpy_helper.from_array(np.zeros(anchors * 4, np.float32), "Bb"),
        numpy_helper.from_array(np.zeros((3, logits.size), np.float32), "Ws"),
        numpy_helper.from_array(logits.reshape(-1), "Bs"),
        numpy_helper.from_array(np.array([1, anchors, 4], np.int64), "Sb"),
        numpy_helper.from_array(np.array([1, anchors, classes + 1], np.int64), "Ss"),
    ]
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "Wb", "Bb"], ["yb"]),
        helper.make_node("Reshape", ["yb", "Sb"], ["boxes"]),
        helper.make_node("Gemm", ["f", "Ws", "Bs"], ["ys"]),
        helper.make_node("Reshape", ["ys", "Ss"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ssd",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, anchors, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, anchors, classes + 1]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_ssd_model_imports_with_anchors_and_infers_when_given_them(tmp_path: Path) -> None:
    model = ssd_model(tmp_path / "ssd.onnx", anchors=4, classes=2)
    anchors = tmp_path / "anchors.yaml"
    anchors.write_text("feature_maps: [[2, 2]]\nsizes: [[0.5]]\naspect_ratios: [1.0]\n")
    src, bundle = tmp_path / "src", tmp_path / "bundle"
    code, out, err = cli(
        "model", "import", str(model), "--task", "detection", "--labels", "cat,dog",
        "--anchors", str(anchors), "--out", str(src), "--json",
    )  # fmt: skip
    assert code == 0, err
    post = json.loads(out)["post"]
    assert post["type"] == "ssd" and (post["boxes_output"], post["scores_output"]) == (0, 1)
    code, out, err = cli("bundle", "build", str(src), "--out", str(bundle), "--name", "ssd")
    assert code == 0, err
    image = write_png(tmp_path / "frame.png", 32, 32)
    code, out, err = cli("infer", "--bundle", str(bundle), str(image), "--json")
    assert code == 0, err
    pred = json.loads(out.splitlines()[0]) if out.startswith("{") else json.loads(out)[0]
    items = pred["stages"]["detector"]["items"]
    assert [i["label"] for i in items] == ["dog"]
    assert items[0]["box"] == pytest.approx([0.0, 0.0, 16.0, 16.0], abs=0.5)  # anchor 0


def test_openvino_model_imports_builds_and_infers_when_given_xml_and_bin(tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino", reason="leanloop[openvino] is not installed")
    onnx_path = yolo_v8(tmp_path / "det.onnx", classes=3)
    ov.save_model(ov.convert_model(str(onnx_path)), str(tmp_path / "det.xml"))
    src, bundle = tmp_path / "src", tmp_path / "bundle"
    code, out, err = cli(
        "model", "import", str(tmp_path / "det.xml"), str(tmp_path / "det.bin"),
        "--task", "detection", "--labels", "cat,dog,bird", "--out", str(src), "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["post"]["type"] == "yolo_v8"
    assert sorted(p.name for p in (src / "models").iterdir()) == ["detector.bin", "detector.xml"]
    code, out, err = cli("bundle", "build", str(src), "--out", str(bundle), "--name", "pets")
    assert code == 0, err
    image = write_png(tmp_path / "frame.png", 64, 48)
    code, out, err = cli(
        "infer", "--bundle", str(bundle), "--backend", "openvino", str(image), "--json"
    )
    assert code == 0, err
    pred = json.loads(out.splitlines()[0]) if out.startswith("{") else json.loads(out)[0]
    assert [i["label"] for i in pred["stages"]["detector"]["items"]] == ["dog"]


def test_tflite_classifier_imports_builds_and_infers_when_litert_torch_is_here(
    tmp_path: Path,
) -> None:
    torch = pytest.importorskip("torch")
    from trainer.export_formats import export_tflite, tflite_unavailable_reason

    if (reason := tflite_unavailable_reason()) is not None:
        pytest.skip(reason)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )
    export_tflite(net, tmp_path / "clf.tflite", (3, SIZE, SIZE))
    src, bundle = tmp_path / "src", tmp_path / "bundle"
    code, out, err = cli(
        "model", "import", str(tmp_path / "clf.tflite"), "--task", "classification",
        "--labels", "red,green,blue", "--out", str(src), "--json",
    )  # fmt: skip
    assert code == 0, err
    got = json.loads(out)
    assert got["post"]["type"] == "softmax" and got["pre"]["layout"] == "nchw"
    code, out, err = cli("bundle", "build", str(src), "--out", str(bundle), "--name", "colours")
    assert code == 0, err
    image = write_png(tmp_path / "frame.png", 40, 30)
    code, out, err = cli(
        "infer", "--bundle", str(bundle), "--backend", "litert", str(image), "--json"
    )
    assert code == 0, err
    pred = json.loads(out.splitlines()[0]) if out.startswith("{") else json.loads(out)[0]
    items = pred["stages"]["classifier"]["items"]
    assert items and items[0]["label"] in {"red", "green", "blue"}
