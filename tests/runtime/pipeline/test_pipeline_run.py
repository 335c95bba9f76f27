"""The pipeline end to end on real ONNX Runtime sessions of tiny models.

The detector always reports the boxes of ``conftest.DETECTIONS``; the classifier reads a crop's
mean brightness in ninths, so painting the detected regions with known grey levels tells what
every crop must be classified as.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pipeline_models import DIGITS, CountingBackend, FailingBackend

from runtime.backends import load_backend
from runtime.backends.base import Backend, BackendOptions
from runtime.errors import PipelineError
from runtime.pipeline import Pipeline, PluginLoader, parse_pipeline_spec
from runtime.pipeline.prediction import Prediction

OPTS = BackendOptions(threads=1)
DET_STAGE: dict[str, Any] = {
    "name": "detector",
    "model": "det",
    "pre": {"resize": [96, 96], "color": "gray", "scale": 1 / 255},
    "post": {"type": "yolo_v8", "score_threshold": 0.3, "nms_iou": 0.5, "classes": ["o", "p"]},
}
CLS_PRE = {"resize": [28, 28], "color": "gray", "scale": 1 / 255}


def cls_stage(**extra: Any) -> dict[str, Any]:
    stage: dict[str, Any] = {
        "name": "classifier",
        "model": "cls",
        "for_each": "detector",
        "crop": {"margin": 0.0},
        "pre": CLS_PRE,
        "post": {"type": "softmax", "top_k": 3},
    }
    stage.update(extra)
    return stage


def painted_frame(width: int = 192, height: int = 96) -> np.ndarray:
    """Patches where the detector's boxes land on a 192x96 frame: A=255, B=113, C=28."""
    img = np.zeros((height, width, 3), np.uint8)
    img[4:20, 8:40] = 255  # A -> class 9
    img[38:58, 76:116] = 113  # B -> class 4
    img[64:76, 148:172] = 28  # C -> class 1
    return img


def make_pipeline(stages: list[dict[str, Any]], models: dict[str, Backend]) -> Pipeline:
    spec = parse_pipeline_spec({"stages": stages})
    plugins = PluginLoader.for_folder(Path(__file__).parent, ["pipeline_plugins.py"])
    return Pipeline(
        spec,
        models,
        DIGITS,
        bundle="digits",
        bundle_version=3,
        ontology_version=2,
        plugins=plugins,
    )


@pytest.fixture
def det(detector: Path) -> CountingBackend:
    return CountingBackend(load_backend("onnxruntime", detector, OPTS))


# ---- fan-out --------------------------------------------------------------------------------


def test_fan_out_classifies_every_detection_in_one_call_when_batch_is_dynamic(
    det: CountingBackend, classifier_dynamic: Path
) -> None:
    cls = CountingBackend(load_backend("onnxruntime", classifier_dynamic, OPTS))
    pipe = make_pipeline([DET_STAGE, cls_stage()], {"det": det, "cls": cls})
    pred = pipe.run(painted_frame(), "f1")
    assert pred.ok and pred.frame_id == "f1" and (pred.width, pred.height) == (192, 96)
    boxes = [i.box for i in pred.stages["detector"].items]
    assert boxes == [(8, 4, 40, 20), (76, 38, 116, 58), (148, 64, 172, 76)]
    assert [i.label for i in pred.stages["detector"].items] == ["o", "p", "o"]
    final = pred.final_items()
    assert [(i.label, i.parent, i.box) for i in final] == [
        ("9", 0, boxes[0]),
        ("4", 1, boxes[1]),
        ("1", 2, boxes[2]),
    ]
    assert final[0].scores is not None and len(final[0].scores) == 10
    assert cls.batches == [3] and det.batches == [1]
    assert pred.stages["classifier"].kind == "classification"
    assert pred.stages["detector"].kind == "detection"
    assert pred.latency_ms >= pred.stages["classifier"].latency_ms > 0
    assert (pred.bundle, pred.bundle_version, pred.ontology_version) == ("digits", 3, 2)
    assert pipe.stats["stage.classifier.calls"] == 1 and pipe.stats["stage.classifier.items"] == 3


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino", "litert"])
def test_fan_out_batches_all_crops_on_each_engine_when_the_model_accepts_a_batch(
    det: CountingBackend, classifier_dynamic: Path, request: pytest.FixtureRequest, engine: str
) -> None:
    from runtime.backends import available_backends

    if (reason := available_backends().get(engine)) is not None:
        pytest.skip(reason)
    # ONNX with a dynamic batch for ORT and OpenVINO; a batch-1 TFLite file for LiteRT, whose
    # batch axis the backend's load-time probe finds resizable.
    path = (
        request.getfixturevalue("classifier_tflite") if engine == "litert" else classifier_dynamic
    )
    inner = load_backend(engine, path, OPTS)
    assert inner.inputs[0].shape[0] == "batch"
    cls = CountingBackend(inner)
    pipe = make_pipeline([DET_STAGE, cls_stage()], {"det": det, "cls": cls})
    for _ in range(2):
        pred = pipe.run(painted_frame())
        assert [(i.label, i.parent) for i in pred.final_items()] == [("9", 0), ("4", 1), ("1", 2)]
    assert cls.batches == [3, 3]


