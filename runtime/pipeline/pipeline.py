"""The pipeline: run a bundle's stages on one frame and say what is in it.

A :class:`Pipeline` is built once per loaded bundle from its :class:`PipelineSpec`, the loaded
models (manifest key -> :class:`~runtime.backends.base.Backend`) and the ontology's class names.
Everything that can be decided before the first frame is decided in the constructor: each
stage's model, input name, batch behaviour, decoder (with output selectors resolved to indices
and SSD anchors generated) and plug-ins. Mismatches between the graph and the models — a missing
model, an input dtype or shape the ``pre`` spec cannot produce — raise
:class:`~runtime.errors.PipelineError` there, with a one-line reason, so a bad bundle fails its
load and never reaches a frame.

Per frame, :meth:`Pipeline.run` (or :meth:`Pipeline.run_bytes` for encoded images):

1. normalises the frame to ``H×W×3`` uint8 BGR (:func:`~runtime.pipeline.preprocess.as_bgr`);
2. runs the stages in order. A whole-frame stage pre-processes the frame, runs its model once
   and decodes the outputs (one item for a classifier, one per kept box for a detector). A
   ``for_each`` stage cuts one crop per detection of its parent stage
   (:func:`~runtime.pipeline.preprocess.crop_region`; too-small crops are skipped),
   pre-processes them into one batch tensor
   (the stage's :class:`~runtime.pipeline.preprocess.Preprocessor`, compiled from its ``pre``
   spec at construction: each crop resized straight into the batch buffer, colour/scaling/layout
   once for all) and runs them **batched** when the model's first input
   has a dynamic batch axis (in chunks of ``stage.batch`` when it is > 0), in chunks padded to
   the batch size when the model has a fixed batch > 1, else one call per crop. Every item it
   yields has ``parent`` = the index of its detection; items without a box get the parent's
   box, boxes found inside a crop are moved to frame pixels;
3. times every stage (``StageResult.latency_ms``) and the frame (``Prediction.latency_ms``).

A bad frame never raises: an undecodable, empty or wrongly typed frame — or any failure while a
stage runs on it — yields a :class:`~runtime.pipeline.prediction.Prediction` whose ``error`` is a
one-line reason, is counted in :attr:`Pipeline.stats`, and the next frame is processed as usual.
(The device service's update trial reads that error rate to roll back a bad bundle.)

:meth:`Pipeline.run_tensor` runs one stage's model and decoder on an already pre-processed
tensor; it is the inner loop of :meth:`run`, exposed so its overhead over a raw engine call can
be measured on its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from runtime.backends.base import Backend
from runtime.errors import FrameError, PipelineError, first_line
from runtime.pipeline.graph import (
    ClassifyPost,
    PipelineSpec,
    PluginPost,
    PreSpec,
    SsdPost,
    StageSpec,
    TfliteSsdPost,
    YoloPost,
)
from runtime.pipeline.plugins import PluginLoader, PreContext
from runtime.pipeline.postprocess import (
    PostContext,
    classify,
    decode_yolo_v5,
    decode_yolo_v8,
)
from runtime.pipeline.prediction import Item, Prediction, StageResult
from runtime.pipeline.preprocess import (
    MAX_FRAME_PIXELS,
    Letterbox,
    Preprocessor,
    as_bgr,
    crop_region,
    decode_image,
)
from runtime.pipeline.ssd import decode_ssd, decode_tflite_ssd, ssd_anchors

__all__ = ["Decoder", "Pipeline"]

_log = logging.getLogger("leanloop.pipeline")

Decoder = Callable[[list[np.ndarray], Letterbox, tuple[int, int]], list[Item]]
"""A stage's decoder: ``(outputs, letterbox, source (width, height)) -> items``."""

_EWMA = 0.1  # weight of the newest frame in the latency averages
_IDENTITY = Letterbox(1.0, 1.0, 0.0, 0.0)
_WARN_EVERY_S = 10.0  # at most one warning about failed frames in this many seconds


