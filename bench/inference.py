"""What the device runtime costs over the raw inference engines, measured in one run.

The story of one ``python -m bench`` run
(the models and graphs: :mod:`bench.inference_models`; (b): :mod:`bench.inference_pair`):

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
     (:class:`bench.inference_pair.Recorded`): the pipeline's own Python per frame alone,
     timed between the others' engine calls as in a real frame.

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

Timing: :mod:`bench.timing` (call by call in blocks for (a) and (b), interleaved for (c)).
Ratios are printed, never asserted. The figures go to ``<out>/inference.json``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.inference_models import TARGET_SINGLE, export_models, mobilenet_spec
from bench.inference_pair import two_stage
from bench.timing import BlockStats, alternating, interleaved, say

__all__ = ["run_all"]


# ---- (a) single model ---------------------------------------------------------------------


def _single_model(onnx: Path, blocks: int, rounds: int) -> list[dict[str, Any]]:
    from runtime.backends import BackendOptions
    from runtime.backends.onnxruntime import load as load_ort
    from runtime.pipeline.pipeline import Pipeline
    from runtime.pipeline.preprocess import preprocess

    spec = mobilenet_spec()
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
        say(
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
            say(
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
            say(f"(d) {engine}: the device process failed: {out.stderr.strip()[-300:]}")
            continue
        maxrss_kib, hwm_kib = map(int, out.stdout.strip().splitlines()[-1].split())
        label = "runtime imports only" if engine == "none" else f"bundle on {engine}"
        rows.append(
            {"engine": engine, "peak_rss_mib": hwm_kib / 1024.0, "ru_maxrss_mib": maxrss_kib / 1024}
        )
        say(
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
        made = export_models(work, quick)
        if made["tflite_skip"]:
            say(f"LiteRT column skipped: {made['tflite_skip']}")
        results["single_model"] = _single_model(made["mobilenet"]["onnx"], blocks, rounds)
        results["two_stage"] = two_stage(made, blocks, rounds)
        results["engines"] = _engines(made["mobilenet"], reps, inner)
        bundle = work / "bundle"
        build_bundle(made["source"], bundle, "bench-digits", 1)
        engines = ["onnxruntime", "openvino"] + ([] if made["tflite_skip"] else ["litert"])
        results["peak_rss"] = _peak_rss(bundle, engines)
    results["seconds"] = time.perf_counter() - t0
    _print_table(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inference.json").write_text(json.dumps(results, indent=1) + "\n")
    say(f"wrote {out / 'inference.json'} ({results['seconds']:.0f} s)")
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
    say("\n".join(lines))