def test_fan_out_chunks_calls_when_stage_batch_is_set(
    det: CountingBackend, classifier_dynamic: Path
) -> None:
    cls = CountingBackend(load_backend("onnxruntime", classifier_dynamic, OPTS))
    pipe = make_pipeline([DET_STAGE, cls_stage(batch=2)], {"det": det, "cls": cls})
    assert [i.label for i in pipe.run(painted_frame()).final_items()] == ["9", "4", "1"]
    assert cls.batches == [2, 1]


def test_fan_out_calls_once_per_crop_when_model_batch_is_fixed_at_one(
    det: CountingBackend, classifier_batch1: Path
) -> None:
    cls = CountingBackend(load_backend("onnxruntime", classifier_batch1, OPTS))
    assert cls.inputs[0].shape[0] == 1
    pipe = make_pipeline([DET_STAGE, cls_stage()], {"det": det, "cls": cls})
    assert [i.label for i in pipe.run(painted_frame()).final_items()] == ["9", "4", "1"]
    assert cls.batches == [1, 1, 1]


def test_fan_out_pads_the_batch_when_model_batch_is_fixed_above_one(
    det: CountingBackend, classifier_batch4: Path
) -> None:
    cls = CountingBackend(load_backend("onnxruntime", classifier_batch4, OPTS))
    pipe = make_pipeline([DET_STAGE, cls_stage()], {"det": det, "cls": cls})
    pred = pipe.run(painted_frame())
    assert [(i.label, i.parent) for i in pred.final_items()] == [("9", 0), ("4", 1), ("1", 2)]
    assert cls.batches == [4]


def test_fan_out_skips_crops_when_they_are_too_small(
    det: CountingBackend, classifier_dynamic: Path
) -> None:
    cls = CountingBackend(load_backend("onnxruntime", classifier_dynamic, OPTS))
    stage = cls_stage(crop={"margin": 0.0, "min_size": 14})  # C is 24x12: skipped
    pipe = make_pipeline([DET_STAGE, stage], {"det": det, "cls": cls})
    assert [i.parent for i in pipe.run(painted_frame()).final_items()] == [0, 1]
    assert cls.batches == [2]


def test_whole_frame_classifier_yields_one_item_when_stage_has_no_parent(
    classifier_dynamic: Path,
) -> None:
    cls = load_backend("onnxruntime", classifier_dynamic, OPTS)
    stage = {"name": "c", "model": "cls", "pre": CLS_PRE, "post": {"type": "softmax"}}
    pipe = make_pipeline([stage], {"cls": cls})
    items = pipe.run(np.full((50, 70, 3), 255, np.uint8)).final_items()
    assert [(i.label, i.box, i.parent) for i in items] == [("9", None, None)]
    tensor = np.full((1, 1, 28, 28), 113 / 255, np.float32)
    assert pipe.run_tensor(tensor)[0].label == "4"
    assert pipe.run_tensor(tensor, stage="c")[0].label == "4"


# ---- plug-ins -------------------------------------------------------------------------------


def test_plugins_replace_pre_and_post_when_named_by_file(
    det: CountingBackend, classifier_dynamic: Path
) -> None:
    cls = load_backend("onnxruntime", classifier_dynamic, OPTS)
    detector = {
        "name": "halves",
        "model": "det",
        "pre": {"resize": [96, 96], "color": "gray", "plugin": "pipeline_plugins.py:gray_pre"},
        "post": {
            "type": "plugin",
            "function": "pipeline_plugins.py:left_half",
            "params": {"score": 0.75},
        },
    }
    classifier = cls_stage(for_each="halves")
    classifier["pre"] = dict(CLS_PRE, plugin="pipeline_plugins.py:gray_pre")
    pipe = make_pipeline([detector, classifier], {"det": det, "cls": cls})
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40] = 255
    pred = pipe.run(img)
    assert pred.ok, pred.error
    [half] = pred.stages["halves"].items
    assert (half.label, half.score, half.box) == ("0", 0.75, (0.0, 0.0, 40.0, 40.0))
    assert [(i.label, i.parent) for i in pred.final_items()] == [("9", 0)]


def test_plugin_post_gives_an_error_result_when_it_returns_the_wrong_type(
    det: CountingBackend,
) -> None:
    stage = dict(DET_STAGE, post={"type": "plugin", "function": "pipeline_plugins.py:not_a_list"})
    pipe = make_pipeline([stage], {"det": det})
    pred = pipe.run(painted_frame())
    assert pred.error is not None and "did not return a list of Item" in pred.error


def test_pipeline_rejects_a_plugin_when_its_file_is_not_listed(det: CountingBackend) -> None:
    stage = dict(DET_STAGE, post={"type": "plugin", "function": "conftest.py:fn"})
    with pytest.raises(PipelineError, match="not a file the manifest lists"):
        make_pipeline([stage], {"det": det})


