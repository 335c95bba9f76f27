"""The per-frame fast paths give exactly what the straightforward code gives.

The pipeline batches the pre-processing of a frame's crops, runs NMS for a few boxes over a
precomputed IoU matrix and picks top-k with plain fancy indexing. Each is checked here against
the one-at-a-time form it replaces, bit for bit, including ties.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

import runtime.pipeline.postprocess as post
from runtime.errors import PipelineError
from runtime.pipeline.graph import ClassifyPost, PreSpec
from runtime.pipeline.postprocess import classify, nms
from runtime.pipeline.preprocess import _resize, preprocess, preprocess_batch

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


# ---- top-k ----------------------------------------------------------------------------------


def _reference_top_k(probs: np.ndarray, k: int) -> list[list[int]]:
    """The take_along_axis form the classifier decoder used before."""
    if k == 1:
        return probs.argmax(axis=1)[:, None].tolist()
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(probs, part, axis=1)
    order = np.take_along_axis(part, np.argsort(-part_scores, axis=1, kind="stable"), axis=1)
    return order.tolist()


@pytest.mark.parametrize("top_k", [1, 2, 3, 7])
def test_classify_top_k_matches_the_reference_when_scores_tie(top_k: int) -> None:
    rng = np.random.default_rng(3)
    rows = np.round(rng.random((6, 12)) * 4).astype(np.float32)  # many exact ties
    spec = ClassifyPost(type="identity", top_k=top_k)
    items = classify([rows], spec, [str(i) for i in range(12)])
    ids = [[int(label) for label, _ in item.top_k] for item in items]
    assert ids == _reference_top_k(rows, top_k)
    assert [[s for _, s in item.top_k] for item in items] == [
        [float(rows[r, i]) for i in row] for r, row in enumerate(ids)
    ]


# ---- batched pre-processing -----------------------------------------------------------------

_SPECS: list[dict[str, Any]] = [
    {"resize": (28, 28), "color": "gray", "scale": 1 / 255},
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
