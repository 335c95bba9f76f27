"""The per-frame fast paths give exactly what the straightforward code gives.

The pipeline batches the pre-processing of a frame's crops, runs NMS for a few boxes over a
precomputed IoU matrix, finishes a detector's few candidates in plain Python with float32
rounding and picks top-k with plain fancy indexing. Each is checked here against the form it
replaces, bit for bit, including ties.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

import runtime.pipeline.postprocess as post
from runtime.errors import PipelineError
from runtime.pipeline._few_boxes import f32, f32_all
from runtime.pipeline.graph import ClassifyPost, PreSpec, YoloPost
from runtime.pipeline.postprocess import _finish, classify, decode_yolo_v8, nms
from runtime.pipeline.prediction import Item
from runtime.pipeline.preprocess import Letterbox, _resize, preprocess, preprocess_batch

# ---- NMS ------------------------------------------------------------------------------------


def _random_boxes(rng: np.random.Generator, n: int, coarse: bool) -> np.ndarray:
    b = rng.random((n, 4)).astype(np.float32) * 100
    if coarse:  # shared edges, identical boxes and IoUs landing exactly on the threshold
        b = np.round(b / 10) * 10
    b[:, 2:] = b[:, :2] + np.abs(b[:, 2:] - b[:, :2])
    return b


@pytest.mark.parametrize("coarse", [False, True])
def test_nms_matrix_path_keeps_the_same_boxes_as_the_row_loop_when_boxes_are_few(
    monkeypatch: pytest.MonkeyPatch, coarse: bool
) -> None:
    rng = np.random.default_rng(7)
    cases = []
    for _ in range(300):
        n = int(rng.integers(1, 40))
        scores = rng.random(n).astype(np.float32)
        if coarse:
            scores = np.round(scores * 3) / 3  # ties in score too
        class_ids = rng.integers(0, 3, n) if rng.random() < 0.5 else None
        iou = float(rng.choice([0.0, 1 / 3, 0.5, 1.0]))
        max_keep = None if rng.random() < 0.5 else int(rng.integers(0, 5))
        cases.append((_random_boxes(rng, n, coarse), scores, iou, class_ids, max_keep))
    fast = [nms(*c).tolist() for c in cases]
    monkeypatch.setattr(post, "_NMS_MATRIX_MAX", 0)  # force the row-at-a-time loop
    assert fast == [nms(*c).tolist() for c in cases]


def test_nms_keeps_a_single_box_unless_nothing_may_be_kept() -> None:
    box = np.array([[1, 2, 3, 4]], np.float32)
    assert nms(box, np.array([0.1], np.float32), 0.5).tolist() == [0]
    assert nms(box, np.array([0.1], np.float32), 0.5, max_keep=0).tolist() == []


# ---- the detection tail for a few boxes ------------------------------------------------------


def _as_tuples(items: list[Item]) -> list[tuple[Any, ...]]:
    return [(i.class_id, i.label, i.score, i.box, i.keypoints) for i in items]


def test_f32_rounds_like_numpy_when_values_are_ordinary_huge_or_not_numbers() -> None:
    values = [0.1, 1 / 3, -2.5, 1e-46, 3.4028235e38, 16777217.0, float("inf"), -float("inf")]
    assert [f32(v) for v in values] == np.array(values, dtype=np.float32).tolist()
    assert f32(3.5e38) == float("inf") and f32(-1e39) == -float("inf")  # numpy: inf + a warning
    assert np.isnan(f32(float("nan")))
    assert f32_all(values) == [f32(v) for v in values]
    assert f32_all([3.5e38, -1e39]) == [float("inf"), -float("inf")]
    assert np.isnan(f32_all([float("nan")])[0])


def _tail_case(rng: np.random.Generator, coarse: bool, huge: bool = False) -> dict[str, Any]:
    n = int(rng.integers(0, 17))
    # huge: areas past 2**24, where a float32 sum of two areas is rounded
    boxes = (rng.random((n, 4)) * (140 if not huge else 9000) - 20).astype(np.float32)
    if coarse:  # shared edges, identical boxes, IoUs landing on the threshold, ties in score
        boxes = np.round(boxes / 20).astype(np.float32)  # a 7x7 grid: many exact IoUs
    boxes[:, 2:] = boxes[:, :2] + np.abs(boxes[:, 2:] - boxes[:, :2])
    if n and rng.random() < 0.2:  # boxes of no area, NaN and infinite coordinates
        boxes[rng.integers(0, n)] = rng.choice([np.nan, np.inf, -np.inf, 5.0], 4)
    scores = rng.random(n).astype(np.float32)
    if coarse:
        scores = (np.round(scores * 3) / 3).astype(np.float32)
    kp = None
    if rng.random() < 0.3:
        kp = (rng.random((n, int(rng.integers(0, 3)), 2)) * 100).astype(np.float32)
    spec = YoloPost(
        type="yolo_v8",
        nms_iou=float(rng.choice([1e-6, 0.1, 1 / 3, 0.45, 0.5, 2 / 3, 0.7, 0.9, 1.0])),
        class_agnostic=bool(rng.random() < 0.5),
        max_detections=int(rng.choice([1, 2, 5, 100])),
    )
    if coarse and rng.random() < 0.7:  # keep the grid: IoUs of exactly 1/3, 1/2, ...
        lb = Letterbox(1.0, 1.0, 0.0, 0.0)
    elif rng.random() < 0.5:
        lb = Letterbox(float(rng.random() * 2 + 0.1), float(rng.random() * 2 + 0.1), 0.0, 0.0)
    else:
        s = float(rng.random() + 0.2)
        lb = Letterbox(s, s, float(rng.integers(0, 30)), float(rng.random() * 30))
    return {
        "boxes": boxes,
        "scores": scores,
        "class_ids": rng.integers(0, 4, n),
        "spec": spec,
        "classes": ["a", "b", "c"],  # class 3 is labelled with its number
        "letterbox": lb,
        "image_size": (int(rng.integers(20, 200)), int(rng.integers(20, 200)))
        if not huge
        else (9000, 9000),
        "keypoints": kp,
        "suppress": bool(rng.random() < 0.8),
    }


@pytest.mark.parametrize(("coarse", "huge"), [(False, False), (True, False), (False, True)])
def test_few_box_tail_gives_the_numpy_tail_items_bit_for_bit_when_boxes_are_few(
    monkeypatch: pytest.MonkeyPatch, coarse: bool, huge: bool
) -> None:
    rng = np.random.default_rng(11 + coarse + 2 * huge)
    cases = [_tail_case(rng, coarse, huge) for _ in range(600)]
    # An IoU of exactly 0.7 against the threshold 0.7: both sides are rounded to float32, where
    # 0.7 is 0.69999999, so the second box survives (in doubles it would be suppressed).
    tie = _tail_case(rng, False)
    tie.update(
        boxes=np.array([[0, 0, 10, 1], [0, 0, 7, 1]], np.float32),
        scores=np.array([0.9, 0.8], np.float32),
        class_ids=np.zeros(2, np.intp),
        spec=YoloPost(type="yolo_v8", nms_iou=0.7),
        letterbox=Letterbox(1.0, 1.0, 0.0, 0.0),
        image_size=(20, 20),
        keypoints=None,
        suppress=True,
    )
    assert len(_finish(**tie)) == 2
    cases.append(tie)
    fast = [_as_tuples(_finish(**c)) for c in cases]
    assert sum(len(f) for f in fast) > 600  # the cases keep boxes, not only empty lists
    monkeypatch.setattr(post, "FEW_BOXES", 0)  # force the numpy tail
    assert fast == [_as_tuples(_finish(**c)) for c in cases]


@pytest.mark.parametrize("n_classes", [1, 3])
def test_yolo_v8_decodes_few_candidates_like_the_numpy_path_when_boxes_are_few(
    monkeypatch: pytest.MonkeyPatch, n_classes: int
) -> None:
    rng = np.random.default_rng(5)
    cases = []
    for _ in range(200):
        pred = rng.random((1, 4 + n_classes, 60)).astype(np.float32)
        pred[0, :2] *= 96
        pred[0, 2:4] *= 40
        pred[0, 4:] = np.where(rng.random((n_classes, 60)) < 0.1, pred[0, 4:], 0.0)
        spec = YoloPost(type="yolo_v8", score_threshold=0.3, nms_iou=0.45)
        lb = Letterbox(0.5, 0.5, 0.0, float(rng.integers(0, 20)))
        cases.append(([pred], spec, ["x", "y"], lb, (192, 160)))
    fast = [_as_tuples(decode_yolo_v8(*c)) for c in cases]
    assert sum(len(f) for f in fast) > 200
    monkeypatch.setattr(post, "FEW_BOXES", 0)
    assert fast == [_as_tuples(decode_yolo_v8(*c)) for c in cases]


# ---- top-k ----------------------------------------------------------------------------------


def _reference_top_k(probs: np.ndarray, k: int) -> list[list[int]]:
    """The rule: best first, equal scores by the lower class id (a stable descending sort)."""
    return np.argsort(-probs, axis=1, kind="stable")[:, :k].tolist()


@pytest.mark.parametrize("n_classes", [12, 300])  # a plain sort per row; numpy partition first
@pytest.mark.parametrize("top_k", [1, 2, 3, 7, 8, 12])
def test_classify_top_k_orders_ties_by_class_id_when_scores_tie(n_classes: int, top_k: int) -> None:
    rng = np.random.default_rng(3)
    rows = np.round(rng.random((6, n_classes)) * 4).astype(np.float32)  # many exact ties
    rows[5] = 1.0  # every class ties
    spec = ClassifyPost(type="identity", top_k=top_k)
    items = classify([rows], spec, [str(i) for i in range(n_classes)])
    ids = [[int(label) for label, _ in item.top_k] for item in items]
    assert ids == _reference_top_k(rows, top_k)
    assert [item.class_id for item in items] == rows.argmax(axis=1).tolist()
    assert [[s for _, s in item.top_k] for item in items] == [
        [float(rows[r, i]) for i in row] for r, row in enumerate(ids)
    ]


def test_softmax_equals_the_plain_float32_formula_when_given_any_dtype() -> None:
    rng = np.random.default_rng(4)
    for x in (rng.normal(size=(3, 10)) * 20, rng.normal(size=(2, 1000)).astype(np.float16)):
        z = x.astype(np.float32)
        z = z - z.max(axis=1, keepdims=True)
        want = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        got = post.softmax(x, axis=1)
        assert got.dtype == np.float32 and np.array_equal(got, want)


@pytest.mark.parametrize("top_k", [3, 12])
def test_classify_top_k_orders_ties_by_class_id_when_scores_are_minus_infinity(top_k: int) -> None:
    rows = np.full((2, 100), -np.inf, np.float32)
    rows[1, 50] = 1.0
    items = classify([rows], ClassifyPost(type="identity", top_k=top_k), [])
    assert [[int(label) for label, _ in i.top_k] for i in items] == _reference_top_k(rows, top_k)


def test_classify_top_k_still_answers_when_scores_are_not_numbers() -> None:
    rows = np.full((1, 100), np.nan, np.float32)
    items = classify([rows], ClassifyPost(type="identity", top_k=3), [])
    assert len(items) == 1 and len(items[0].top_k) == 3


# ---- batched pre-processing -----------------------------------------------------------------

_SPECS: list[dict[str, Any]] = [
    {"resize": (28, 28), "color": "gray", "scale": 1 / 255},
    {"resize": (20, 24), "color": "gray", "layout": "nhwc", "scale": 1 / 255, "mean": [0.5],
     "std": [0.25]},
    {"resize": (12, 10), "color": "gray", "mean": [100.0]},
    {"resize": (32, 24), "color": "rgb", "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.25]},
    {"resize": (16, 20), "color": "bgr", "layout": "nhwc", "dtype": "uint8"},
    {"resize": (20, 16), "mode": "letterbox", "color": "rgb", "dtype": "uint8", "scale": 0.5},
    {"resize": (24, 24), "color": "gray", "dtype": "int8", "quant_scale": 0.02,
     "quant_zero_point": -3, "scale": 1 / 255},
    {"resize": (18, 22), "color": "rgb", "layout": "nhwc", "scale": 1 / 255, "mean": [0.5],
     "std": [0.2, 0.3, 0.25]},
    {"resize": (22, 18), "color": "bgr", "dtype": "uint8", "mean": [100.0, 90.0, 80.0]},
    # >= 16k pixels: the colour planes are split with cv2.split before normalising
    {"resize": (160, 120), "color": "rgb", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
     "std": [0.229, 0.224, 0.225]},
    {"resize": (136, 128), "mode": "letterbox", "color": "bgr", "layout": "nhwc", "scale": 0.5,
     "mean": [3.0, 2.0, 1.0]},
]  # fmt: skip


@pytest.mark.parametrize("kw", _SPECS)
def test_preprocess_matches_the_broadcast_formula_when_normalising(kw: dict[str, Any]) -> None:
    # Normalisation runs one channel plane at a time; it must equal the plain numpy broadcast.
    spec = PreSpec(**kw)
    frame = np.random.default_rng(9).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    got, _ = preprocess(frame, spec)
    resized, _ = _resize(frame, spec)  # the geometry is not what this test is about
    if spec.color == "gray":
        chw = cv2.cvtColor(resized, cv2.COLOR_BGR2GRAY)[:, :, None]
    else:
        chw = resized[:, :, ::-1] if spec.color == "rgb" else resized
    x = chw.astype(np.float32)
    if spec.scale != 1.0:
        x *= np.float32(spec.scale)
    if spec.mean is not None:
        x -= np.asarray(spec.mean, dtype=np.float32)
    if spec.std is not None:
        x /= np.asarray(spec.std, dtype=np.float32)
    if spec.dtype == "uint8":
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    elif spec.dtype == "int8":
        x = np.clip(
            np.rint(x / (spec.quant_scale or 1.0) + (spec.quant_zero_point or 0)), -128, 127
        ).astype(np.int8)
    want = x.transpose(2, 0, 1)[None] if spec.layout == "nchw" else x[None]
    assert got.dtype == want.dtype and np.array_equal(got, want)


@pytest.mark.parametrize("kw", _SPECS)
def test_preprocess_batch_equals_concatenated_preprocess_when_crops_are_frame_views(
    kw: dict[str, Any],
) -> None:
    spec = PreSpec(**kw)
    frame = np.random.default_rng(5).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    regions = [(0, 0, 30, 40), (10, 5, 90, 25), (44, 60, 47, 120), (3, 3, 4, 4)]
    crops = [frame[y1:y2, x1:x2] for x1, y1, x2, y2 in regions]
    want = [preprocess(c, spec) for c in crops]
    for n in (1, len(crops)):
        got, lbs = preprocess_batch(crops[:n], spec)
        ref = np.concatenate([t for t, _ in want[:n]])
        assert got.dtype == ref.dtype and got.shape == ref.shape and got.flags.c_contiguous
        assert np.array_equal(got, ref)
        assert [(lb.scale_x, lb.scale_y, lb.pad_x, lb.pad_y) for lb in lbs] == [
            (lb.scale_x, lb.scale_y, lb.pad_x, lb.pad_y) for _, lb in want[:n]
        ]


def test_preprocess_batch_refuses_when_the_spec_has_a_plugin() -> None:
    spec = PreSpec(resize=(8, 8), plugin="pipeline_plugins.py:gray_pre")
    with pytest.raises(PipelineError, match="one at a time"):
        preprocess_batch([np.zeros((8, 8, 3), np.uint8)], spec)
    with pytest.raises(PipelineError, match="no images"):
        preprocess_batch([], PreSpec(resize=(8, 8)))