@pytest.mark.parametrize(
    "ref", ["os:system", "pipeline_plugins:gray_pre", "../x.py:fn", "/etc/x.py:fn", "a.py:1x"]
)
def test_pipeline_spec_rejects_a_plugin_when_it_is_not_a_bundle_file(ref: str) -> None:
    with pytest.raises(PipelineError, match="plug-in"):
        parse_pipeline_spec({"stages": [dict(DET_STAGE, post={"type": "plugin", "function": ref})]})


# ---- construction checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "missing"}, "model 'missing' is not loaded"),
        ({"pre": dict(CLS_PRE, dtype="uint8", scale=1.0)}, "is float32, pre makes uint8"),
        ({"pre": dict(CLS_PRE, resize=[32, 32])}, "does not match pre resize 32x32"),
        ({"pre": dict(CLS_PRE, color="rgb")}, "has 1 channels; pre makes 3"),
        ({"post": {"type": "softmax", "output": "nope"}}, "no output 'nope'"),
        ({"post": {"type": "softmax", "output": 4}}, "no output 4"),
    ],
)
def test_pipeline_raises_a_one_line_error_when_graph_and_models_disagree(
    classifier_dynamic: Path, change: dict[str, Any], message: str
) -> None:
    cls = load_backend("onnxruntime", classifier_dynamic, OPTS)
    stage = dict({"name": "c", "model": "cls", "pre": CLS_PRE, "post": {"type": "softmax"}})
    stage.update(change)
    with pytest.raises(PipelineError, match=message) as info:
        make_pipeline([stage], {"cls": cls})
    assert "\n" not in str(info.value) and "stage 'c'" in str(info.value)


# ---- bad frames -----------------------------------------------------------------------------


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def test_bad_frames_give_error_results_and_the_pipeline_keeps_going_when_mixed(
    det: CountingBackend, classifier_dynamic: Path
) -> None:
    cls = load_backend("onnxruntime", classifier_dynamic, OPTS)
    pipe = make_pipeline([DET_STAGE, cls_stage()], {"det": det, "cls": cls})
    good = painted_frame()
    rgba = cv2.cvtColor(good, cv2.COLOR_BGR2BGRA)
    gray = good[:, :, 0].copy()
    bad_inputs: list[tuple[str, Any]] = [
        ("corrupt bytes", b"\xff\xd8\xff\xe0 definitely not a jpeg"),
        ("empty bytes", b""),
        ("truncated png", _png(good)[:60]),
        ("float frame", good.astype(np.float32)),
        ("empty array", np.zeros((0, 0, 3), np.uint8)),
        ("5 channels", np.zeros((10, 10, 5), np.uint8)),
        ("not an array", None),
    ]
    results: list[tuple[str, Prediction]] = []
    for what, frame in bad_inputs:
        pred = pipe.run_bytes(frame, what) if isinstance(frame, bytes) else pipe.run(frame, what)
        results.append((what, pred))
    for what, pred in results:
        assert pred.error, what
        assert "\n" not in pred.error and pred.stages == {}, what
        assert pred.to_dict()["error"] == pred.error
    expected = [i.label for i in pipe.run(good).final_items()]
    assert expected == ["9", "4", "1"]
    for what, frame in [("gray", gray), ("gray 1ch", gray[:, :, None]), ("rgba", rgba)]:
        assert [i.label for i in pipe.run(frame, what).final_items()] == expected, what
    png = pipe.run_bytes(_png(good), "png")
    assert png.ok and [i.label for i in png.final_items()] == expected
    odd = pipe.run(np.full((31, 97, 3), 200, np.uint8), "odd")  # 97x31: boxes clamp to it
    assert odd.ok and (odd.width, odd.height) == (97, 31)
    assert all(0 <= b <= 97 for i in odd.stages["detector"].items for b in i.box or ())
    assert pipe.stats["errors"] == len(bad_inputs)
    assert pipe.stats["frames"] == len(bad_inputs) + 6
    assert pipe.stats["latency_ms"] > 0


def test_stage_failure_gives_an_error_result_when_the_engine_raises(
    detector: Path, classifier_dynamic: Path
) -> None:
    cls = FailingBackend(load_backend("onnxruntime", classifier_dynamic, OPTS))
    det = load_backend("onnxruntime", detector, OPTS)
    pipe = make_pipeline([DET_STAGE, cls_stage()], {"det": det, "cls": cls})
    cls.fail = True
    pred = pipe.run(painted_frame(), "x")
    assert pred.error == "stage classifier: fake engine: run failed"
    cls.fail = False
    assert pipe.run(painted_frame()).ok
    assert (pipe.stats["errors"], pipe.stats["frames"]) == (1, 2)


def test_close_closes_each_model_once_when_models_are_shared(detector: Path) -> None:
    det = CountingBackend(load_backend("onnxruntime", detector, OPTS))
    second = dict(DET_STAGE, name="again")
    pipe = make_pipeline([DET_STAGE, second], {"det": det})
    assert pipe.stage_names == ["detector", "again"]
    pipe.close()
    assert det.closed
