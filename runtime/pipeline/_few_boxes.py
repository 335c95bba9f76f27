"""The detection tail for a few boxes, in plain Python with float32 arithmetic.

A detector usually keeps a handful of candidates above its score threshold. For those, the
numpy tail of :mod:`runtime.pipeline.postprocess` (map to source pixels, clamp, drop boxes
without area, greedy NMS, cap, build items) is some fifty numpy calls on arrays of three rows;
each costs a microsecond or two of dispatch, and several times that right after an engine call
has pushed numpy's code out of the CPU caches. Here the same steps run on Python floats: the
boxes leave numpy once (``tolist``) and the items are built from the results.

The results are the numpy tail's, bit for bit (``tests/runtime/pipeline/test_fast_paths.py``
holds them to it): every value is rounded to float32 (:func:`f32`) after each operation numpy
does in float32. Rounding the exact double result of one ``+ - * /`` on two float32 values to
float32 gives the correctly rounded float32 result, so the two agree on every input,
including ties, infinities and NaN; comparisons against a Python-float threshold compare with
the threshold rounded to float32, as numpy does with a Python scalar.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Callable, Sequence

from runtime.pipeline.prediction import Item

__all__ = ["FEW_BOXES", "f32", "f32_all", "finish_few", "xyxy_from_cxcywh"]

FEW_BOXES = 16
"""Candidates (boxes that passed the score threshold) up to which the Python tail runs."""

_F32 = struct.Struct("f")
_pack: Callable[[float], bytes] = _F32.pack
_unpack: Callable[[bytes], tuple[float]] = _F32.unpack


def f32(v: float) -> float:
    """``v`` rounded to the nearest float32 (to ±inf beyond its range, as numpy rounds)."""
    try:
        return _unpack(_pack(v))[0]
    except OverflowError:
        return math.copysign(math.inf, v)


def f32_all(values: Sequence[float]) -> list[float]:
    """Every value rounded as :func:`f32` does, in one call: ``array('f')`` stores each as a C
    float (the same round to nearest, ±inf beyond the range, NaN kept)."""
    return array("f", values).tolist()


def _iou_at_most(a: list[float], b: list[float], area_a: float, area_b: float, th: float) -> bool:
    """Whether the IoU of ``a`` and ``b`` (x1, y1, x2, y2) is at most ``th``, computed as
    :func:`runtime.pipeline.postprocess._nms_matrix` does in float32."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0.0 or h <= 0.0:
        # No overlap: the IoU is 0 (rounding keeps a difference's sign, and its zero), and
        # the threshold is > 0. Boxes here are finite: clamped to the frame.
        return True
    inter = f32(f32(w) * f32(h))
    union = f32(f32(area_a + area_b) - inter)
    return f32(inter / (union if union > _EPS else _EPS)) <= th


_EPS = f32(1e-9)


def _areas(boxes: list[list[float]]) -> list[float]:
    """Per box ``max(x2 - x1, 0) * max(y2 - y1, 0)`` in float32."""
    sides = f32_all([v for b in boxes for v in (b[2] - b[0], b[3] - b[1])])
    return f32_all(
        [
            (w if w > 0.0 else 0.0) * (h if h > 0.0 else 0.0)
            for w, h in zip(sides[::2], sides[1::2], strict=True)
        ]
    )


