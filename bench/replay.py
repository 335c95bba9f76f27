"""Replay throughput against the device pipeline's own frames per second per core (#14).

The bundle: a MobileNetV2-size classifier (:class:`bench.models.MobileNetV2Like`, 128×128
input, random seeded weights) behind the device pipeline (whole-frame softmax, top 3). The
history: N random 320×240 JPEG frames in a history folder, as ``leanloop replay`` reads it.

- **per core** — the replay worker's loop (:func:`hub.replay.runner.run_frames`: read the image
  file, run, reduce to an outcome) against the device's own loop (:meth:`Pipeline.run_bytes` on
  the same JPEG bytes), same process, one engine thread, in short blocks of 32 frames whose
  order is shuffled per pair; the paired ratio's median and quartiles are reported beside an
  A/A control (device loop against itself), which shows the machine's noise;
- **scaling** — :func:`hub.replay.runner.replay_bundle` end to end with 1 and 2 worker
  processes (fresh result file each time), timed *total* (process start, model load, result
  file included) and *steady* (from the first chunk's results to the last, the rate a long
  history sees), interleaved for ``rounds`` rounds, medians.

Goals: replay per core ≥ 0.9× the device loop; 2 workers faster than 1 (this machine has 2
cores, shared with others: expect wide ranges).
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run"]

_SIZE = 128


def _bundle(work: Path) -> Path:
    import cv2
    import yaml

    from bench.models import MobileNetV2Like
    from runtime.bundle.build import build_bundle
    from trainer.export import export_onnx

    src = work / "src"
    (src / "models").mkdir(parents=True)
    (src / "golden").mkdir()
    export_onnx(MobileNetV2Like().eval(), src / "models" / "net.onnx", "images", "logits",
                (3, _SIZE, _SIZE), tolerance=1e-2)  # fmt: skip
    pipeline = {
        "format": "leanloop.pipeline/1",
        "stages": [{
            "name": "net", "model": "net",
            "pre": {"resize": [_SIZE, _SIZE], "color": "rgb", "scale": 1 / 255,
                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "post": {"type": "softmax", "top_k": 3},
        }],
    }  # fmt: skip
    (src / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    classes = [f"c{k}" for k in range(1000)]
    (src / "ontology.yaml").write_text(
        yaml.safe_dump({"id": "bench", "version": 1, "classes": classes})
    )
    cv2.imwrite(str(src / "golden" / "a.png"), np.zeros((240, 320, 3), np.uint8))
    build_bundle(src, work / "bundle", name="bench", version=1)
    return work / "bundle"


def _history(folder: Path, n: int) -> list[Any]:
    import hashlib

    import cv2

    from hub.replay.frames import HistoryFrame, TruthObject
    from hub.replay.history import write_history

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    frames = []
    for k in range(n):
        img = rng.integers(0, 256, (240, 320, 3), np.uint8)
        _, buf = cv2.imencode(".jpg", img)
        data = buf.tobytes()
        sha = hashlib.sha256(data).hexdigest()
        (folder / "images" / sha).write_bytes(data)
        frames.append(HistoryFrame(id=f"{k:06d}", truth=(TruthObject("c0"),), image_sha256=sha))
    write_history(folder, frames)
    return frames


def _anchor(bundle: Path, images: list[bytes]) -> float:
    from runtime.backends.base import BackendOptions
    from runtime.bundle.loader import load_bundle

    loaded = load_bundle(bundle, "onnxruntime", BackendOptions(threads=1))
    try:
        loaded.pipeline.run_bytes(images[0])  # warm
        t0 = time.perf_counter()
        for data in images:
            loaded.pipeline.run_bytes(data)
        return len(images) / (time.perf_counter() - t0)
    finally:
        loaded.close()


def _per_core(bundle: Path, frames: list[Any], images: Path, pairs: int) -> dict[str, Any]:
    import random

    from hub.replay import runner

    loaded = runner.load_for_replay(bundle)
    pipe = loaded.pipeline
    datas = [(images / f.image_sha256).read_bytes() for f in frames]
    jobs = [(str(images), [(f.id, f.image_sha256) for f in frames[k : k + 32]])
            for k in range(0, len(frames) - 31, 32)]  # fmt: skip
    rng = random.Random(0)

    def device(k: int) -> float:
        t0 = time.perf_counter()
        for d in datas[32 * k : 32 * k + 32]:
            pipe.run_bytes(d)
        return time.perf_counter() - t0

    def replay(k: int) -> float:
        t0 = time.perf_counter()
        runner.run_frames(pipe, images, jobs[k][1])
        return time.perf_counter() - t0

    ratios, control = [], []
    for p in range(pairs):
        k = p % len(jobs)
        a, b = (device, replay) if rng.random() < 0.5 else (replay, device)
        ta, tb = a(k), b(k)
        t_dev, t_rep = (ta, tb) if a is device else (tb, ta)
        ratios.append(t_dev / t_rep)  # replay speed / device speed
        c1, c2 = device(k), device(k)
        control.append(c1 / c2)
    device_fps = 32 / statistics.median([device(k % len(jobs)) for k in range(8)])
    loaded.close()
    q = statistics.quantiles
    return {
        "pairs": pairs,
        "ratio_median": statistics.median(ratios),
        "ratio_quartiles": [q(ratios, n=4)[0], q(ratios, n=4)[2]],
        "aa_control_median": statistics.median(control),
        "aa_control_quartiles": [q(control, n=4)[0], q(control, n=4)[2]],
        "device_fps_median": device_fps,
    }


def _replay(bundle: Path, frames: list[Any], images: Path, workers: int) -> tuple[float, float]:
    from hub.replay.runner import replay_bundle

    work = Path(tempfile.mkdtemp(prefix="replay-bench-"))
    marks: list[tuple[float, int]] = []
    try:
        t0 = time.perf_counter()
        replay_bundle(bundle, frames, images, work, workers,
                      progress=lambda n: marks.append((time.perf_counter(), n)))  # fmt: skip
        total = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    done = [(t, n) for t, n in marks if n > 0]
    steady_frames = sum(n for _, n in done[1:])
    steady = steady_frames / (done[-1][0] - done[0][0]) if len(done) > 1 else float("nan")
    return len(frames) / total, steady


def run(out: Path, quick: bool = False) -> dict[str, Any]:
    """Measure, print the table, write ``replay.json``."""
    n, rounds, pairs = (192, 2, 24) if quick else (768, 3, 96)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        work = Path(tmp)
        bundle = _bundle(work)
        frames = _history(work / "history", n)
        images = work / "history" / "images"
        per_core = _per_core(bundle, frames, images, pairs)
        names = ("w1_total", "w1_steady", "w2_total", "w2_steady")
        runs: dict[str, list[float]] = {k: [] for k in names}
        for _ in range(rounds):
            for w in (1, 2):
                total, steady = _replay(bundle, frames, images, w)
                runs[f"w{w}_total"].append(total)
                runs[f"w{w}_steady"].append(steady)
    med = {k: statistics.median(v) for k, v in runs.items()}
    ranges = {k: (min(v), max(v)) for k, v in runs.items()}
    sc: dict[str, Any] = {
        "rounds": rounds,
        "fps_median": med,
        "fps_range": ranges,
        "steady_2_vs_1_workers": med["w2_steady"] / med["w1_steady"],
        "total_2_vs_1_workers": med["w2_total"] / med["w1_total"],
    }
    result = {"frames": n, "per_core": per_core, "scaling": sc}
    (out / "replay.json").write_text(json.dumps(result, indent=2))
    pc = per_core
    print(f"replay per core: {pc['pairs']} shuffled pairs of 32-frame blocks, device loop "
          f"{pc['device_fps_median']:.1f} frames/s")  # fmt: skip
    print(
        f"  replay / device speed  median {pc['ratio_median']:.3f}  "
        f"IQR [{pc['ratio_quartiles'][0]:.3f}, {pc['ratio_quartiles'][1]:.3f}]  (goal >= 0.9)"
    )
    print(
        f"  A/A control            median {pc['aa_control_median']:.3f}  "
        f"IQR [{pc['aa_control_quartiles'][0]:.3f}, {pc['aa_control_quartiles'][1]:.3f}]"
    )
    print(f"replay scaling: {n} frames, {rounds} interleaved rounds (medians, frames/s)")
    for k in runs:
        lo, hi = ranges[k]
        print(f"  {k:10s} {med[k]:8.1f}   [{lo:.1f} .. {hi:.1f}]")
    print(
        f"  2 workers / 1 worker: steady {sc['steady_2_vs_1_workers']:.2f}x, "
        f"total {sc['total_2_vs_1_workers']:.2f}x"
    )
    return result
