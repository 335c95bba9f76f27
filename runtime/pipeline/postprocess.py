"""Post-processing: turn an engine's raw output tensors into lists of prediction items.

Everything here is pure numpy (no engine, no I/O), so each decoder is tested on hand-built
tensors. The pipeline picks one decoder per stage from the stage's ``post`` spec:

- :func:`classify` — ``softmax`` / ``sigmoid`` / ``identity`` over a ``[B, C]`` (or ``[B, C, 1,
  1]``) output; one item per batch row, with the top-k and the full score vector.
- :func:`decode_yolo_v8` — one output ``[1, 4+C, N]``: rows ``cx, cy, w, h`` in model-input
  pixels, then C class scores that are already sigmoid.
- :func:`decode_yolo_v5` — one output ``[1, N, 5+C]``: ``cx, cy, w, h, objectness, C class
  scores`` (sigmoid already); a box's score is ``objectness * class score``.
- SSD decoders (anchor-based, and TFLite's post-processed outputs) live in
  :mod:`runtime.pipeline.ssd` and share this module's tail.

Detection decoders then share one tail: keep boxes scoring at least ``score_threshold``, map
them from model-input pixels to source-image pixels with :meth:`Letterbox.to_source`, clamp
them to the image (boxes left with no area are dropped), run greedy :func:`nms` (per class
unless ``class_agnostic``) and keep at most ``max_detections``, best first. Class names come
from the post spec's ``classes`` when given, else from the bundle ontology; an id beyond the
list is labelled with its number.

Plug-in decoders
----------------
``post: {type: plugin, function: "plugins/decode.py:fn", params: {...}}`` (a file of the
bundle, imported by :class:`~runtime.pipeline.plugins.PluginLoader`) calls::

    fn(outputs: list[np.ndarray], ctx: PostContext) -> list[Item]

``outputs`` are the model's outputs in signature order for **one** image (batch of one);
``ctx`` carries the stage's :class:`~runtime.pipeline.graph.PluginPost` spec, the class names,
the :class:`~runtime.pipeline.preprocess.Letterbox` from model-input to source pixels, the source
image size ``(width, height)``, the spec's ``params``, the model's output names and its input
size. Boxes must be returned in source-image
pixels (use ``ctx.letterbox.to_source``). Anything the function raises makes that frame an error
result; it never stops the pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from runtime.errors import PipelineError
from runtime.pipeline._few_boxes import FEW_BOXES, f32, finish_few, xyxy_from_cxcywh
from runtime.pipeline.graph import BoxPost, ClassifyPost, PluginPost, YoloPost
from runtime.pipeline.prediction import Item
from runtime.pipeline.preprocess import Letterbox

__all__ = [
    "PostContext",
    "classify",
    "decode_yolo_v5",
    "decode_yolo_v8",
    "label_of",
    "nms",
    "select_output",
    "sigmoid",
    "softmax",
]


@dataclass(frozen=True)
class PostContext:
    """What a plug-in decoder gets besides the raw outputs."""

    spec: PluginPost
    classes: list[str]
    letterbox: Letterbox
    image_size: tuple[int, int]  # source image (width, height) in pixels
    params: dict[str, Any] = field(default_factory=dict)
    output_names: list[str] = field(default_factory=list)  # the model's outputs, in order
    input_size: tuple[int, int] = (0, 0)  # (width, height) of the model input (pre resize)


# ---- small helpers --------------------------------------------------------------------------


def label_of(class_id: int, classes: Sequence[str]) -> str:
    """The class name of ``class_id``, or its number when the list is too short."""
    return classes[class_id] if 0 <= class_id < len(classes) else str(class_id)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float32."""
    # The ufuncs' own reductions: ndarray.max/.sum are Python wrappers around these very calls.
    z = x if x.dtype.char == "f" else x.astype(np.float32)  # float32 already: no call
    z = np.subtract(z, np.maximum.reduce(z, axis=axis, keepdims=True))  # a new array
    np.exp(z, out=z)
    np.divide(z, np.add.reduce(z, axis=axis, keepdims=True), out=z)
    return z


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in float32, written with tanh so large inputs do not overflow."""
    z = x.astype(np.float32, copy=True)
    z *= 0.5
    np.tanh(z, out=z)
    z += 1.0
    z *= 0.5
    return z


def select_output(
    outputs: Sequence[np.ndarray], which: int | str, names: Sequence[str] | None = None
) -> np.ndarray:
    """The output ``which`` names: an index, or a name looked up in ``names``.

    Raises PipelineError when it does not exist.
    """
    if isinstance(which, str):
        if names is None or which not in names:
            raise PipelineError(f"model has no output named {which!r} (has {list(names or [])})")
        which = list(names).index(which)
    if not -len(outputs) <= which < len(outputs):
        raise PipelineError(f"model has no output {which} (it has {len(outputs)})")
    return outputs[which]


# ---- classification -------------------------------------------------------------------------


def classify(
    outputs: Sequence[np.ndarray],
    spec: ClassifyPost,
    classes: Sequence[str],
    names: Sequence[str] | None = None,
) -> list[Item]:
    """Scores per batch row -> one item per row: best class, top-k and the full score vector.

    The top-k is best first; equal scores are ordered by class id (the lower first). Beyond
    :data:`_SORT_MAX` classes the full vector is left in numpy and made a list when an item's
    ``scores`` is first read (the same values).

    Raises PipelineError when the selected output does not exist.
    """
    raw = select_output(outputs, spec.output, names)
    if type(raw) is not np.ndarray or raw.ndim != 2:  # [B, C] as it is: no call
        raw = np.asarray(raw)
        raw = raw.reshape(1, -1) if raw.ndim <= 1 else raw.reshape(raw.shape[0], -1)
    logits = raw
    n_classes = logits.shape[1]
    k = min(spec.top_k, n_classes)
    if n_classes > _SORT_MAX:
        if spec.type == "softmax" and k < n_classes:
            return _softmax_many(logits, k, classes)
        # A copy for identity scores: the lazy vectors must not see the caller's array change.
        probs = (
            _scores(logits, spec.type) if spec.type != "identity" else np.array(logits, np.float32)
        )
        return [
            _lazy_item(ids, row, row.tolist, classes)
            for ids, row in zip(_top_k(probs, k), probs, strict=True)
        ]
    probs = _scores(logits, spec.type)
    rows = probs.tolist()
    orders = [sorted(range(n_classes), key=row.__getitem__, reverse=True)[:k] for row in rows]
    items: list[Item] = []
    for row, ids in zip(rows, orders, strict=True):
        best = ids[0]
        items.append(
            Item(
                class_id=best,
                label=label_of(best, classes),
                score=row[best],
                scores=row,
                top_k=[(label_of(i, classes), row[i]) for i in ids],
            )
        )
    return items


def _scores(logits: np.ndarray, kind: str) -> np.ndarray:
    if kind == "softmax":
        return softmax(logits, axis=1)
    if kind == "sigmoid":
        return sigmoid(logits)
    return logits.astype(np.float32, copy=False)


def _lazy_item(
    ids: list[int], row: np.ndarray, scores: Callable[[], list[float]], classes: Sequence[str]
) -> Item:
    """The item of one row of many classes, its top-k ``ids`` known; the vector left lazy."""
    top = [(label_of(i, classes), float(row[i])) for i in ids]
    best = ids[0]
    return Item.with_lazy_scores(best, top[0][0], top[0][1], top, scores)


def _divided(exps: np.ndarray, total: np.ndarray) -> list[float]:
    """A softmax row from its exponentials and their sum, as :func:`softmax` divides them."""
    return np.divide(exps, total).tolist()


def _softmax_many(logits: np.ndarray, k: int, classes: Sequence[str]) -> list[Item]:
    """:func:`classify`'s softmax items for many classes and ``k`` below their number, the
    same items without dividing every class by the sum.

    Per row, :func:`softmax`'s own steps up to the sum (shift by the maximum, exponentials,
    one ``np.add.reduce``: the same float32 values) and the ``k + 1`` largest exponentials,
    picked by ``argmax`` (ties: the lower class id). Their probabilities are divided in Python
    and rounded to float32: one correctly rounded division of two float32 values, which is
    what numpy's float32 division gives. Division by the same positive sum keeps the order
    (ties may appear, never swaps), so no class left out can score more than the last pick;
    the picks sorted by probability then class id give the top-k unless the last pick ties the
    k-th, when a class left out may tie too. That row, and a row whose sum is not finite (NaN
    or infinite logits), take the full path: every probability, :func:`_top_k`.

    Right after the engine call numpy's code is out of the CPU caches and each numpy call
    costs tens of microseconds: this path makes about eight of them plus three small ones per
    pick (warm after the first), never divides every class, and never turns the 1,000
    probabilities into Python floats unless an item's ``scores`` is read (MobileNet's head,
    top-5, measured right after the engine call on the bench machine: ~150-170 against
    ~200-220 us).
    """
    z = logits if logits.dtype.char == "f" else logits.astype(np.float32)
    if len(z) == 1:
        # The maximum from argmax: the same value (NaN when the row has one, as the reduction
        # gives), and argmax's code is the one the picks below run anyway. A Python float
        # subtracted from a float32 array is taken as float32 (exact here: it is one).
        z = np.subtract(z, z.item(int(z.argmax())))
    else:
        z = np.subtract(z, np.maximum.reduce(z, axis=1, keepdims=True))
    np.exp(z, out=z)
    sums = np.add.reduce(z, axis=1, keepdims=True)
    items = []
    for r, total in enumerate(sums.ravel().tolist()):
        exps = z[r]
        picks = _picks(exps, k + 1, total) if math.isfinite(total) else None
        if picks is None:
            probs = np.divide(exps, sums[r])
            items.append(_lazy_item(_top_k(probs[None], k)[0], probs, probs.tolist, classes))
            continue
        top = [(label_of(i, classes), p) for p, i in picks[:k]]
        best = picks[0][1]
        scores = partial(_divided, exps, sums[r])
        items.append(Item.with_lazy_scores(best, top[0][0], top[0][1], top, scores))
    return items


def _picks(exps: np.ndarray, n: int, total: float) -> list[tuple[float, int]] | None:
    """The ``n`` largest exponentials of a row as (probability, class id), best first and
    ties by class id; None when the last one ties the one before it (see
    :func:`_softmax_many`)."""
    e = exps.copy()
    found = []
    for _ in range(n):
        i = int(e.argmax())
        found.append((f32(e.item(i) / total), i))
        e[i] = -1.0  # below every exponential (they are >= 0)
    last = found.pop()
    found.sort(key=_by_score_then_id)
    if last[0] >= found[-1][0]:
        return None
    return found


def _by_score_then_id(pick: tuple[float, int]) -> tuple[float, int]:
    return -pick[0], pick[1]


_SORT_MAX = 64
"""Up to this many classes the top-k is a plain sort of each row's Python list (a few
microseconds); beyond, the scores stay in numpy, the top-k is picked there
(:func:`_softmax_many`, :func:`_top_k`) and the full vector is made a list on first read."""


_PICK_MAX = 8
"""Up to this many picks per row, many classes take one ``argmax`` per pick; beyond, a
partition first."""


def _top_k(probs: np.ndarray, k: int) -> list[list[int]]:
    """Per row, the ``k`` best class ids, best first, ties by the lower id: the first ``k`` of a
    stable descending sort, without sorting every class.

    A few picks are ``argmax`` calls (the first of equal maxima is the lowest id), each pick
    then masked with -inf: right after an engine call has pushed numpy's code out of the CPU
    caches, the same call k times costs a fraction of a partition and a sort (MobileNet's
    1,000 classes, top-5: ~30 against ~150 us). A row whose picks reach -inf or NaN, and more
    picks, go through a partition: the k-th best score, then every class scoring at least
    that much (in id order), sorted stably."""
    out = []
    if k <= _PICK_MAX:
        for row in probs:
            p = row.copy()
            ids = []
            for _ in range(k):
                i = int(p.argmax())
                if not p[i] > -np.inf:  # -inf or NaN: a mask could be picked again
                    break
                ids.append(i)
                p[i] = -np.inf
            else:
                out.append(ids)
                continue
            out.append(_sorted_top(row, k))
        return out
    kth = np.partition(probs, probs.shape[1] - k, axis=1)[:, -k]
    for row, low in zip(probs, kth.tolist(), strict=True):
        ids_ = (row >= low).nonzero()[0]
        if len(ids_) < k:  # NaN scores compare false
            out.append(_sorted_top(row, k))
            continue
        out.append(ids_[np.argsort(-row[ids_], kind="stable")[:k]].tolist())
    return out


def _sorted_top(row: np.ndarray, k: int) -> list[int]:
    return np.argsort(-row, kind="stable")[:k].tolist()


# ---- NMS ------------------------------------------------------------------------------------


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou: float,
    class_ids: np.ndarray | None = None,
    max_keep: int | None = None,
) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first.

    ``boxes`` is ``N×4`` x1,y1,x2,y2. A box is suppressed when its IoU with an already kept box
    is above ``iou``. With ``class_ids`` boxes only suppress boxes of the same class (done by
    shifting each class to its own disjoint region, so it stays one vectorised pass). Stops
    after ``max_keep`` boxes.
    """
    n = len(boxes)
    limit = n if max_keep is None else max_keep
    if n == 0 or limit <= 0:
        return np.empty(0, dtype=np.intp)
    b = np.asarray(boxes, dtype=np.float32).reshape(n, 4)
    if class_ids is not None:
        span = float(b.max() - b.min()) + 1.0
        b = b + (np.asarray(class_ids, dtype=np.float32).reshape(n, 1) * span)
    if n == 1:
        return np.zeros(1, dtype=np.intp)
    # np.maximum(v, 0) rather than np.clip(v, 0, None): same values, a fraction of the call cost.
    sides = np.maximum(b[:, 2:] - b[:, :2], 0)
    areas = sides[:, 0] * sides[:, 1]
    order = np.argsort(-np.asarray(scores, dtype=np.float32).reshape(n), kind="stable")
    if n <= _NMS_MATRIX_MAX:
        return _nms_matrix(b, areas, order, iou, limit)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    keep: list[int] = []
    while order.size and len(keep) < limit:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        overlap = inter / np.maximum(union, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.intp)