def _nms(
    boxes: list[list[float]],
    scores: list[float],
    ids: list[int] | None,
    iou: float,
    limit: int,
) -> list[int]:
    """:func:`runtime.pipeline.postprocess.nms` on Python lists (same boxes kept, same order).

    Only the rows of kept boxes are computed: a row of the IoU matrix is only ever read for a
    box that is kept, and marking an already handled box removed changes nothing.
    """
    n = len(boxes)
    if n == 0 or limit <= 0:
        return []
    if ids is not None:
        # Each class moved to its own region: + class_id * span, in float32 like numpy.
        span = f32(float(f32(max(max(b) for b in boxes) - min(min(b) for b in boxes))) + 1.0)
        shifts = f32_all([v * span for v in f32_all([float(c) for c in ids])])
        flat = f32_all([v + shift for b, shift in zip(boxes, shifts, strict=True) for v in b])
        boxes = [flat[i : i + 4] for i in range(0, 4 * n, 4)]
    if n == 1:
        return [0]
    areas = _areas(boxes)
    th = f32(iou)
    order = sorted(range(n), key=scores.__getitem__, reverse=True)  # stable: ties by index
    removed = [False] * n
    keep: list[int] = []
    for pos, i in enumerate(order):
        if removed[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        x1, y1, x2, y2 = boxes[i]
        ai = areas[i]
        # Only the boxes still to come: marking one already handled changes nothing.
        for j in order[pos + 1 :]:
            if removed[j]:
                continue
            b = boxes[j]
            # min/max written out: the same values, without a builtin call each.
            w = (x2 if x2 < b[2] else b[2]) - (x1 if x1 > b[0] else b[0])
            if w <= 0.0:
                continue  # no overlap: the IoU is 0 (see _iou_at_most)
            h = (y2 if y2 < b[3] else b[3]) - (y1 if y1 > b[1] else b[1])
            if not h <= 0.0 and not _iou_at_most(boxes[i], b, ai, areas[j], th):
                removed[j] = True
    return keep


def finish_few(
    boxes: list[list[float]],
    scores: list[float],
    class_ids: list[int],
    letterbox: tuple[float, float, float, float],
    image_size: tuple[int, int],
    names: Sequence[str],
    nms_iou: float,
    class_agnostic: bool,
    max_detections: int,
    keypoints: list[list[list[float]]] | None = None,
    suppress: bool = True,
) -> list[Item]:
    """:func:`runtime.pipeline.postprocess._finish` for float32 ``boxes`` (x1, y1, x2, y2 in
    model-input pixels) and ``scores`` given as lists; ``letterbox`` is (scale_x, scale_y,
    pad_x, pad_y), neither scale zero."""
    sx, sy, px, py = f32_all(letterbox)
    fw, fh = f32(image_size[0]), f32(image_size[1])
    flat = [v for b in boxes for v in b]
    if px or py:  # v - 0.0 is v
        flat = f32_all(
            [v - pad for v, pad in zip(flat, (px, py, px, py) * len(boxes), strict=True)]
        )
    flat = f32_all(
        [v / scale for v, scale in zip(flat, (sx, sy, sx, sy) * len(boxes), strict=True)]
    )
    src: list[list[float]] = []
    kept: list[int] = []
    for r in range(len(boxes)):
        row = flat[4 * r : 4 * r + 4]
        for c, side in enumerate((fw, fh, fw, fh)):
            v = row[c]
            # np.maximum(v, 0) then np.minimum(v, side): NaN stays NaN.
            if not v > 0.0 and v == v:
                v = 0.0
            if not v < side and v == v:
                v = side
            row[c] = v
        if row[2] > row[0] and row[3] > row[1]:  # has area (NaN has none)
            src.append(row)
            kept.append(r)
    s = [scores[r] for r in kept]
    if suppress:
        ids = None if class_agnostic else [class_ids[r] for r in kept]
        order = _nms(src, s, ids, nms_iou, max_detections)
    else:
        order = sorted(range(len(src)), key=s.__getitem__, reverse=True)[:max_detections]
    items = []
    for i in order:
        c = class_ids[kept[i]]
        b = src[i]
        label = names[c] if 0 <= c < len(names) else str(c)
        items.append(Item(class_id=c, label=label, score=s[i], box=(b[0], b[1], b[2], b[3])))
    if keypoints is not None and keypoints and keypoints[0]:
        for item, i in zip(items, order, strict=True):
            points = keypoints[kept[i]]
            moved = f32_all([v - pad for x, y in points for v, pad in ((x, px), (y, py))])
            xy = f32_all(
                [v / scale for v, scale in zip(moved, (sx, sy) * len(points), strict=True)]
            )
            item.keypoints = list(zip(xy[::2], xy[1::2], strict=True))
    return items


def xyxy_from_cxcywh(
    cx: list[float], cy: list[float], w: list[float], h: list[float]
) -> list[list[float]]:
    """Float32 centre/size columns -> x1, y1, x2, y2 rows, as ``_cxcywh_to_xyxy`` computes them."""
    n = len(cx)
    halves = f32_all([v / 2 for v in w] + [v / 2 for v in h])
    flat = f32_all(
        [
            v
            for x, y, hw, hh in zip(cx, cy, halves[:n], halves[n:], strict=True)
            for v in (x - hw, y - hh, x + hw, y + hh)
        ]
    )
    return [flat[i : i + 4] for i in range(0, 4 * n, 4)]
