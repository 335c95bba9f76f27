"""Published SSD output conventions, decoded by the built-in decoders through a real pipeline on
ONNX Runtime, against reference decodes written independently here (plain loops, following the
conventions' own documentation: TFLite_Detection_PostProcess outputs, MediaPipe's SSD anchors
and TensorsToDetections, the TF Object Detection API box coder)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pipeline_models import make_constant_detector

from runtime.backends import BackendOptions, load_backend
from runtime.errors import PipelineError
from runtime.pipeline import Pipeline, parse_pipeline_spec
from runtime.pipeline.graph import Anchors
from runtime.pipeline.ssd import ssd_anchors

OPTS = BackendOptions(threads=1)


def _run(
    tmp_path: Path,
    outputs: list[np.ndarray],
    names: list[str],
    post: dict[str, Any],
    input_size: int,
    frame: np.ndarray,
) -> list[Any]:
    model = make_constant_detector(
        tmp_path / "det.onnx",
        outputs,
        input_shape=(1, input_size, input_size, 3),
        output_names=names,
    )
    stage = {
        "name": "det",
        "model": "det",
        "pre": {"resize": [input_size, input_size], "layout": "nhwc", "scale": 1 / 255},
        "post": post,
    }
    pipe = Pipeline(
        parse_pipeline_spec({"stages": [stage]}),
        {"det": load_backend("onnxruntime", model, OPTS)},
        classes=["background?", "cat", "dog", "bird"],
    )
    try:
        pred = pipe.run(frame, "f")
    finally:
        pipe.close()
    assert pred.error is None, pred.error
    return pred.stages["det"].items


def _close(got: list[Any], want: list[dict[str, Any]]) -> None:
    assert [(i.label, round(i.score, 5)) for i in got] == [
        (w["label"], round(w["score"], 5)) for w in want
    ]
    for i, w in zip(got, want, strict=True):
        np.testing.assert_allclose(i.box, w["box"], atol=1e-3)
        if "keypoints" in w:
            np.testing.assert_allclose(i.keypoints, w["keypoints"], atol=1e-3)
        else:
            assert i.keypoints is None


# ---- TFLite_Detection_PostProcess ------------------------------------------------------------


def test_tflite_postprocessed_outputs_are_read_when_a_model_ends_in_the_postprocess_op(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(1)
    n = 10
    ymin, xmin = rng.uniform(0, 0.6, n), rng.uniform(0, 0.6, n)
    boxes = np.stack([ymin, xmin, ymin + 0.3, xmin + 0.35], axis=1)[None].astype(np.float32)
    boxes[0, 1] = [-0.1, 0.8, 0.5, 1.2]  # partly outside the frame: clamped
    classes = np.array([[0, 2, 1, 0, 1, 2, 0, 0, 0, 0]], np.float32)
    scores = np.array([[0.9, 0.8, 0.7, 0.2, 0.6, 0.99, 0.99, 0.99, 0.99, 0.99]], np.float32)
    count = np.array([5], np.float32)  # rows 5.. are padding with high scores: never read
    # TF1 SSD exports list (scores, boxes, count, classes) in another order than TFLite's own;
    # the spec picks them by name.
    names = ["det_scores", "det_boxes", "det_count", "det_classes"]
    post = {
        "type": "tflite_ssd",
        "boxes_output": "det_boxes",
        "classes_output": "det_classes",
        "scores_output": "det_scores",
        "count_output": "det_count",
        "label_offset": 1,
        "score_threshold": 0.5,
    }
    frame = np.zeros((150, 200, 3), np.uint8)
    got = _run(tmp_path, [scores, boxes, count, classes], names, post, 96, frame)

    # Reference: rows below count, score >= threshold, (ymin, xmin, ymax, xmax) fractions of
    # the frame (stretch resize), clamped; best score first; class id + 1 into the label map.
    labels = ["background?", "cat", "dog", "bird"]
    want = []
    for r in range(int(count[0])):
        if scores[0, r] < 0.5:
            continue
        y1, x1, y2, x2 = boxes[0, r]
        box = [
            min(max(x1 * 200, 0), 200),
            min(max(y1 * 150, 0), 150),
            min(max(x2 * 200, 0), 200),
            min(max(y2 * 150, 0), 150),
        ]
        want.append({"label": labels[int(classes[0, r]) + 1], "score": scores[0, r], "box": box})
    want.sort(key=lambda w: -w["score"])
    assert len(want) == 4
    _close(got, want)


# ---- anchor-based SSD: MediaPipe / BlazeFace layout ---------------------------------------------


def _blazeface_anchors() -> list[tuple[float, float]]:
    """BlazeFace (front, 128x128): strides 8, 16 with 2 and 6 fixed-size anchors per cell."""
    centers = []
    for stride, per_cell in ((8, 2), (16, 6)):
        grid = math.ceil(128 / stride)
        for y in range(grid):
            for x in range(grid):
                centers += [((x + 0.5) / grid, (y + 0.5) / grid)] * per_cell
    return centers


def test_blazeface_style_head_decodes_boxes_and_keypoints_when_anchors_are_fixed_size(
    tmp_path: Path,
) -> None:
    anchors = _blazeface_anchors()
    assert len(anchors) == 896
    regs = np.zeros((1, 896, 16), np.float32)  # x, y, w, h, then 6 keypoints (x, y)
    logits = np.full((1, 896, 1), -8.0, np.float32)
    rng = np.random.default_rng(2)
    chosen = {5: (1.5, 0.5), 300: (-3.0, 2.0), 700: (4.0, -6.0)}  # anchor -> (dx, dy) pixels
    for i, (dx, dy) in chosen.items():
        regs[0, i, :4] = [dx, dy, 20.0, 24.0]
        regs[0, i, 4:] = rng.uniform(-10, 10, 12)
        logits[0, i, 0] = 2.0 + i / 1000
    post = {
        "type": "ssd",
        "anchors": {"strides": [8, 16], "per_cell": [2, 6], "fixed_size": True},
        "scores": "sigmoid",
        "scale": [128, 128, 128, 128],
        "size": "linear",
        "keypoints": 6,
        "score_threshold": 0.5,
        "classes": ["face"],
    }
    frame = np.zeros((256, 256, 3), np.uint8)
    got = _run(tmp_path, [regs, logits], ["regressors", "classificators"], post, 128, frame)

    # Reference (MediaPipe TensorsToDetections, reverse_output_order): centre = anchor + raw /
    # 128 (anchors are 1x1), size = raw / 128, keypoints like centres; x2 to frame pixels.
    want = []
    for i in sorted(chosen, key=lambda i: -logits[0, i, 0]):
        ax, ay = anchors[i]
        r = regs[0, i]
        cx, cy, w, h = ax + r[0] / 128, ay + r[1] / 128, r[2] / 128, r[3] / 128
        kps = [((ax + r[4 + 2 * k] / 128) * 256, (ay + r[5 + 2 * k] / 128) * 256) for k in range(6)]
        box = [(cx - w / 2) * 256, (cy - h / 2) * 256, (cx + w / 2) * 256, (cy + h / 2) * 256]
        want.append(
            {
                "label": "face",
                "score": 1 / (1 + math.exp(-logits[0, i, 0])),
                "box": [min(max(v, 0), 256) for v in box],  # boxes clamped, keypoints not
                "keypoints": kps,
            }
        )
    _close(got, want)


# ---- anchor-based SSD: TF Object Detection API layout ------------------------------------------


def _tf_od_anchors(input_size: int) -> list[tuple[float, float, float, float]]:
    """MediaPipe's SsdAnchorsCalculator for strides 16, 32, 32, scales 0.2..0.95, aspect
    ratios 1, 2, 0.5, interpolated ratio 1, reduced lowest layer (as for ssd_mobilenet)."""
    strides, lo, hi, ratios = [16, 32, 32], 0.2, 0.95, [1.0, 2.0, 0.5]

    def scale(k: int) -> float:
        return lo + (hi - lo) * k / (len(strides) - 1)

    out = []
    layer = 0
    while layer < len(strides):
        sizes = []
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            if last == 0:
                sizes += [(1.0, 0.1), (2.0, scale(0)), (0.5, scale(0))]
            else:
                sizes += [(r, scale(last)) for r in ratios]
                nxt = 1.0 if last == len(strides) - 1 else scale(last + 1)
                sizes.append((1.0, math.sqrt(scale(last) * nxt)))
            last += 1
        grid = math.ceil(input_size / strides[layer])
        for y in range(grid):
            for x in range(grid):
                for ratio, s in sizes:
                    w, h = s * math.sqrt(ratio), s / math.sqrt(ratio)
                    out.append(((x + 0.5) / grid, (y + 0.5) / grid, w, h))
        layer = last
    return out


def test_tf_object_detection_head_decodes_when_anchors_come_from_strides_and_scales(
    tmp_path: Path,
) -> None:
    anchors = _tf_od_anchors(64)
    n = len(anchors)
    assert n == 4 * 4 * 3 + 2 * 2 * 8
    spec = Anchors(
        strides=[16, 32, 32],
        min_scale=0.2,
        max_scale=0.95,
        aspect_ratios=[1.0, 2.0, 0.5],
        reduce_boxes_in_lowest_layer=True,
    )
    np.testing.assert_allclose(ssd_anchors(spec, (64, 64)), np.float32(anchors), atol=1e-6)

    regs = np.zeros((1, n, 4), np.float32)  # ty, tx, th, tw (TF box coder, scales 10,10,5,5)
    logits = np.zeros((1, n, 4), np.float32)  # background + 3 classes, softmax
    logits[0, :, 0] = 6.0
    chosen = {3: 1, 20: 2, 60: 3, 75: 1}
    rng = np.random.default_rng(3)
    for i, c in chosen.items():
        regs[0, i] = rng.uniform(-1, 1, 4)
        logits[0, i, c] = 8.0 + i / 100
    post = {
        "type": "ssd",
        "anchors": spec.model_dump(),
        "coords": "yxhw",
        "scale": [10, 10, 5, 5],
        "score_threshold": 0.5,
        "nms_iou": 0.99,
    }
    frame = np.zeros((64, 128, 3), np.uint8)
    got = _run(tmp_path, [regs, logits], ["raw_boxes", "raw_scores"], post, 64, frame)

    labels = ["background?", "cat", "dog", "bird"]
    want = []
    for i, c in chosen.items():
        acx, acy, aw, ah = anchors[i]
        ty, tx, th, tw = regs[0, i]
        cy, cx = acy + ty / 10 * ah, acx + tx / 10 * aw
        h, w = ah * math.exp(th / 5), aw * math.exp(tw / 5)
        e = np.exp(logits[0, i] - logits[0, i].max())
        box = [(cx - w / 2) * 128, (cy - h / 2) * 64, (cx + w / 2) * 128, (cy + h / 2) * 64]
        box = [min(max(v, 0), side) for v, side in zip(box, [128, 64, 128, 64], strict=True)]
        want.append({"label": labels[c - 1], "score": e[c] / e.sum(), "box": box})
    want.sort(key=lambda w: -w["score"])
    _close(got, want)


def test_sigmoid_scores_without_background_pick_the_best_class_when_several() -> None:
    from runtime.pipeline.graph import SsdPost
    from runtime.pipeline.preprocess import Letterbox
    from runtime.pipeline.ssd import decode_ssd

    spec = SsdPost(
        type="ssd",
        anchors=Anchors(feature_maps=[(1, 1)], sizes=[[0.5]]),
        scores="sigmoid",
        score_threshold=0.5,
    )
    logits = np.array([[[-1.0, 3.0, 0.0]]], np.float32)
    items = decode_ssd(
        [np.zeros((1, 1, 4), np.float32), logits],
        spec,
        ["a", "b", "c"],
        Letterbox(1, 1, 0, 0),
        (10, 10),
        (10, 10),
    )
    assert [(i.label, round(i.score, 6)) for i in items] == [
        ("b", round(1 / (1 + math.exp(-3)), 6))
    ]
    np.testing.assert_allclose(items[0].box, [2.5, 2.5, 7.5, 7.5], atol=1e-5)


@pytest.mark.parametrize(
    ("anchors", "message"),
    [
        ({"feature_maps": [[2, 2]]}, "need both feature_maps and sizes"),
        ({"feature_maps": [[2, 2]], "sizes": [[0.5]], "strides": [8]}, "either feature_maps"),
        ({"strides": [8, 16], "per_cell": [2]}, "per_cell needs strides and fixed_size"),
        ({"strides": [8, 16], "per_cell": [2], "fixed_size": True}, "one count per stride"),
    ],
)
def test_anchor_spec_is_refused_when_its_layout_is_ambiguous(
    anchors: dict[str, Any], message: str
) -> None:
    stage = {
        "name": "det",
        "model": "det",
        "pre": {"resize": [64, 64]},
        "post": {"type": "ssd", "anchors": anchors},
    }
    with pytest.raises(PipelineError, match=message):
        parse_pipeline_spec({"stages": [stage]})


def test_pipeline_refuses_an_ssd_stage_when_its_anchors_do_not_match_the_model(
    tmp_path: Path,
) -> None:
    model = make_constant_detector(
        tmp_path / "det.onnx",
        [np.zeros((1, 100, 4), np.float32), np.zeros((1, 100, 2), np.float32)],
        input_shape=(1, 64, 64, 3),
    )
    stage = {
        "name": "det",
        "model": "det",
        "pre": {"resize": [64, 64], "layout": "nhwc"},
        "post": {"type": "ssd", "anchors": {"strides": [16], "per_cell": [2], "fixed_size": True}},
    }
    with pytest.raises(PipelineError, match="makes 32 anchors but the model outputs 100 boxes"):
        Pipeline(
            parse_pipeline_spec({"stages": [stage]}),
            {"det": load_backend("onnxruntime", model, OPTS)},
            classes=["a"],
        )