class _Stage:
    """Everything one stage needs per frame, resolved at construction."""

    __slots__ = (
        "chunk",
        "crop",
        "decode",
        "input_name",
        "input_rank",
        "key_calls",
        "key_items",
        "key_latency",
        "kind",
        "model",
        "name",
        "pad_to",
        "parent",
        "plugin_pre",
        "pre",
        "pre_ctx",
        "pre_fn",
        "prep",
        "rowwise",
    )

    def __init__(
        self,
        spec: StageSpec,
        model: Backend,
        parent: int | None,
        decode: Decoder,
        kind: str,
        pre_fn: Callable[..., Any] | None = None,
    ) -> None:
        self.name = spec.name
        self.model = model
        self.parent = parent
        self.decode = decode
        self.kind = kind
        self.pre: PreSpec = spec.pre
        self.crop = spec.crop
        self.plugin_pre = pre_fn is not None
        self.pre_fn = pre_fn
        self.prep = None if self.plugin_pre else Preprocessor(spec.pre)
        self.key_calls = f"stage.{spec.name}.calls"  # Pipeline.stats keys, built once
        self.key_items = f"stage.{spec.name}.items"
        self.key_latency = f"stage.{spec.name}.latency_ms"
        # A classifier decodes a whole batch at once (one item per row); other decoders see one
        # image at a time.
        self.rowwise = not isinstance(spec.post, ClassifyPost)
        first = model.inputs[0]
        self.input_name = first.name
        self.input_rank = len(first.shape)
        self.pre_ctx = PreContext(
            spec.pre, first.name, list(first.shape), spec.pre.resize, dict(spec.pre.plugin_params)
        )
        batch_dim = first.shape[0] if first.shape else 1
        if isinstance(batch_dim, int) and batch_dim >= 1:
            # Fixed batch: one call per crop for 1, else chunks padded to the batch size.
            self.pad_to = batch_dim if batch_dim > 1 else 0
            self.chunk = min(spec.batch, batch_dim) if spec.batch else batch_dim
        else:
            self.pad_to = 0
            self.chunk = spec.batch  # 0: every crop of the frame in one call