_NMS_MATRIX_MAX = 64
"""Up to this many boxes NMS computes every pairwise IoU in one vectorised pass (N×N floats)
and runs the greedy loop in plain Python; a detector usually keeps a handful of boxes, and a
numpy round per kept box costs more than the whole matrix."""


def _nms_matrix(
    b: np.ndarray, areas: np.ndarray, order: np.ndarray, iou: float, limit: int
) -> np.ndarray:
    """Greedy NMS over a precomputed IoU matrix; element for element the same float32
    arithmetic as the row-at-a-time loop, so the same boxes are kept."""
    top_left = np.maximum(b[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(b[:, None, 2:], b[None, :, 2:])
    sides = np.maximum(bottom_right - top_left, 0)
    inter = sides[..., 0] * sides[..., 1]
    union = areas[:, None] + areas[None, :] - inter
    survives = (inter / np.maximum(union, 1e-9) <= iou).tolist()  # survives[i][j]: i spares j
    removed = [False] * len(survives)
    keep: list[int] = []
    for i in order.tolist():
        if removed[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        for j, ok in enumerate(survives[i]):
            if not ok:
                removed[j] = True
    return np.asarray(keep, dtype=np.intp)


# ---- detection ------------------------------------------------------------------------------


def _cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    # Both columns at once: the same per-element arithmetic as four column assignments.
    centre, half = b[:, :2], b[:, 2:4] / 2
    return np.concatenate((centre - half, centre + half), axis=1).astype(np.float32, copy=False)


def _single(output: np.ndarray, what: str, width: int) -> np.ndarray:
    """Drop the batch axis of a batch-of-one output and check its last axis."""
    a = output if type(output) is np.ndarray else np.asarray(output)
    if a.ndim == 3:
        if a.shape[0] != 1:
            raise PipelineError(f"{what}: expected a batch of one, got shape {a.shape}")
        a = a[0]
    if a.ndim != 2 or (width > 0 and a.shape[1] != width):
        raise PipelineError(f"{what}: unexpected output shape {np.shape(output)}")
    return a


def _passing(scores: np.ndarray, spec: BoxPost) -> np.ndarray:
    """Indices of the candidates scoring at least the threshold. Decoders convert only these
    boxes: a detector head has hundreds of candidates and keeps a handful."""
    return (scores >= spec.score_threshold).nonzero()[0]  # np.flatnonzero for 1-D, 2 calls less


def _few(n: int, letterbox: Letterbox) -> bool:
    """Whether ``n`` candidates take the plain-Python tail (:mod:`runtime.pipeline._few_boxes`)."""
    return n <= FEW_BOXES and letterbox.scale_x != 0 and letterbox.scale_y != 0


def _finish_few(
    boxes: list[list[float]],
    scores: list[float],
    class_ids: list[int],
    spec: BoxPost,
    classes: Sequence[str],
    letterbox: Letterbox,
    image_size: tuple[int, int],
    keypoints: list[list[list[float]]] | None = None,
    suppress: bool = True,
) -> list[Item]:
    lb = letterbox
    return finish_few(
        boxes,
        scores,
        class_ids,
        (lb.scale_x, lb.scale_y, lb.pad_x, lb.pad_y),
        image_size,
        spec.classes if spec.classes is not None else classes,
        spec.nms_iou,
        spec.class_agnostic,
        spec.max_detections,
        keypoints,
        suppress,
    )


def _finish(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    spec: BoxPost,
    classes: Sequence[str],
    letterbox: Letterbox,
    image_size: tuple[int, int],
    keypoints: np.ndarray | None = None,
    suppress: bool = True,
) -> list[Item]:
    """Shared tail for the boxes that passed the score threshold (see :func:`_passing`): map
    to source pixels, clamp, NMS (unless ``suppress`` is False: the model did it), cap, build
    items. ``keypoints`` (``M×K×2`` x, y in input pixels, one row per box) are mapped to source
    pixels too (not clamped) and carried on the items. A few float32 boxes take the
    plain-Python tail, which gives the same items."""
    if (
        _few(len(boxes), letterbox)
        and boxes.dtype == np.float32
        and scores.dtype == np.float32
        and (keypoints is None or keypoints.dtype == np.float32)
    ):
        return _finish_few(
            boxes.tolist(),
            scores.tolist(),
            class_ids.tolist(),
            spec,
            classes,
            letterbox,
            image_size,
            None if keypoints is None else keypoints.tolist(),
            suppress,
        )
    w, h = image_size
    # Letterbox.to_source then a clip to (w, h, w, h), in place and fused: the same float32
    # arithmetic per element ((v - pad) / scale, then max 0, min side) in 4 ufunc calls
    # instead of ~10 (np.clip alone costs ~15 us of Python wrapper).
    lb = letterbox
    src = np.subtract(boxes, np.array([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y], np.float32))
    src /= np.array([lb.scale_x, lb.scale_y, lb.scale_x, lb.scale_y], np.float32)
    np.maximum(src, 0, out=src)
    np.minimum(src, np.array([w, h, w, h], dtype=np.float32), out=src)
    has_area = (src[:, 2] > src[:, 0]) & (src[:, 3] > src[:, 1])
    if not has_area.all():
        src, scores, class_ids = src[has_area], scores[has_area], class_ids[has_area]
        if keypoints is not None:
            keypoints = keypoints[has_area]
    if suppress:
        idx = nms(
            src,
            scores,
            spec.nms_iou,
            class_ids=None if spec.class_agnostic else class_ids,
            max_keep=spec.max_detections,
        )
    else:
        idx = np.argsort(-scores, kind="stable")[: spec.max_detections]
    names = spec.classes if spec.classes is not None else classes
    items = [
        Item(
            class_id=c,
            label=label_of(c, names),
            score=s,
            box=(b[0], b[1], b[2], b[3]),
        )
        for b, s, c in zip(
            src[idx].tolist(), scores[idx].tolist(), class_ids[idx].tolist(), strict=True
        )
    ]
    if keypoints is not None and keypoints.shape[1]:
        pad = np.array([lb.pad_x, lb.pad_y], dtype=np.float32)
        kp = (keypoints[idx] - pad) / np.array([lb.scale_x, lb.scale_y], dtype=np.float32)
        for item, points in zip(items, kp.tolist(), strict=True):
            item.keypoints = [(x, y) for x, y in points]
    return items


def decode_yolo_v8(
    outputs: Sequence[np.ndarray],
    spec: YoloPost,
    classes: Sequence[str],
    letterbox: Letterbox,
    image_size: tuple[int, int],
) -> list[Item]:
    """Decode one ``[1, 4+C, N]`` output (cx,cy,w,h in input pixels, sigmoid class scores).

    Raises PipelineError when the output does not have that layout.
    """
    pred = _single(outputs[0], "yolo_v8", 0)
    if pred.shape[0] < 5:
        raise PipelineError(f"yolo_v8: expected [1, 4+C, N], got shape {np.shape(outputs[0])}")
    if pred.shape[0] == 5:  # one class: its row is the score, no argmax to take
        scores = pred[4] if pred.dtype.char == "f" else pred[4].astype(np.float32)
        keep = _passing(scores, spec)
        n = keep.size
        if not n:
            return []
        if pred.dtype == np.float32 and _few(n, letterbox):
            cx, cy, w, h, kept_scores = pred[:, keep].tolist()  # one call for all five rows
            return _finish_few(
                xyxy_from_cxcywh(cx, cy, w, h),
                kept_scores,
                [0] * n,
                spec,
                classes,
                letterbox,
                image_size,
            )
        kept_ids = np.zeros(n, dtype=np.intp)
    else:
        # The best score per candidate is a max; the argmax (a slow strided reduction over
        # [C, N]) is only needed for the few candidates that pass the threshold.
        cls_scores = pred[4:]
        scores = cls_scores.max(axis=0).astype(np.float32)
        keep = _passing(scores, spec)
        if not keep.size:
            return []
        kept_ids = cls_scores[:, keep].argmax(axis=0)
    if pred.dtype == np.float32 and _few(keep.size, letterbox):
        cx, cy, w, h = pred[:4, keep].tolist()
        return _finish_few(
            xyxy_from_cxcywh(cx, cy, w, h),
            scores[keep].tolist(),
            kept_ids.tolist(),
            spec,
            classes,
            letterbox,
            image_size,
        )
    boxes = _cxcywh_to_xyxy(pred[:4, keep].T)
    return _finish(boxes, scores[keep], kept_ids, spec, classes, letterbox, image_size)


def decode_yolo_v5(
    outputs: Sequence[np.ndarray],
    spec: YoloPost,
    classes: Sequence[str],
    letterbox: Letterbox,
    image_size: tuple[int, int],
) -> list[Item]:
    """Decode one ``[1, N, 5+C]`` output; score = objectness × best class score.

    Raises PipelineError when the output does not have that layout.
    """
    pred = _single(outputs[0], "yolo_v5", 0)
    if pred.shape[1] < 6:
        raise PipelineError(f"yolo_v5: expected [1, N, 5+C], got shape {np.shape(outputs[0])}")
    cls_scores = pred[:, 5:]
    class_ids = cls_scores.argmax(axis=1)
    best = cls_scores[np.arange(cls_scores.shape[0]), class_ids]
    scores = (pred[:, 4] * best).astype(np.float32)
    keep = _passing(scores, spec)
    if not keep.size:
        return []
    boxes = _cxcywh_to_xyxy(pred[keep, :4])
    return _finish(boxes, scores[keep], class_ids[keep], spec, classes, letterbox, image_size)
