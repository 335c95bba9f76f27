"""SSD decoders: anchor-based heads with generated anchors, and TFLite's post-processed outputs.

Published single-shot detectors come in two shapes, and both run without glue code:

- **Anchor-based heads** (``post.type: ssd``): the model emits one regression row and one
  score row per anchor; the anchors are not in the file but generated from a few numbers
  (:func:`ssd_anchors`, two layouts: explicit grids as in torchvision/Caffe SSD, or per-layer
  strides as in the TF Object Detection API and MediaPipe — BlazeFace, palm detection).
  :func:`decode_ssd` turns the rows into boxes (and regressed keypoints) with the encoding the
  spec names (:class:`~runtime.pipeline.graph.SsdPost`): coordinate order, scale divisors,
  ``exp`` or linear sizes, softmax or sigmoid scores, with or without a background column.
- **Post-processed outputs** (``post.type: tflite_ssd``): models converted with TFLite's
  ``TFLite_Detection_PostProcess`` op already decoded and suppressed their boxes;
  :func:`decode_tflite_ssd` reads the four outputs (boxes, classes, scores, count).

Both then share the detection tail of :mod:`runtime.pipeline.postprocess` (score threshold,
letterbox to source pixels, clamp, NMS for anchor heads, ``max_detections``). Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from runtime.errors import PipelineError
from runtime.pipeline.graph import Anchors, SsdPost, TfliteSsdPost
from runtime.pipeline.postprocess import (
    _finish,
    _passing,
    _single,
    select_output,
    sigmoid,
    softmax,
)
from runtime.pipeline.prediction import Item
from runtime.pipeline.preprocess import Letterbox

__all__ = ["decode_ssd", "decode_tflite_ssd", "ssd_anchors"]


def ssd_anchors(spec: Anchors, input_size: tuple[int, int] | None = None) -> np.ndarray:
    """Generate SSD anchors as an ``N×4`` float32 array of ``cx, cy, w, h`` (fractions of input).

    **Explicit grids** (``feature_maps`` + ``sizes``). For each feature map ``k`` of size
    ``(fw, fh)``, in order: rows ``j`` in ``0..fh-1``, columns ``i`` in ``0..fw-1``, each size
    ``s`` of ``sizes[k]``, each aspect ratio ``ar``::

        cx = (i + ox) / fw        cy = (j + oy) / fh        (offset (ox, oy), default 0.5)
        w  = s * sqrt(ar)         h  = s / sqrt(ar)

    so ``N = sum_k fw_k * fh_k * len(sizes[k]) * len(aspect_ratios)``.

    **Per-layer strides** (``strides``; needs ``input_size`` (width, height)). Layer ``k`` has
    scale ``min_scale + (max_scale - min_scale) * k / (L - 1)`` (the mean of the two for one
    layer). Consecutive layers with the same stride form one grid of
    ``ceil(height / stride) × ceil(width / stride)`` cells; each of its layers adds one anchor
    per aspect ratio at its scale and, when ``interpolated_scale_aspect_ratio`` > 0, one of that
    ratio at ``sqrt(scale_k * scale_k+1)`` (``scale_L`` = 1); with
    ``reduce_boxes_in_lowest_layer`` layer 0 adds ratios 1, 2, 0.5 at scales 0.1, s, s instead.
    Cells in row-major order, anchors of a cell in that order. With ``fixed_size`` every anchor
    is 1×1, and ``per_cell[k]`` (if given) replaces the count of anchors of layer ``k``'s grid.
    This is MediaPipe's ``SsdAnchorsCalculator``.

    The model must emit its rows in this same order. Raises PipelineError when the spec and the
    sizes do not fit.
    """
    ox, oy = spec.offset
    if spec.strides is None:
        maps, sizes = spec.feature_maps or [], spec.sizes or []
        if len(sizes) != len(maps):
            raise PipelineError(
                f"ssd anchors: {len(maps)} feature maps but {len(sizes)} size lists"
            )
        ratios = np.sqrt(np.asarray(spec.aspect_ratios, dtype=np.float64))
        grids: list[tuple[int, int, np.ndarray]] = []
        for (fw, fh), layer_sizes in zip(maps, sizes, strict=True):
            s = np.asarray(layer_sizes, dtype=np.float64)
            wh = np.stack(
                [(s[:, None] * ratios[None, :]).ravel(), (s[:, None] / ratios[None, :]).ravel()],
                axis=1,
            )  # [S*R, 2], sizes outer, ratios inner
            grids.append((fw, fh, wh))
    else:
        if input_size is None:
            raise PipelineError("ssd anchors: strides need the model input size")
        grids = _stride_grids(spec, input_size)
    parts: list[np.ndarray] = []
    for fw, fh, wh in grids:
        jj, ii = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        centers = np.stack([(ii.ravel() + ox) / fw, (jj.ravel() + oy) / fh], axis=1)
        m = len(wh)
        block = np.empty((len(centers) * m, 4), dtype=np.float64)
        block[:, :2] = np.repeat(centers, m, axis=0)
        block[:, 2:] = np.tile(wh, (len(centers), 1))
        parts.append(block)
    if not parts:
        raise PipelineError("ssd anchors: no feature map")
    return np.concatenate(parts).astype(np.float32)


def _scale(spec: Anchors, k: int, layers: int) -> float:
    if layers == 1:
        return (spec.min_scale + spec.max_scale) / 2
    return spec.min_scale + (spec.max_scale - spec.min_scale) * k / (layers - 1)


def _stride_grids(spec: Anchors, input_size: tuple[int, int]) -> list[tuple[int, int, np.ndarray]]:
    """(grid width, grid height, anchor (w, h) per cell) per group of same-stride layers."""
    strides = spec.strides or []
    layers = len(strides)
    width, height = input_size
    grids: list[tuple[int, int, np.ndarray]] = []
    k = 0
    while k < layers:
        stride = strides[k]
        if stride <= 0:
            raise PipelineError(f"ssd anchors: stride {stride} must be positive")
        shapes: list[tuple[float, float]] = []  # (w, h) per anchor of a cell
        count = 0
        last = k
        while last < layers and strides[last] == stride:
            if spec.per_cell is not None:
                count += spec.per_cell[last]
            else:
                scale = _scale(spec, last, layers)
                pairs: list[tuple[float, float]]  # (aspect ratio, scale)
                if last == 0 and spec.reduce_boxes_in_lowest_layer:
                    pairs = [(1.0, 0.1), (2.0, scale), (0.5, scale)]
                else:
                    pairs = [(ar, scale) for ar in spec.aspect_ratios]
                    if spec.interpolated_scale_aspect_ratio > 0:
                        nxt = 1.0 if last == layers - 1 else _scale(spec, last + 1, layers)
                        pairs.append((spec.interpolated_scale_aspect_ratio, math.sqrt(scale * nxt)))
                for ar, s in pairs:
                    r = math.sqrt(ar)
                    shapes.append((s * r, s / r))
            last += 1
        n = count if spec.per_cell is not None else len(shapes)
        wh = np.ones((n, 2)) if spec.fixed_size else np.asarray(shapes, dtype=np.float64)
        grids.append((math.ceil(width / stride), math.ceil(height / stride), wh))
        k = last
    return grids


def decode_ssd(
    outputs: Sequence[np.ndarray],
    spec: SsdPost,
    classes: Sequence[str],
    letterbox: Letterbox,
    image_size: tuple[int, int],
    input_size: tuple[int, int],
    anchors: np.ndarray | None = None,
    names: Sequence[str] | None = None,
) -> list[Item]:
    """Decode SSD regressions ``[1, N, 4 + 2K]`` and scores ``[1, N, C(+1)]`` against anchors.

    The encoding is the spec's (see :class:`~runtime.pipeline.graph.SsdPost`); the default is
    the classic one: ``(dx, dy, dw, dh)`` with variances ``(v0, v1)``::

        cx = acx + dx * v0 * aw        cy = acy + dy * v0 * ah
        w  = aw * exp(dw * v1)         h  = ah * exp(dh * v1)

    and a softmax over ``C+1`` logits whose column 0 is background (class ``c`` of the result
    is column ``c + 1``). Boxes (and keypoints) are fractions of the model input, scaled by
    ``input_size`` (width, height) to input pixels. ``anchors`` defaults to
    ``ssd_anchors(spec.anchors, input_size)`` (pass them pre-computed on the hot path). Raises
    PipelineError on shape mismatches.
    """
    anchors = ssd_anchors(spec.anchors, input_size) if anchors is None else anchors
    width = 4 + 2 * spec.keypoints
    raw = _single(select_output(outputs, spec.boxes_output, names), "ssd boxes", width)
    logits = _single(select_output(outputs, spec.scores_output, names), "ssd scores", 0)
    background = spec.scores == "softmax" if spec.background is None else spec.background
    if (
        len(raw) != len(anchors)
        or len(logits) != len(anchors)
        or logits.shape[1] < 1 + int(background)
    ):
        raise PipelineError(
            f"ssd: {len(anchors)} anchors but boxes {np.shape(raw)} and scores {np.shape(logits)}"
        )
    probs = softmax(logits, axis=1) if spec.scores == "softmax" else sigmoid(logits)
    if background:
        probs = probs[:, 1:]
    if probs.shape[1] == 1:
        class_ids = np.zeros(len(probs), dtype=np.intp)
        scores = probs[:, 0]
    else:
        class_ids = probs.argmax(axis=1)
        scores = probs[np.arange(probs.shape[0]), class_ids]
    keep = _passing(scores, spec)
    if not keep.size:
        return []
    if spec.scale is not None:
        sx, sy, sw, sh = spec.scale
    else:
        v0, v1 = spec.anchors.variances
        sx, sy, sw, sh = 1 / v0, 1 / v0, 1 / v1, 1 / v1
    r = raw[keep].astype(np.float32, copy=False)
    xy = (0, 1) if spec.coords == "xywh" else (1, 0)
    a = anchors[keep]
    cx = a[:, 0] + r[:, xy[0]] / np.float32(sx) * a[:, 2]
    cy = a[:, 1] + r[:, xy[1]] / np.float32(sy) * a[:, 3]
    rw, rh = r[:, 2 + xy[0]] / np.float32(sw), r[:, 2 + xy[1]] / np.float32(sh)
    if spec.size == "exp":
        rw, rh = np.exp(rw), np.exp(rh)
    w, h = a[:, 2] * rw, a[:, 3] * rh
    tw, th = input_size
    boxes = np.stack(
        [(cx - w / 2) * tw, (cy - h / 2) * th, (cx + w / 2) * tw, (cy + h / 2) * th], axis=1
    ).astype(np.float32)
    keypoints = None
    if spec.keypoints:
        kp = r[:, 4:].reshape(len(r), spec.keypoints, 2)[:, :, list(xy)]
        kx = (a[:, None, 0] + kp[:, :, 0] / np.float32(sx) * a[:, None, 2]) * tw
        ky = (a[:, None, 1] + kp[:, :, 1] / np.float32(sy) * a[:, None, 3]) * th
        keypoints = np.stack([kx, ky], axis=2).astype(np.float32)
    return _finish(
        boxes, scores[keep], class_ids[keep], spec, classes, letterbox, image_size, keypoints
    )


def decode_tflite_ssd(
    outputs: Sequence[np.ndarray],
    spec: TfliteSsdPost,
    classes: Sequence[str],
    letterbox: Letterbox,
    image_size: tuple[int, int],
    input_size: tuple[int, int],
    names: Sequence[str] | None = None,
) -> list[Item]:
    """Read ``TFLite_Detection_PostProcess`` outputs: boxes ``[1, N, 4]`` (ymin, xmin, ymax,
    xmax; fractions of the input unless ``normalized`` is false), class ids ``[1, N]``,
    scores ``[1, N]`` and the valid row count ``[1]``. Only the first ``count`` rows are
    read; no NMS is run again. Raises PipelineError on shape mismatches."""
    boxes = _single(select_output(outputs, spec.boxes_output, names), "tflite_ssd boxes", 4)
    ids = np.asarray(select_output(outputs, spec.classes_output, names)).reshape(-1)
    scores = np.asarray(select_output(outputs, spec.scores_output, names)).reshape(-1)
    count_raw = np.asarray(select_output(outputs, spec.count_output, names)).reshape(-1)
    if count_raw.size != 1 or len(ids) != len(boxes) or len(scores) != len(boxes):
        raise PipelineError(
            f"tflite_ssd: boxes {np.shape(boxes)}, classes {np.shape(ids)}, scores "
            f"{np.shape(scores)} and count {np.shape(count_raw)} do not fit"
        )
    n = min(max(int(count_raw[0]), 0), len(boxes))
    scores = scores[:n].astype(np.float32)
    keep = _passing(scores, spec)
    if not keep.size:
        return []
    b = boxes[keep].astype(np.float32)
    tw, th = input_size if spec.normalized else (1, 1)
    xyxy = np.stack([b[:, 1] * tw, b[:, 0] * th, b[:, 3] * tw, b[:, 2] * th], axis=1)
    class_ids = np.rint(ids[keep]).astype(np.intp) + spec.label_offset
    return _finish(
        xyxy.astype(np.float32),
        scores[keep],
        class_ids,
        spec,
        classes,
        letterbox,
        image_size,
        suppress=False,
    )