class Pipeline:
    """A bundle's stages over its loaded models. ``run`` never raises for a bad frame."""

    def __init__(
        self,
        spec: PipelineSpec,
        models: dict[str, Backend],
        classes: list[str],
        bundle: str = "",
        bundle_version: int = 0,
        ontology_version: int = 0,
        plugins: PluginLoader | None = None,
    ) -> None:
        """Check the graph against the models and pre-compute every stage.

        Plug-ins are imported through ``plugins`` (the bundle's files; see
        :mod:`runtime.pipeline.plugins`); a graph naming one without it is refused.
        Raises PipelineError (one line) when a stage's model is missing, its input cannot be fed
        by the ``pre`` spec, an output selector names no output, or a plug-in cannot be loaded.
        """
        self.spec = spec
        self.plugins = plugins
        self.models = models
        self.classes = list(classes)
        self.bundle = bundle
        self.bundle_version = bundle_version
        self.ontology_version = ontology_version
        index: dict[str, int] = {}
        self._stages: list[_Stage] = []
        for i, stage_spec in enumerate(spec.stages):
            self._stages.append(self._build_stage(stage_spec, index))
            index[stage_spec.name] = i
        self._index = index
        self.stats: dict[str, float] = {"frames": 0, "errors": 0, "latency_ms": 0.0}
        for st in self._stages:
            self.stats[f"stage.{st.name}.latency_ms"] = 0.0
            self.stats[f"stage.{st.name}.calls"] = 0
            self.stats[f"stage.{st.name}.items"] = 0
        self._failures = 0
        self._warn_after = 0.0  # monotonic time before which failed frames are not logged

    # ---- construction ----------------------------------------------------------------------

    def _build_stage(self, st: StageSpec, index: dict[str, int]) -> _Stage:
        where = f"stage {st.name!r}"
        model = self.models.get(st.model)
        if model is None:
            have = ", ".join(sorted(self.models)) or "none"
            raise PipelineError(f"{where}: model {st.model!r} is not loaded (have: {have})")
        if len(model.inputs) != 1:
            raise PipelineError(
                f"{where}: model {st.model!r} has {len(model.inputs)} inputs; "
                "a stage feeds exactly one image input"
            )
        if not model.outputs:
            raise PipelineError(f"{where}: model {st.model!r} has no outputs on {model.name}")
        _check_input(where, st.model, st.pre, model)
        pre_fn = None
        if st.pre.plugin is not None:
            pre_fn = self._plugin(where, st.pre.plugin)  # fail at load, not on the first frame
        decode, kind = self._decoder(where, st, model)
        parent = index[st.for_each] if st.for_each is not None else None
        return _Stage(st, model, parent, decode, kind, pre_fn)

    def _plugin(self, where: str, ref: str) -> Callable[..., Any]:
        if self.plugins is None:
            raise PipelineError(f"{where}: plug-in {ref!r} needs its bundle (none given)")
        return self.plugins.load(ref)

    def _decoder(self, where: str, st: StageSpec, model: Backend) -> tuple[Decoder, str]:
        names = [o.name for o in model.outputs]
        classes = self.classes
        post = st.post
        if isinstance(post, ClassifyPost):
            cpost = post.model_copy(update={"output": _output_index(where, post.output, names)})
            if post.classes is not None:
                classes = list(post.classes)

            def decode_classify(
                outs: list[np.ndarray], lb: Letterbox, size: tuple[int, int]
            ) -> list[Item]:
                return classify(outs, cpost, classes)

            return decode_classify, "classification"
        if isinstance(post, YoloPost):
            yolo = decode_yolo_v8 if post.type == "yolo_v8" else decode_yolo_v5
            ypost = post

            def decode_yolo(
                outs: list[np.ndarray], lb: Letterbox, size: tuple[int, int]
            ) -> list[Item]:
                return yolo(outs, ypost, classes, lb, size)

            return decode_yolo, "detection"
        if isinstance(post, SsdPost):
            spost = post.model_copy(
                update={
                    "boxes_output": _output_index(where, post.boxes_output, names),
                    "scores_output": _output_index(where, post.scores_output, names),
                }
            )
            try:
                anchors = ssd_anchors(post.anchors, st.pre.resize)
            except PipelineError as e:
                raise PipelineError(f"{where}: {e}") from e
            n_boxes = model.outputs[int(spost.boxes_output)].shape
            if len(n_boxes) >= 2 and isinstance(n_boxes[-2], int) and n_boxes[-2] != len(anchors):
                raise PipelineError(
                    f"{where}: the anchor spec makes {len(anchors)} anchors but the model "
                    f"outputs {n_boxes[-2]} boxes"
                )
            input_size = st.pre.resize

            def decode_ssd_stage(
                outs: list[np.ndarray], lb: Letterbox, size: tuple[int, int]
            ) -> list[Item]:
                return decode_ssd(outs, spost, classes, lb, size, input_size, anchors)

            return decode_ssd_stage, "detection"
        if isinstance(post, TfliteSsdPost):
            tpost = post.model_copy(
                update={
                    key: _output_index(where, getattr(post, key), names)
                    for key in ("boxes_output", "classes_output", "scores_output", "count_output")
                }
            )
            tflite_input = st.pre.resize

            def decode_tflite_stage(
                outs: list[np.ndarray], lb: Letterbox, size: tuple[int, int]
            ) -> list[Item]:
                return decode_tflite_ssd(outs, tpost, classes, lb, size, tflite_input)

            return decode_tflite_stage, "detection"
        ppost: PluginPost = post
        fn = self._plugin(where, ppost.function)
        input_size = st.pre.resize

        def decode_plugin(
            outs: list[np.ndarray], lb: Letterbox, size: tuple[int, int]
        ) -> list[Item]:
            ctx = PostContext(ppost, classes, lb, size, ppost.params, names, input_size)
            got = fn(outs, ctx)
            if not isinstance(got, list) or not all(isinstance(i, Item) for i in got):
                raise PipelineError(f"plug-in {ppost.function} did not return a list of Item")
            return got

        return decode_plugin, ppost.kind

    # ---- per frame -------------------------------------------------------------------------

    def run_bytes(
        self, data: bytes, frame_id: str = "", max_pixels: int = MAX_FRAME_PIXELS
    ) -> Prediction:
        """Decode an encoded image (PNG/JPEG/WebP/BMP) and run it. Never raises for a bad frame."""
        return self.run_encoded(data, frame_id, max_pixels)[1]

    def run_encoded(
        self, data: bytes, frame_id: str = "", max_pixels: int = MAX_FRAME_PIXELS
    ) -> tuple[np.ndarray | None, Prediction]:
        """Decode and run one encoded frame: (the decoded BGR frame or None, its prediction).

        A frame declaring more than ``max_pixels`` pixels is refused from its header, before
        it is decoded. Never raises for a bad frame: whatever decoding raises becomes the
        prediction's ``error`` (the frame is None then).
        """
        t0 = time.perf_counter()
        try:
            image = decode_image(data, max_pixels)
        except FrameError as e:
            return None, self._failed(frame_id, first_line(e), t0)
        except Exception as e:  # a decoder bug must not stop the device either
            return None, self._failed(frame_id, f"frame cannot be decoded: {first_line(e)}", t0)
        return image, self._run(image, frame_id, t0)

    def run(self, image: np.ndarray, frame_id: str = "") -> Prediction:
        """Run every stage on one frame (BGR, gray or BGRA uint8). Never raises for a bad frame."""
        return self._run(image, frame_id, time.perf_counter())

    def run_tensor(
        self,
        tensor: np.ndarray,
        stage: int | str = 0,
        letterbox: Letterbox | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> list[Item]:
        """Run one stage's model and decoder on an already pre-processed input tensor.

        Boxes are mapped with ``letterbox`` (default: identity) and clamped to ``image_size``
        (default: the stage's input size). Raises BackendError or PipelineError.
        """
        st = self._stages[stage if isinstance(stage, int) else self._index[stage]]
        outs = st.model.run({st.input_name: tensor})
        return st.decode(outs, letterbox or _IDENTITY, image_size or st.pre.resize)

    def _run(self, image: np.ndarray, frame_id: str, t0: float) -> Prediction:
        stats = self.stats
        stage_name = ""
        try:
            frame = as_bgr(image)
            h, w = frame.shape[:2]
            results: dict[str, StageResult] = {}
            done: list[StageResult] = []
            for st in self._stages:
                stage_name = st.name
                ts = time.perf_counter()
                if st.parent is None:
                    items = self._whole_frame(st, frame, w, h)
                else:
                    items = self._fan_out(st, frame, done[st.parent].items, w, h)
                ms = (time.perf_counter() - ts) * 1000.0
                res = StageResult(st.name, st.kind, items, ms)
                results[st.name] = res
                done.append(res)
                stats[st.key_items] += len(items)
                stats[st.key_latency] += _EWMA * (ms - stats[st.key_latency])
        except FrameError as e:
            return self._failed(frame_id, first_line(e), t0)
        except Exception as e:
            where = f"stage {stage_name}" if stage_name else "frame"
            return self._failed(frame_id, f"{where}: {first_line(e)}", t0, exc=e)
        total = (time.perf_counter() - t0) * 1000.0
        stats["frames"] += 1
        stats["latency_ms"] += _EWMA * (total - stats["latency_ms"])
        return Prediction(
            frame_id=frame_id,
            stages=results,
            bundle=self.bundle,
            bundle_version=self.bundle_version,
            ontology_version=self.ontology_version,
            latency_ms=total,
            width=w,
            height=h,
        )

    def _failed(
        self, frame_id: str, reason: str, t0: float, exc: BaseException | None = None
    ) -> Prediction:
        """The error result of a frame, counted, with a rate-limited warning in the log (the
        first failure, then at most one line per :data:`_WARN_EVERY_S` with the count)."""
        self.stats["frames"] += 1
        self.stats["errors"] += 1
        self._failures += 1
        now = time.monotonic()
        if now >= self._warn_after:
            self._warn_after = now + _WARN_EVERY_S
            _log.warning(
                "pipeline %s v%s: frame %s failed: %s (%d failed frames so far)",
                self.bundle,
                self.bundle_version,
                frame_id or "?",
                reason,
                self._failures,
                exc_info=exc if exc is not None and not isinstance(exc, FrameError) else None,
            )
        return Prediction(
            frame_id=frame_id,
            error=reason,
            bundle=self.bundle,
            bundle_version=self.bundle_version,
            ontology_version=self.ontology_version,
            latency_ms=(time.perf_counter() - t0) * 1000.0,
        )

    def _tensor(self, st: _Stage, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        if st.prep is not None:  # ``image`` is already BGR (the frame, from as_bgr)
            return st.prep.one(image)
        assert st.pre_fn is not None
        got = st.pre_fn(image, st.pre_ctx)
        if isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], Letterbox):
            tensor, lb = got
        else:
            h, w = image.shape[:2]
            tw, th = st.pre.resize
            tensor, lb = got, Letterbox(tw / w, th / h, 0.0, 0.0)  # a stretch, by default
        if not isinstance(tensor, np.ndarray):
            raise PipelineError(f"pre plug-in {st.pre.plugin} did not return an array")
        if tensor.ndim == st.input_rank - 1:
            tensor = tensor[None]
        return tensor, lb

    def _call(self, st: _Stage, batch: np.ndarray) -> list[np.ndarray]:
        """One model call; pads a short batch for fixed-batch models and trims the outputs."""
        n = batch.shape[0]
        self.stats[st.key_calls] += 1
        if st.pad_to <= n:
            return st.model.run({st.input_name: batch})
        padded = np.zeros((st.pad_to, *batch.shape[1:]), dtype=batch.dtype)
        padded[:n] = batch
        outs = st.model.run({st.input_name: padded})
        return [o[:n] for o in outs]

    def _whole_frame(self, st: _Stage, frame: np.ndarray, w: int, h: int) -> list[Item]:
        tensor, lb = self._tensor(st, frame)
        return st.decode(self._call(st, tensor), lb, (w, h))

    def _fan_out(
        self, st: _Stage, frame: np.ndarray, parents: Sequence[Item], w: int, h: int
    ) -> list[Item]:
        owners: list[tuple[int, Item, tuple[int, int, int, int]]] = []
        crops: list[np.ndarray] = []
        size = (w, h)
        for idx, parent in enumerate(parents):
            if parent.box is None:
                continue
            region = crop_region(size, parent.box, st.crop)
            if region is None:
                continue
            x1, y1, x2, y2 = region
            owners.append((idx, parent, region))
            crops.append(frame[y1:y2, x1:x2])
        if not crops:
            return []
        lbs: list[Letterbox]
        if st.prep is None:
            pairs = [self._tensor(st, c) for c in crops]
            tensors = np.concatenate([t for t, _ in pairs], axis=0)
            lbs = [lb for _, lb in pairs]
        else:
            # The crops are views of the BGR frame: one batch, each crop resized straight into
            # it, the rest of the pre-processing in one pass; chunks below are views of it.
            tensors, lbs = st.prep.batch(crops)
        n = len(crops)
        chunk = st.chunk if st.chunk > 0 else n
        items: list[Item] = []
        for start in range(0, n, chunk):
            batch = tensors[start : start + chunk]
            outs = self._call(st, batch)
            if st.rowwise:
                for r in range(len(batch)):
                    idx, parent, (x1, y1, x2, y2) = owners[start + r]
                    row = [o[r : r + 1] for o in outs]
                    found = st.decode(row, lbs[start + r], (x2 - x1, y2 - y1))
                    items.extend(_adopt(found, idx, parent, x1, y1))
            else:
                found = st.decode(outs, _IDENTITY, (w, h))
                for r, item in enumerate(found[: len(batch)]):
                    idx, parent, _ = owners[start + r]
                    item.parent = idx
                    item.box = parent.box
                    items.append(item)
        return items

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def stage_names(self) -> list[str]:
        return [st.name for st in self._stages]

    def close(self) -> None:
        """Close every model (each once)."""
        seen: set[int] = set()
        for m in self.models.values():
            if id(m) not in seen:
                seen.add(id(m))
                m.close()


