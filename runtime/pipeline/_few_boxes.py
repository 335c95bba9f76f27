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
from collections.abc import Callable, Sequence

from runtime.pipeline.prediction import Item

__all__ = ["FEW_BOXES", "f32", "finish_few", "xyxy_from_cxcywh"]

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


def _area(b: list[float]) -> float:
    w, h = f32(b[2] - b[0]), f32(b[3] - b[1])
    return f32((w if w > 0.0 else 0.0) * (h if h > 0.0 else 0.0))


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
        moved = []
        for b, c in zip(boxes, ids, strict=True):
            shift = f32(f32(float(c)) * span)
            moved.append([f32(v + shift) for v in b])
        boxes = moved
    if n == 1:
        return [0]
    areas = [_area(b) for b in boxes]
    th = f32(iou)
    removed = [False] * n
    keep: list[int] = []
    for i in sorted(range(n), key=scores.__getitem__, reverse=True):  # stable: ties by index
        if removed[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        bi, ai = boxes[i], areas[i]
        for j in range(n):
            if not removed[j] and not _iou_at_most(bi, boxes[j], ai, areas[j], th):
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
    sx, sy, px, py = (f32(v) for v in letterbox)
    fw, fh = f32(image_size[0]), f32(image_size[1])
    src: list[list[float]] = []
    kept: list[int] = []
    for r, (x1, y1, x2, y2) in enumerate(boxes):
        row = []
        for v, pad, scale, side in ((x1, px, sx, fw), (y1, py, sy, fh), (x2, px, sx, fw),
                                    (y2, py, sy, fh)):  # fmt: skip
            v = f32((f32(v - pad) if pad else v) / scale)  # v - 0.0 is v
            # np.maximum(v, 0) then np.minimum(v, side): NaN stays NaN.
            if not v > 0.0 and v == v:
                v = 0.0
            if not v < side and v == v:
                v = side
            row.append(v)
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
            item.keypoints = [
                (f32(f32(x - px) / sx), f32(f32(y - py) / sy)) for x, y in keypoints[kept[i]]
            ]
    return items


def xyxy_from_cxcywh(
    cx: list[float], cy: list[float], w: list[float], h: list[float]
) -> list[list[float]]:
    """Float32 centre/size columns -> x1, y1, x2, y2 rows, as ``_cxcywh_to_xyxy`` computes them."""
    rows = []
    for x, y, bw, bh in zip(cx, cy, w, h, strict=True):
        hw, hh = f32(bw / 2), f32(bh / 2)
        rows.append([f32(x - hw), f32(y - hh), f32(x + hw), f32(y + hh)])
    return rows
