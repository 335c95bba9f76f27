"""(b) of :mod:`bench.inference`: a detector -> classifier pipeline against the raw calls.

Detector -> classifier with three detections per frame, against the sum of the two raw
``session.run`` calls a hand-written loop makes on the same, already pre-processed tensors,
on the pipeline's own sessions; on realistic sizes (the acceptance figure) and on the tiny
demo models, where the pipeline's own Python per frame is isolated too (see the story in
:mod:`bench.inference`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.inference_models import TARGET_FAN_OUT, realistic_spec
from bench.timing import BlockStats, alternating, say

__all__ = ["FanOutCase", "Recorded", "fan_out", "two_stage"]


@dataclass
class FanOutCase:
    """One detector -> classifier benchmark: its files, graph, frame and labels."""

    label: str
    files: dict[str, Path]  # "detector" / "classifier" -> ONNX file
    spec: Any
    classes: list[str]
    frame: np.ndarray
    with_pre: bool  # also time "raw calls + the same pre-processing by hand"


class Recorded:
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


def fan_out(case: FanOutCase, blocks: int, rounds: int) -> list[dict[str, Any]]:
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
                "detector": Recorded(models["detector"], models["detector"].run({det_in: det_x})),
                "classifier": Recorded(
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
        say(line)
    return rows


def two_stage(made: dict[str, Any], blocks: int, rounds: int) -> list[dict[str, Any]]:
    """(b) on realistic sizes (the acceptance figure), then on the tiny demo models."""
    from trainer.stages import CLASSES, pipeline_spec

    realistic = FanOutCase(
        label="YOLOv8n 320 -> MobileNetV2 224 x3",
        files={"detector": made["mobilenet"]["yolo"], "classifier": made["mobilenet"]["onnx"]},
        spec=realistic_spec(),
        classes=[f"c{i}" for i in range(1000)],
        frame=np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8),
        with_pre=False,
    )
    tiny = FanOutCase(
        label="demo digits 96 -> 28 x3 (informational)",
        files=made["two_stage"],
        spec=pipeline_spec(),
        classes=CLASSES,
        frame=np.random.default_rng(1).integers(0, 256, (192, 192, 3), dtype=np.uint8),
        with_pre=True,
    )
    # The realistic pair costs ~60-100 ms a frame: blocks of a few rounds; the tiny pair costs
    # ~1 ms and its overhead is about tens of microseconds, so it gets many more calls.
    return fan_out(realistic, blocks // 2, 2) + fan_out(tiny, 2 * blocks, 5 * rounds)