def _adopt(found: list[Item], idx: int, parent: Item, ox: int, oy: int) -> list[Item]:
    """Tie items found inside a crop to their parent detection, boxes moved to frame pixels."""
    for item in found:
        item.parent = idx
        if item.box is None:
            item.box = parent.box
        else:
            b = item.box
            item.box = (b[0] + ox, b[1] + oy, b[2] + ox, b[3] + oy)
        if item.keypoints is not None:
            item.keypoints = [(x + ox, y + oy) for x, y in item.keypoints]
    return found


def _output_index(where: str, which: int | str, names: list[str]) -> int:
    if isinstance(which, str):
        if which not in names:
            raise PipelineError(f"{where}: the model has no output {which!r} (has {names})")
        return names.index(which)
    if not 0 <= which < len(names):
        raise PipelineError(f"{where}: the model has no output {which} (it has {len(names)})")
    return which


def _check_input(where: str, key: str, pre: PreSpec, model: Backend) -> None:
    """The model's image input must take what ``pre`` produces: dtype, channels, size."""
    spec = model.inputs[0]
    if pre.plugin is not None:
        return  # a plug-in makes its own tensor; the engine checks it on the first frame
    if spec.dtype != pre.dtype:
        raise PipelineError(
            f"{where}: model {key!r} input {spec.name!r} is {spec.dtype}, pre makes {pre.dtype}"
        )
    shape: list[Any] = list(spec.shape)
    if len(shape) != 4:
        raise PipelineError(
            f"{where}: model {key!r} input {spec.name!r} has shape {shape}; an image input is 4-D"
        )
    channels = 1 if pre.color == "gray" else 3
    if pre.layout == "nchw":
        c, hh, ww = shape[1], shape[2], shape[3]
    else:
        hh, ww, c = shape[1], shape[2], shape[3]
    tw, th = pre.resize
    if isinstance(c, int) and c != channels:
        raise PipelineError(
            f"{where}: model {key!r} input {spec.name!r} {shape} has {c} channels; pre makes "
            f"{channels} ({pre.color}, {pre.layout})"
        )
    if (isinstance(hh, int) and hh != th) or (isinstance(ww, int) and ww != tw):
        raise PipelineError(
            f"{where}: model {key!r} input {spec.name!r} {shape} does not match pre resize "
            f"{tw}x{th} ({pre.layout})"
        )
