"""Decoders on hand-built output tensors with known answers (pure numpy, no engine)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.errors import PipelineError
from runtime.pipeline.graph import Anchors, ClassifyPost, PreSpec, SsdPost, YoloPost
from runtime.pipeline.postprocess import (
    classify,
    decode_yolo_v5,
    decode_yolo_v8,
    nms,
)
from runtime.pipeline.preprocess import Letterbox, preprocess
from runtime.pipeline.ssd import decode_ssd, ssd_anchors

IDENTITY = Letterbox(1.0, 1.0, 0.0, 0.0)


# ---- classification -------------------------------------------------------------------------


def test_classify_softmax_top_k_when_logits_are_given() -> None:
    items = classify(
        [np.array([[1.0, 3.0, 2.0, 0.0]], np.float32)],
        ClassifyPost(type="softmax", top_k=3),
        ["a", "b", "c", "d"],
    )
    assert len(items) == 1
    it = items[0]
    e = np.exp([1.0, 3.0, 2.0, 0.0])
    assert (it.class_id, it.label) == (1, "b")
    assert it.score == pytest.approx(e[1] / e.sum(), rel=1e-5)
    assert it.scores is not None and sum(it.scores) == pytest.approx(1.0, rel=1e-5)
    assert [lbl for lbl, _ in it.top_k] == ["b", "c", "a"]
    assert [s for _, s in it.top_k] == sorted((s for _, s in it.top_k), reverse=True)


def test_classify_yields_one_item_per_row_when_batched() -> None:
    logits = np.array([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]], np.float32)[:, :, None, None]
    items = classify([logits], ClassifyPost(type="softmax", top_k=10), ["x", "y", "z"])
    assert [i.label for i in items] == ["x", "z"]
    assert all(len(i.top_k) == 3 for i in items)  # top_k is capped at the class count


def test_classify_sigmoid_and_identity_when_selected_by_spec() -> None:
    out = [np.zeros((1, 2), np.float32), np.array([[0.0, 100.0, -100.0]], np.float32)]
    sig = classify(out, ClassifyPost(type="sigmoid", output=1), ["a", "b", "c"])[0]
    assert sig.scores == pytest.approx([0.5, 1.0, 0.0])
    ident_spec = ClassifyPost(type="identity", output="second")
    ident = classify(out, ident_spec, ["a"], ["first", "second"])
    assert ident[0].scores == [0.0, 100.0, -100.0]
    assert ident[0].label == "1"  # beyond the class list: labelled with its number


def test_classify_raises_when_the_output_does_not_exist() -> None:
    with pytest.raises(PipelineError, match="no output"):
        classify([np.zeros((1, 2))], ClassifyPost(type="softmax", output=3), ["a", "b"])


# ---- NMS ------------------------------------------------------------------------------------


def test_nms_keeps_overlapping_boxes_of_different_classes_when_per_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.array([0, 1, 0])
    assert nms(boxes, scores, 0.5, class_ids=classes).tolist() == [0, 1, 2]
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]  # class-agnostic


def test_nms_suppresses_only_above_the_iou_threshold_when_boxes_touch() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 10]], np.float32)  # IoU 1/3, 1
    scores = np.array([0.5, 0.9, 0.4], np.float32)
    assert nms(boxes, scores, 0.4).tolist() == [1, 0]
    assert nms(boxes, scores, 0.3).tolist() == [1]
    assert nms(boxes, scores, 0.4, max_keep=1).tolist() == [1]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


# ---- YOLO -----------------------------------------------------------------------------------


def test_letterbox_maps_input_pixels_to_source_pixels_when_image_is_wide() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    tensor, lb = preprocess(image, PreSpec(resize=(100, 100), mode="letterbox"))
    assert tensor.shape == (1, 3, 100, 100)
    # 200x100 -> 100x50 content, padded 25 rows above and below.
    src = lb.to_source(np.array([[10, 35, 50, 55], [0, 25, 100, 75]], np.float32))
    np.testing.assert_allclose(src, [[20, 20, 100, 60], [0, 0, 200, 100]])


def test_decode_yolo_v8_maps_clamps_and_suppresses_when_boxes_are_known() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    _, lb = preprocess(image, PreSpec(resize=(100, 100), mode="letterbox"))
    preds = np.array(
        [
            # cx, cy, w, h, class 0, class 1
            [30, 45, 40, 20, 0.9, 0.1],  # -> source x 20..100, y 20..60
            [31, 45, 40, 20, 0.2, 0.8],  # overlaps the first, other class
            [32, 45, 40, 20, 0.7, 0.0],  # overlaps the first, same class -> suppressed
            [80, 30, 20, 20, 0.0, 0.5],  # y 20..40 input -> -10..30 source, clamped to 0..30
            [80, 80, 10, 10, 0.1, 0.2],  # under the threshold
            [50, 10, 10, 10, 0.9, 0.0],  # entirely in the top padding -> no area, dropped
        ],
        np.float32,
    ).T[None]
    spec = YoloPost(type="yolo_v8", score_threshold=0.25, nms_iou=0.5, classes=["cat", "dog"])
    items = decode_yolo_v8([preds], spec, ["ignored"], lb, (200, 100))
    assert [(i.label, round(i.score, 2)) for i in items] == [
        ("cat", 0.9),
        ("dog", 0.8),
        ("dog", 0.5),
    ]
    assert items[0].box == pytest.approx((20, 20, 100, 60))
    assert items[2].box == pytest.approx((140, 0, 180, 30))
    agnostic = spec.model_copy(update={"class_agnostic": True})
    assert [i.label for i in decode_yolo_v8([preds], agnostic, [], lb, (200, 100))] == [
        "cat",
        "dog",
    ]
    capped = spec.model_copy(update={"max_detections": 1})
    assert len(decode_yolo_v8([preds], capped, [], lb, (200, 100))) == 1


def test_decode_yolo_v5_multiplies_objectness_when_boxes_are_known() -> None:
    preds = np.array(
        [
            [50, 50, 20, 10, 0.9, 0.1, 0.8],  # 0.72, class 1 -> 40..60, 45..55
            [20, 20, 10, 10, 0.3, 0.9, 0.0],  # 0.27, class 0
            [80, 80, 10, 10, 0.2, 0.9, 0.0],  # 0.18 -> dropped
        ],
        np.float32,
    )[None]
    items = decode_yolo_v5(
        [preds], YoloPost(type="yolo_v5", score_threshold=0.25), ["a", "b"], IDENTITY, (100, 100)
    )
    assert [(i.label, round(i.score, 3)) for i in items] == [("b", 0.72), ("a", 0.27)]
    assert items[0].box == pytest.approx((40, 45, 60, 55))


def test_decode_yolo_raises_when_the_layout_is_wrong() -> None:
    with pytest.raises(PipelineError, match="yolo_v8"):
        decode_yolo_v8([np.zeros((2, 6, 3))], YoloPost(type="yolo_v8"), [], IDENTITY, (9, 9))


# ---- SSD ------------------------------------------------------------------------------------

ANCHORS = Anchors(feature_maps=[(2, 2), (1, 1)], sizes=[[0.5], [0.8, 1.0]], aspect_ratios=[1, 4])


def test_ssd_anchors_follow_the_documented_order_when_generated() -> None:
    a = ssd_anchors(ANCHORS)
    assert a.shape == (2 * 2 * 1 * 2 + 1 * 1 * 2 * 2, 4)
    np.testing.assert_allclose(a[0], [0.25, 0.25, 0.5, 0.5])  # row 0, col 0, ratio 1
    np.testing.assert_allclose(a[1], [0.25, 0.25, 1.0, 0.25])  # ratio 4: w*2, h/2
    np.testing.assert_allclose(a[2], [0.75, 0.25, 0.5, 0.5])  # row 0, col 1
    np.testing.assert_allclose(a[4], [0.25, 0.75, 0.5, 0.5])  # row 1, col 0
    np.testing.assert_allclose(
        a[8:],
        [[0.5, 0.5, 0.8, 0.8], [0.5, 0.5, 1.6, 0.4], [0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 2.0, 0.5]],
    )


def test_ssd_anchors_raise_when_sizes_do_not_match_maps() -> None:
    with pytest.raises(PipelineError, match="size lists"):
        ssd_anchors(Anchors(feature_maps=[(2, 2)], sizes=[[0.5], [0.9]]))


def test_decode_ssd_applies_variances_and_skips_background_when_deltas_are_known() -> None:
    n = len(ssd_anchors(ANCHORS))
    deltas = np.zeros((1, n, 4), np.float32)
    # anchor 2 = (0.75, 0.25, 0.5, 0.5): shift cx by 1 * 0.1 * 0.5, shrink w to 0.4.
    deltas[0, 2] = [1.0, 0.0, math.log(0.8) / 0.2, 0.0]
    logits = np.zeros((1, n, 3), np.float32)
    logits[0, :, 0] = 10.0  # background everywhere...
    logits[0, 2] = [0.0, 0.0, 10.0]  # ...but anchor 2 is class 1 ("b")
    logits[0, 8] = [0.0, 10.0, 0.0]  # anchor 8 = (0.5, 0.5, 0.8, 0.8) is class 0 ("a")
    spec = SsdPost(type="ssd", anchors=ANCHORS, boxes_output=1, scores_output=0)
    lb = Letterbox(0.5, 0.5, 0.0, 0.0)  # input 100x100 from a 200x200 source
    items = decode_ssd([logits, deltas], spec, ["a", "b"], lb, (200, 200), (100, 100))
    assert [i.label for i in items] == ["b", "a"]
    # cx 0.8, w 0.4 -> x 0.6..1.0; cy 0.25, h 0.5 -> y 0..0.5; x100 input px, x2 source px.
    assert items[0].box == pytest.approx((120, 0, 200, 100), abs=1e-3)
    assert items[1].box == pytest.approx((20, 20, 180, 180), abs=1e-3)
    assert items[0].score == pytest.approx(1.0, abs=1e-3)


def test_decode_ssd_raises_when_anchor_count_differs() -> None:
    spec = SsdPost(type="ssd", anchors=ANCHORS)
    with pytest.raises(PipelineError, match="anchors"):
        decode_ssd([np.zeros((1, 3, 4)), np.zeros((1, 3, 3))], spec, [], IDENTITY, (9, 9), (9, 9))
