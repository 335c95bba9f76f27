"""``pre.interpolation``, ``crop.rounding`` and a classifier stage's own class names."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.backends import BackendOptions, load_backend
from runtime.pipeline import Pipeline, parse_pipeline_spec
from runtime.pipeline.graph import CropSpec, PreSpec
from runtime.pipeline.preprocess import crop_region, preprocess


@pytest.mark.parametrize(
    ("name", "flag"),
    [("area", cv2.INTER_AREA), ("linear", cv2.INTER_LINEAR), ("nearest", cv2.INTER_NEAREST)],
)
@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_resize_uses_the_named_filter_when_interpolation_is_set(
    name: str, flag: int, mode: str
) -> None:
    rng = np.random.default_rng(0)
    for src in (
        rng.integers(0, 255, (50, 70, 3), np.uint8),
        rng.integers(0, 255, (9, 7, 3), np.uint8),
    ):
        spec = PreSpec(
            resize=(24, 24),
            interpolation=name,
            mode=mode,
            dtype="uint8",
            layout="nhwc",
            color="bgr",
        )  # type: ignore[arg-type]
        got, _ = preprocess(src, spec)
        if mode == "stretch":
            want = cv2.resize(src, (24, 24), interpolation=flag)
        else:
            h, w = src.shape[:2]
            s = min(24 / w, 24 / h)
            nw, nh = max(1, round(w * s)), max(1, round(h * s))
            want = np.full((24, 24, 3), 114, np.uint8)
            px, py = (24 - nw) // 2, (24 - nh) // 2
            want[py : py + nh, px : px + nw] = cv2.resize(src, (nw, nh), interpolation=flag)
        np.testing.assert_array_equal(got[0], want)


def test_auto_interpolation_is_area_when_shrinking_and_linear_when_enlarging() -> None:
    rng = np.random.default_rng(1)
    big, small = (
        rng.integers(0, 255, (64, 64, 3), np.uint8),
        rng.integers(0, 255, (8, 8, 3), np.uint8),
    )
    spec = PreSpec(resize=(16, 16), dtype="uint8", layout="nhwc", color="bgr")
    np.testing.assert_array_equal(
        preprocess(big, spec)[0][0], cv2.resize(big, (16, 16), interpolation=cv2.INTER_AREA)
    )
    np.testing.assert_array_equal(
        preprocess(small, spec)[0][0], cv2.resize(small, (16, 16), interpolation=cv2.INTER_LINEAR)
    )


@pytest.mark.parametrize(
    ("rounding", "region"),
    [
        ("outward", (10, 10, 21, 21)),  # floor / ceil: the whole box is inside the crop
        ("nearest", (10, 11, 20, 21)),
        ("inward", (11, 11, 20, 20)),  # ceil / floor: only whole pixels of the box
    ],
)
def test_crop_edges_round_as_configured_when_boxes_fall_between_pixels(
    rounding: str, region: tuple[int, int, int, int]
) -> None:
    spec = CropSpec(margin=0.0, rounding=rounding)  # type: ignore[arg-type]
    assert crop_region((100, 100), (10.4, 10.6, 20.4, 20.6), spec) == region


def test_classifier_stage_labels_its_items_with_its_own_classes_when_given(
    classifier_dynamic: Path,
) -> None:
    stage = {
        "name": "cls",
        "model": "cls",
        "pre": {"resize": [28, 28], "color": "gray", "scale": 1 / 255},
        "post": {"type": "softmax", "top_k": 2, "classes": [f"level{i}" for i in range(10)]},
    }
    pipe = Pipeline(
        parse_pipeline_spec({"stages": [stage]}),
        {"cls": load_backend("onnxruntime", classifier_dynamic, BackendOptions(threads=1))},
        classes=[str(i) for i in range(10)],  # the ontology: not used by this stage
    )
    try:
        pred = pipe.run(np.full((28, 28, 3), 200, np.uint8), "f")
    finally:
        pipe.close()
    item = pred.stages["cls"].items[0]
    assert item.label == "level7" and item.top_k[0][0] == "level7"
