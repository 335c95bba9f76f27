"""What the device runtime costs over the raw inference engines, measured in one run.

The story of one ``python -m bench`` run:

1. **Models.** A MobileNetV2-size network (:class:`bench.models.MobileNetV2Like`, 224×224,
   random seeded weights) is exported by the trainer's own exporters to ONNX, OpenVINO IR and
   (when ``litert-torch`` is installed) TFLite; so are a digit detector that always finds three
   boxes and the digit classifier, for the two-stage pipeline.
2. **(a) Single model.** For 1 and 2 threads: the raw ``InferenceSession.run`` against the
   pipeline on the same session (so the same file and thread count, and no second thread pool
   spinning on the two cores) — ``Pipeline.run_tensor`` on the already pre-processed tensor
   (backend + softmax/top-k decoding), and the whole ``Pipeline.run`` on a 640×480 BGR frame
   (resize, colour, normalise, layout, model, decode).
3. **(b) Two stages.** Detector → classifier with three detections per frame, against the sum
   of the two raw ``session.run`` calls a hand-written loop makes on the same, already
   pre-processed tensors (the detector on the frame tensor, the classifier on the batch of
   three crops), on the pipeline's own sessions — engine time only. Two cases:

   - **the acceptance figure**, on realistic sizes: a YOLOv8n-class detector
     (:class:`bench.models.YoloV8nLike`, 3.2 M parameters, 320×320, 2100 candidates × 80
     classes decoded by the pipeline) on a 640×480 frame letterboxed as Ultralytics does, and
     the MobileNetV2-size classifier at 224×224 taking the three crops as one batch. The
     pipeline's own work (letterbox, normalise, decode, NMS, three crops resized into one
     batch, softmax/top-5 over 1000 classes, result objects) is then ~1–2 % of the frame;
   - **informational**, the tiny demo models (a digit detector that always finds three boxes
     and the digit classifier, ≈1 ms of engine time on a 192×192 frame). There a fixed
     ~0.2–0.3 ms of Python/numpy/OpenCV per frame reads as a large ratio, so the absolute
     overhead (ms per frame) is printed too, and a second baseline — the raw calls plus the
     same pre-processing by hand (:func:`~runtime.pipeline.preprocess.preprocess`, one crop at
     a time, as a loop would; crop regions computed outside the timed call, detector output
     not decoded) — isolates the pipeline's own orchestration. A fourth contender runs the
     same pipeline on backends that answer with the outputs the engines once gave
     (``_Recorded``): the pipeline's own Python per frame alone, timed between the others'
     engine calls as in a real frame.

4. **(c) Engines.** The MobileNet file on each engine (ORT, OpenVINO, LiteRT) through its
   leanloop backend and through the engine's own API on the backend's engine object
   (``session.run``, ``InferRequest.infer``, ``set_tensor``/``invoke``/``get_tensor``), batch 1:
   p50, p90 and back-to-back throughput.
5. **(d) Memory.** Peak RSS of a fresh device process that loads the digit bundle on each
   engine and runs one frame, next to a process that only imports the runtime. It is read
   from ``VmHWM`` in ``/proc/self/status``: ``ru_maxrss`` is printed too, but Linux carries the
   parent's high-water mark across fork+exec, so from a benchmark process that holds torch it
   reports the parent's size, not the device's.

Raw baselines always call the very ``InferenceSession`` the backend built, so they share its
file, thread count and session options (including spinning disabled, see
:data:`runtime.backends.onnxruntime.SESSION_CONFIG`), and no second thread pool competes for
the cores.

Timing. (a) and (b) run their contenders **call by call in blocks**
(:func:`alternating`): within a block every contender is called once per round, the order is
rotated from block to block, and a block ends after a fixed number of rounds. Each block
gives one ratio (median of its pipeline calls / median of its raw calls) and one difference
(ms); the figures printed are the **median over the blocks**, with their spread (10th–90th
percentile of the blocks). A neighbour that slows the machine for a while moves whole blocks,
and the median of many blocks shrugs that off far better than one ratio of two pooled
medians (printed as well, as "pooled"). Beside the wall times, the process CPU time of each
call is taken too and printed as the same block figures: it leaves out the time the process
waited for a core, so on a busy machine it shows the work added (with 2 threads it adds up
both threads). (c) runs its contenders interleaved a few calls at a
time (:func:`interleaved`), order rotated per repetition, medians over all calls. Ratios are
printed, never asserted. The figures go to ``<out>/inference.json``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BlockStats", "Timing", "alternating", "interleaved", "run_all"]


@dataclass
class Timing:
    """Per-call wall times of one contender, in milliseconds."""

    samples: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples, 90))

    @property
    def per_s(self) -> float:
        """Calls per second when run back to back (from the mean)."""
        return 1000.0 * len(self.samples) / sum(self.samples)

    def summary(self) -> dict[str, float]:
        return {"p50_ms": self.p50, "p90_ms": self.p90, "per_s": self.per_s, "n": len(self.samples)}


def interleaved(
    contenders: dict[str, Callable[[], object]], reps: int, inner: int, warmup: int = 3
) -> dict[str, Timing]:
    """Time each contender ``reps * inner`` times, interleaved, order rotated per repetition."""
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    out = {n: Timing() for n in names}
    clock = time.perf_counter
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn = contenders[name]
            samples = out[name].samples
            for _ in range(inner):
                t0 = clock()
                fn()
                samples.append((clock() - t0) * 1000.0)
    return out


def alternating(
    contenders: dict[str, Callable[[], object]],
    blocks: int,
    rounds: int,
    warmup: int = 3,
    cpu: dict[str, list[list[float]]] | None = None,
) -> dict[str, list[list[float]]]:
    """Per contender, per block, the wall times (ms) of its ``rounds`` calls in that block.

    In a block each round calls every contender once, in an order rotated per block, so
    neighbouring calls of different contenders share whatever the machine is doing then.
    With ``cpu``, the process CPU time (ms) of each call is filled in there, in the same shape:
    time the process was not running (another process had the core) does not count in it."""
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    out: dict[str, list[list[float]]] = {n: [] for n in names}
    if cpu is not None:
        cpu.update({n: [] for n in names})
    clock, cpu_clock = time.perf_counter, time.process_time
    for b in range(blocks):
        k = b % len(names)
        order: list[tuple[str, Callable[[], object], list[float], list[float]]] = [
            (n, contenders[n], [], []) for n in names[k:] + names[:k]
        ]
        for _ in range(rounds):
            for _, fn, samples, cpu_samples in order:
                c0 = cpu_clock()
                t0 = clock()
                fn()
                t1 = clock()
                cpu_samples.append((cpu_clock() - c0) * 1000.0)
                samples.append((t1 - t0) * 1000.0)
        for name, _, samples, cpu_samples in order:
            out[name].append(samples)
            if cpu is not None:
                cpu[name].append(cpu_samples)
    return out


@dataclass
class BlockStats:
    """One contender against an anchor, block by block (see :func:`alternating`)."""

    ratios: list[float]  # per block: median(contender) / median(anchor)
    diffs_ms: list[float]  # per block: median(contender) - median(anchor)
    pooled_ratio: float  # median of all contender calls / median of all anchor calls
    anchor_p50_ms: float
    p50_ms: float

    @classmethod
    def of(cls, t: dict[str, list[list[float]]], name: str, anchor: str) -> BlockStats:
        meds = [statistics.median(b) for b in t[name]]
        base = [statistics.median(b) for b in t[anchor]]
        pooled = [x for b in t[name] for x in b]
        pooled_base = [x for b in t[anchor] for x in b]
        return cls(
            ratios=[m / a for m, a in zip(meds, base, strict=True)],
            diffs_ms=[m - a for m, a in zip(meds, base, strict=True)],
            pooled_ratio=statistics.median(pooled) / statistics.median(pooled_base),
            anchor_p50_ms=statistics.median(pooled_base),
            p50_ms=statistics.median(pooled),
        )

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def diff_ms(self) -> float:
        return statistics.median(self.diffs_ms)

    @staticmethod
    def spread(values: list[float]) -> tuple[float, float]:
        """10th and 90th percentile."""
        lo, hi = np.percentile(values, [10, 90])
        return float(lo), float(hi)

    def summary(self, prefix: str) -> dict[str, Any]:
        r_lo, r_hi = self.spread(self.ratios)
        d_lo, d_hi = self.spread(self.diffs_ms)
        return {
            f"{prefix}ratio": self.ratio,
            f"{prefix}ratio_p10": r_lo,
            f"{prefix}ratio_p90": r_hi,
            f"{prefix}overhead_ms": self.diff_ms,
            f"{prefix}overhead_p10_ms": d_lo,
            f"{prefix}overhead_p90_ms": d_hi,
            f"{prefix}pooled_ratio": self.pooled_ratio,
            f"{prefix}blocks": len(self.ratios),
        }


def _say(text: str) -> None:
    print(text, flush=True)


# ---- models -------------------------------------------------------------------------------


def _export(work: Path, quick: bool) -> dict[str, Any]:
    """Export the benchmark networks; returns paths and what could not be exported."""
    from bench.models import FixedBoxesDetector, MobileNetV2Like, YoloV8nLike
    from trainer.export import CLASSIFIER_IO, DETECTOR_IO, export_onnx
    from trainer.export_formats import export_openvino, export_tflite, tflite_unavailable_reason
    from trainer.models import DigitClassifier
    from trainer.source import write_bundle_source
    from trainer.stages import pipeline_spec  # noqa: F401  (same graph as the device bundle)
    from trainer.train import TrainedModels

    t0 = time.perf_counter()
    tflite_reason = tflite_unavailable_reason()
    net = MobileNetV2Like().eval()
    files = {"onnx": work / "mobilenet.onnx", "openvino": work / "mobilenet.xml"}
    # Random weights give large logits; a looser check still catches a broken export.
    export_onnx(net, files["onnx"], "images", "logits", (3, 224, 224), tolerance=1e-2)
    export_openvino(net, files["onnx"], files["openvino"], (3, 224, 224), tolerance=1e-2)
    if tflite_reason is None:
        files["tflite"] = work / "mobilenet.tflite"
        export_tflite(net, files["tflite"], (3, 224, 224), tolerance=1e-2)
    yolo = YoloV8nLike(YOLO_BOXES, size=YOLO_SIZE).eval()
    files["yolo"] = work / "yolov8n.onnx"
    # The output holds pixel coordinates up to 320 plus 1e-6 x the network: 1e-2 is loose
    # enough for any engine rounding and still catches a broken export.
    export_onnx(yolo, files["yolo"], "images", "output0", (3, YOLO_SIZE, YOLO_SIZE), 1e-2)
    boxes = [(20.0, 48.0, 18.0, 18.0), (48.0, 48.0, 18.0, 18.0), (76.0, 48.0, 18.0, 18.0)]
    det = FixedBoxesDetector(boxes).eval()
    cls = DigitClassifier().eval()
    two = {"detector": work / "detector.onnx", "classifier": work / "classifier.onnx"}
    export_onnx(det, two["detector"], *DETECTOR_IO)
    export_onnx(cls, two["classifier"], *CLASSIFIER_IO)
    formats = ("openvino", "tflite") if tflite_reason is None else ("openvino",)
    golden = [np.zeros((96, 96, 3), np.uint8)]
    source = write_bundle_source(work / "source", TrainedModels(det, cls), golden, {}, formats)
    _say(f"models exported in {time.perf_counter() - t0:.0f} s")
    return {"mobilenet": files, "two_stage": two, "source": source, "tflite_skip": tflite_reason}


YOLO_SIZE = 320
YOLO_BOXES = [(80.0, 160.0, 60.0, 90.0, 0), (160.0, 160.0, 60.0, 90.0, 2),
              (240.0, 160.0, 60.0, 90.0, 5)]  # fmt: skip
"""(cx, cy, w, h, class) in detector-input pixels: on the 640×480 frame letterboxed to 320×320
(scale 0.5, 40 px of padding top and bottom) these are three 120×180 objects side by side."""
TARGET_SINGLE = 1.05
TARGET_FAN_OUT = 1.10


# ---- (a) single model ---------------------------------------------------------------------


def _mobilenet_spec() -> Any:
    from runtime.pipeline.graph import ClassifyPost, PipelineSpec, PreSpec, StageSpec

    pre = PreSpec(
        resize=(224, 224),
        color="rgb",
        scale=1 / 255,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
    )
    stage = StageSpec(name="net", model="net", pre=pre, post=ClassifyPost(type="softmax", top_k=5))
    return PipelineSpec(stages=[stage])


def _single_model(onnx: Path, blocks: int, rounds: int) -> list[dict[str, Any]]:
    from runtime.backends import BackendOptions
    from runtime.backends.onnxruntime import load as load_ort
    from runtime.pipeline.pipeline import Pipeline
    from runtime.pipeline.preprocess import preprocess

    spec = _mobilenet_spec()
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    tensor, _ = preprocess(frame, spec.stages[0].pre)
    rows = []
    for threads in (1, 2):
        be = load_ort(onnx, BackendOptions(threads=threads))
        raw = be.session  # the very InferenceSession the pipeline calls: same file, threads
        in_name, out_names = raw.get_inputs()[0].name, [raw.get_outputs()[0].name]
        pipe = Pipeline(spec, {"net": be}, classes=[f"c{i}" for i in range(1000)])
        run_raw = partial(raw.run, out_names, {in_name: tensor})
        # The target pair alone: a third contender between them (the whole run with its
        # 640x480 pre-processing) moves caches and clocks for the next call.
        cpu: dict[str, list[list[float]]] = {}
        t = alternating(
            {"raw": run_raw, "run_tensor": partial(pipe.run_tensor, tensor)},
            blocks,
            rounds,
            cpu=cpu,
        )
        st = BlockStats.of(t, "run_tensor", "raw")
        st_cpu = BlockStats.of(cpu, "run_tensor", "raw")
        whole = BlockStats.of(
            alternating({"raw": run_raw, "run": partial(pipe.run, frame)}, blocks // 2, rounds),
            "run",
            "raw",
        )
        be.close()
        row = {
            "threads": threads,
            "raw_p50_ms": st.anchor_p50_ms,
            "run_tensor_p50_ms": st.p50_ms,
            **st.summary("run_tensor_"),
            **st_cpu.summary("cpu_run_tensor_"),
            "run_p50_ms": whole.p50_ms,
            "run_ratio": whole.ratio,
            "calls": blocks * rounds,
        }
        rows.append(row)
        verdict = "met" if row["run_tensor_ratio"] <= TARGET_SINGLE else "MISSED"
        _say(
            f"(a) MobileNet 224 b1, {threads} thread(s): raw {row['raw_p50_ms']:.2f} ms | "
            f"run_tensor {row['run_tensor_p50_ms']:.2f} ms; median of {blocks} blocks "
            f"{row['run_tensor_ratio']:.3f}x (target <= {TARGET_SINGLE:.2f}x: {verdict}; "
            f"blocks p10-p90 {row['run_tensor_ratio_p10']:.3f}-{row['run_tensor_ratio_p90']:.3f}x"
            f", {row['run_tensor_overhead_ms']:+.3f} ms; pooled "
            f"{row['run_tensor_pooled_ratio']:.3f}x; process CPU time "
            f"{row['cpu_run_tensor_ratio']:.3f}x, {row['cpu_run_tensor_overhead_ms']:+.3f} ms) | "
            "run (640x480 frame incl. pre) "
            f"{row['run_p50_ms']:.2f} ms = {row['run_ratio']:.3f}x"
        )
    return rows


# ---- (b) detector -> classifier -----------------------------------------------------------


def _realistic_spec() -> Any:
    """YOLOv8n at 320 (letterboxed, as Ultralytics does) -> MobileNet at 224 for each box."""
    from runtime.pipeline.graph import (
        ClassifyPost,
        CropSpec,
        PipelineSpec,
        PreSpec,
        StageSpec,
        YoloPost,
    )

    det_pre = PreSpec(resize=(YOLO_SIZE, YOLO_SIZE), mode="letterbox", color="rgb", scale=1 / 255)
    det_post = YoloPost(
        type="yolo_v8",
        score_threshold=0.25,
        nms_iou=0.45,
        max_detections=100,
        classes=[f"object{i}" for i in range(80)],
    )
    cls_pre = _mobilenet_spec().stages[0].pre
    return PipelineSpec(
        stages=[
            StageSpec(name="detector", model="detector", pre=det_pre, post=det_post),
            StageSpec(
                name="classifier",
                model="classifier",
                for_each="detector",
                crop=CropSpec(margin=0.1),
                pre=cls_pre,
                post=ClassifyPost(type="softmax", top_k=5),
            ),
        ]
    )


@dataclass
class _FanOutCase:
    """One detector -> classifier benchmark: its files, graph, frame and labels."""

    label: str
    files: dict[str, Path]  # "detector" / "classifier" -> ONNX file
    spec: Any
    classes: list[str]
    frame: np.ndarray
    with_pre: bool  # also time "raw calls + the same pre-processing by hand"


class _Recorded:
    """A backend that answers every call with the outputs its engine once gave: a pipeline on
    these runs its own Python (pre-processing, decoding, crops, results) and no engine."""

    name = "recorded"

    def __init__(self, backend: Any, outputs: list[np.ndarray]) -> None:
        self.inputs, self.outputs, self._outputs = backend.inputs, backend.outputs, outputs

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._outputs

    def close(self) -> None:
        pass


def _items(pred: Any) -> list[tuple[Any, ...]]:
    return [
        (i.class_id, i.label, i.score, i.box, i.parent)
        for r in pred.stages.values()
        for i in r.items
    ]


def _two_calls(det: Any, cls: Any, det_feed: dict[str, Any], cls_feed: dict[str, Any]) -> None:
    """The sum of raw calls: both sessions, on tensors that are ready."""
    det.run(None, det_feed)
    cls.run(None, cls_feed)


def _fan_out(case: _FanOutCase, blocks: int, rounds: int) -> list[dict[str, Any]]:
    from runtime.backends import Backend, BackendOptions
    from runtime.backends.onnxruntime import load as load_ort
    from runtime.pipeline.pipeline import Pipeline
    from runtime.pipeline.postprocess import softmax
    from runtime.pipeline.preprocess import crop_region, preprocess

    det_st, cls_st = case.spec.stages
    frame = case.frame
    size = (frame.shape[1], frame.shape[0])
    rows = []
    for threads in (1, 2):
        ort_models = {
            k: load_ort(p, BackendOptions(threads=threads)) for k, p in case.files.items()
        }
        models: dict[str, Backend] = dict(ort_models)
        raw_det, raw_cls = ort_models["detector"].session, ort_models["classifier"].session
        det_in, cls_in = raw_det.get_inputs()[0].name, raw_cls.get_inputs()[0].name
        pipe = Pipeline(case.spec, models, classes=case.classes)
        pred = pipe.run(frame)
        assert pred.error is None, pred.error
        dets = pred.stages["detector"].items
        if len(dets) != 3 or len(pred.stages["classifier"].items) != 3:
            raise RuntimeError(f"{case.label}: the detector found {len(dets)} boxes, not 3")
        det_x, _ = preprocess(frame, det_st.pre)
        regions = [crop_region(size, d.box, cls_st.crop) for d in dets if d.box is not None]
        crops = [frame[r[1] : r[3], r[0] : r[2]] for r in regions if r is not None]
        cls_x = np.concatenate([preprocess(c, cls_st.pre)[0] for c in crops])
        # The raw calls must see what the pipeline feeds its engine: same tensors, same scores.
        raw_probs = softmax(raw_cls.run(None, {cls_in: cls_x})[0], axis=1)
        got = np.array([i.scores for i in pred.stages["classifier"].items], dtype=np.float32)
        if not np.array_equal(raw_probs, got):
            raise RuntimeError(f"{case.label}: the raw classifier call differs from the pipeline")

        def raw_with_pre(
            d: Any = raw_det,
            c: Any = raw_cls,
            di: str = det_in,
            ci: str = cls_in,
            rs: Any = regions,
        ) -> None:
            # What a hand-written loop must do too: pre-process the frame and the three crops.
            d.run(None, {di: preprocess(frame, det_st.pre)[0]})
            xs = [preprocess(frame[y1:y2, x1:x2], cls_st.pre)[0] for x1, y1, x2, y2 in rs]
            c.run(None, {ci: np.concatenate(xs)})

        contenders: dict[str, Callable[[], object]] = {
            "raw_sum": partial(_two_calls, raw_det, raw_cls, {det_in: det_x}, {cls_in: cls_x}),
            "run": partial(pipe.run, frame),
        }
        if case.with_pre:
            contenders["raw_with_pre"] = raw_with_pre
            recorded: dict[str, Backend] = {
                "detector": _Recorded(models["detector"], models["detector"].run({det_in: det_x})),
                "classifier": _Recorded(
                    models["classifier"], models["classifier"].run({cls_in: cls_x})
                ),
            }
            own = Pipeline(case.spec, recorded, classes=case.classes)
            if _items(own.run(frame)) != _items(pred):
                raise RuntimeError(f"{case.label}: the recorded outputs give other items")
            contenders["own_python"] = partial(own.run, frame)
        cpu: dict[str, list[list[float]]] = {}
        t = alternating(contenders, blocks, rounds, cpu=cpu)
        pipe.close()
        st = BlockStats.of(t, "run", "raw_sum")
        st_cpu = BlockStats.of(cpu, "run", "raw_sum")
        row: dict[str, Any] = {
            "case": case.label,
            "threads": threads,
            "detections": 3,
            "raw_sum_p50_ms": st.anchor_p50_ms,
            "run_p50_ms": st.p50_ms,
            **st.summary(""),
            **st_cpu.summary("cpu_"),
            "target": TARGET_FAN_OUT,
            "calls": blocks * rounds,
        }
        if case.with_pre:
            pre = BlockStats.of(t, "run", "raw_with_pre")
            row["raw_with_pre_p50_ms"] = pre.anchor_p50_ms
            row.update(pre.summary("vs_raw_with_pre_"))
            for prefix, times in (("", t), ("cpu_", cpu)):
                meds = [statistics.median(b) for b in times["own_python"]]
                lo, hi = BlockStats.spread(meds)
                row[f"{prefix}own_python_ms"] = statistics.median(meds)
                row[f"{prefix}own_python_p10_ms"], row[f"{prefix}own_python_p90_ms"] = lo, hi
        rows.append(row)
        verdict = "met" if row["ratio"] <= TARGET_FAN_OUT else "MISSED"
        line = (
            f"(b) {case.label}, {threads} thread(s): sum of raw session.run "
            f"{row['raw_sum_p50_ms']:.3f} ms | Pipeline.run {row['run_p50_ms']:.3f} ms; median "
            f"of {blocks} blocks {row['ratio']:.3f}x (target <= {TARGET_FAN_OUT:.2f}x: "
            f"{verdict}), {row['overhead_ms']:+.3f} ms per frame (blocks p10-p90 "
            f"{row['overhead_p10_ms']:+.3f}..{row['overhead_p90_ms']:+.3f} ms); pooled "
            f"{row['pooled_ratio']:.3f}x; process CPU time {row['cpu_ratio']:.3f}x, "
            f"{row['cpu_overhead_ms']:+.3f} ms"
        )
        if case.with_pre:
            line += (
                f"; vs raw calls + the same pre-processing by hand "
                f"{row['raw_with_pre_p50_ms']:.3f} ms: {row['vs_raw_with_pre_ratio']:.3f}x "
                f"({row['vs_raw_with_pre_overhead_ms']:+.3f} ms); the pipeline's own Python "
                f"alone (engines replaced by their recorded outputs) "
                f"{row['own_python_ms']:.3f} ms (blocks p10-p90 {row['own_python_p10_ms']:.3f}.."
                f"{row['own_python_p90_ms']:.3f}; CPU time {row['cpu_own_python_ms']:.3f} ms)"
            )
        _say(line)
    return rows


def _two_stage(made: dict[str, Any], blocks: int, rounds: int) -> list[dict[str, Any]]:
    """(b) on realistic sizes (the acceptance figure), then on the tiny demo models."""
    from trainer.stages import CLASSES, pipeline_spec

    realistic = _FanOutCase(
        label="YOLOv8n 320 -> MobileNetV2 224 x3",
        files={"detector": made["mobilenet"]["yolo"], "classifier": made["mobilenet"]["onnx"]},
        spec=_realistic_spec(),
        classes=[f"c{i}" for i in range(1000)],
        frame=np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8),
        with_pre=False,
    )
    tiny = _FanOutCase(
        label="demo digits 96 -> 28 x3 (informational)",
        files=made["two_stage"],
        spec=pipeline_spec(),
        classes=CLASSES,
        frame=np.random.default_rng(1).integers(0, 256, (192, 192, 3), dtype=np.uint8),
        with_pre=True,
    )
    # The realistic pair costs ~60-100 ms a frame: blocks of a few rounds; the tiny pair costs
    # ~1 ms and its overhead is about tens of microseconds, so it gets many more calls.
    return _fan_out(realistic, blocks // 2, 2) + _fan_out(tiny, 2 * blocks, 5 * rounds)


# ---- (c) engines --------------------------------------------------------------------------


def _raw_engine_call(engine: str, backend: Any, x: np.ndarray) -> Callable[[], object]:
    """The engine's own API on the backend's own engine object (same file, same threads), so
    the comparison is the wrapper alone and two thread pools never fight over the cores."""
    if engine == "onnxruntime":
        sess = backend.session
        name = sess.get_inputs()[0].name
        return lambda: sess.run(None, {name: x})
    if engine == "openvino":
        req = backend.request
        return lambda: req.infer({0: x})
    interp = backend.interpreter
    i_idx = interp.get_input_details()[0]["index"]
    o_idx = interp.get_output_details()[0]["index"]

    def call() -> object:
        interp.set_tensor(i_idx, x)
        interp.invoke()
        return interp.get_tensor(o_idx)

    return call


def _engines(files: dict[str, Path], reps: int, inner: int) -> list[dict[str, Any]]:
    from runtime.backends import BackendOptions, load_backend

    engines = {"onnxruntime": "onnx", "openvino": "openvino", "litert": "tflite"}
    x = np.random.default_rng(2).random((1, 3, 224, 224), dtype=np.float32)
    rows = []
    for threads in (1, 2):
        contenders: dict[str, Callable[[], object]] = {}
        for engine, fmt in engines.items():
            if fmt not in files:
                continue
            be = load_backend(engine, files[fmt], BackendOptions(threads=threads))
            feed = {be.inputs[0].name: x}
            contenders[f"{engine}.backend"] = partial(be.run, feed)
            contenders[f"{engine}.raw"] = _raw_engine_call(engine, be, x)
        t = interleaved(contenders, reps, inner)
        for engine in engines:
            if f"{engine}.raw" not in t:
                continue
            raw, ours = t[f"{engine}.raw"], t[f"{engine}.backend"]
            row = {
                "engine": engine,
                "threads": threads,
                "raw_p50_ms": raw.p50,
                "backend_p50_ms": ours.p50,
                "backend_p90_ms": ours.p90,
                "backend_per_s": ours.per_s,
                "ratio": ours.p50 / raw.p50,
                "n": len(ours.samples),
            }
            rows.append(row)
            _say(
                f"(c) {engine:<11} {threads} thread(s): raw {raw.p50:7.2f} ms | backend "
                f"{ours.p50:7.2f} ms (p90 {ours.p90:.2f}) = {row['ratio']:.3f}x | "
                f"{ours.per_s:6.1f} frames/s"
            )
    return rows


# ---- (d) memory ---------------------------------------------------------------------------

_RSS_SCRIPT = """
import resource, sys
from pathlib import Path
import numpy as np
from runtime.bundle.loader import load_bundle
from runtime.pipeline.pipeline import Pipeline  # noqa: F401
if sys.argv[2] != "none":
    from runtime.backends import BackendOptions
    b = load_bundle(Path(sys.argv[1]), sys.argv[2], BackendOptions(threads=2))
    pred = b.pipeline.run(np.zeros((192, 192, 3), np.uint8))
    assert pred.error is None, pred.error
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, hwm[0].split()[1] if hwm else -1)
"""


def _peak_rss(bundle: Path, engines: list[str]) -> list[dict[str, Any]]:
    rows = []
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    for engine in ["none", *engines]:
        out = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, str(bundle), engine],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=300,
        )
        if out.returncode != 0:
            _say(f"(d) {engine}: the device process failed: {out.stderr.strip()[-300:]}")
            continue
        maxrss_kib, hwm_kib = map(int, out.stdout.strip().splitlines()[-1].split())
        label = "runtime imports only" if engine == "none" else f"bundle on {engine}"
        rows.append(
            {"engine": engine, "peak_rss_mib": hwm_kib / 1024.0, "ru_maxrss_mib": maxrss_kib / 1024}
        )
        _say(
            f"(d) peak RSS, {label:<24} {hwm_kib / 1024.0:7.1f} MiB (VmHWM; ru_maxrss "
            f"{maxrss_kib / 1024.0:.1f} MiB)"
        )
    return rows


# ---- the run ------------------------------------------------------------------------------


def run_all(out: Path, quick: bool = False) -> dict[str, Any]:
    """Run (a)–(d), print the figures and write ``out/inference.json``; returns the figures."""
    from runtime.bundle.build import build_bundle

    t0 = time.perf_counter()
    reps, inner = (4, 3) if quick else (20, 5)  # (c): interleaved repetitions x calls
    blocks, rounds = (8, 4) if quick else (40, 10)  # (a), (b): blocks x rounds, call by call
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "method": (
            "(a), (b): call by call in blocks, order rotated per block; medians over blocks of "
            "per-block ratios/differences, p10-p90 spread; (c): interleaved repetitions, order "
            "rotated; medians of all calls"
        ),
        "blocks": blocks,
        "rounds": rounds,
        "reps": reps,
        "inner": inner,
    }
    with tempfile.TemporaryDirectory(prefix="leanloop-bench-") as tmp:
        work = Path(tmp)
        made = _export(work, quick)
        if made["tflite_skip"]:
            _say(f"LiteRT column skipped: {made['tflite_skip']}")
        results["single_model"] = _single_model(made["mobilenet"]["onnx"], blocks, rounds)
        results["two_stage"] = _two_stage(made, blocks, rounds)
        results["engines"] = _engines(made["mobilenet"], reps, inner)
        bundle = work / "bundle"
        build_bundle(made["source"], bundle, "bench-digits", 1)
        engines = ["onnxruntime", "openvino"] + ([] if made["tflite_skip"] else ["litert"])
        results["peak_rss"] = _peak_rss(bundle, engines)
    results["seconds"] = time.perf_counter() - t0
    _print_table(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inference.json").write_text(json.dumps(results, indent=1) + "\n")
    _say(f"wrote {out / 'inference.json'} ({results['seconds']:.0f} s)")
    return results


def _print_table(r: dict[str, Any]) -> None:
    lines = [
        "",
        "leanloop inference overhead (ratio = leanloop / raw engine, median of blocks)",
        "",
    ]
    lines.append(f"{'measure':<58}{'thr':>4}{'raw ms':>10}{'ours ms':>10}{'ratio':>8}")
    for row in r["single_model"]:
        lines.append(
            f"{'(a) MobileNet b1: Pipeline.run_tensor vs session.run':<58}{row['threads']:>4}"
            f"{row['raw_p50_ms']:>10.2f}{row['run_tensor_p50_ms']:>10.2f}"
            f"{row['run_tensor_ratio']:>8.3f}  (<= {TARGET_SINGLE:.2f}; blocks p10-p90 "
            f"{row['run_tensor_ratio_p10']:.3f}-{row['run_tensor_ratio_p90']:.3f})"
        )
        lines.append(
            f"{'(a) MobileNet b1: Pipeline.run (640x480 + pre) vs run':<58}{row['threads']:>4}"
            f"{row['raw_p50_ms']:>10.2f}{row['run_p50_ms']:>10.2f}{row['run_ratio']:>8.3f}"
            "  (informational: includes pre-processing)"
        )
    for row in r["two_stage"]:
        label = f"(b) {row['case'].split(' (')[0]}: run vs raw sum"
        lines.append(
            f"{label:<58}{row['threads']:>4}{row['raw_sum_p50_ms']:>10.3f}"
            f"{row['run_p50_ms']:>10.3f}{row['ratio']:>8.3f}  (<= {row['target']:.2f}; "
            f"{row['overhead_ms']:+.3f} ms, blocks p10-p90 {row['overhead_p10_ms']:+.3f}.."
            f"{row['overhead_p90_ms']:+.3f})"
        )
        if "raw_with_pre_p50_ms" in row:
            lines.append(
                f"{'    ... vs raw calls + the same pre-processing by hand':<58}"
                f"{row['threads']:>4}{row['raw_with_pre_p50_ms']:>10.3f}"
                f"{row['run_p50_ms']:>10.3f}{row['vs_raw_with_pre_ratio']:>8.3f}"
                f"  ({row['vs_raw_with_pre_overhead_ms']:+.3f} ms)"
            )
            lines.append(
                f"{'    ... the pipeline alone, engines replaced by recorded outputs':<58}"
                f"{row['threads']:>4}{'':>10}{row['own_python_ms']:>10.3f}"
            )
    for row in r["engines"]:
        label = f"(c) {row['engine']} backend.run ({row['backend_per_s']:.0f} frames/s)"
        lines.append(
            f"{label:<58}{row['threads']:>4}{row['raw_p50_ms']:>10.2f}"
            f"{row['backend_p50_ms']:>10.2f}{row['ratio']:>8.3f}"
        )
    for row in r["peak_rss"]:
        lines.append(f"(d) peak RSS {row['engine']:<12} {row['peak_rss_mib']:8.1f} MiB")
    _say("\n".join(lines))
