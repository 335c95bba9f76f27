"""Replay throughput against the device pipeline's own frames per second per core (#14).

The bundle: a MobileNetV2-size classifier (:class:`bench.models.MobileNetV2Like`, 128×128
input, random seeded weights) behind the device pipeline (whole-frame softmax, top 3). The
history: N random 320×240 JPEG frames in a history folder, as ``leanloop replay`` reads it.

- **anchor** — the device's own loop in this process: :meth:`Pipeline.run_bytes` over the same
  JPEG bytes, one engine thread (one core);
- **replay** — :func:`hub.replay.runner.replay_bundle` with 1 and 2 worker processes (fresh
  result file each time), timed two ways: *total* (process start, model load and result file
  included) and *steady* (from the first chunk's results to the last, the rate a long history
  sees).

Runs are interleaved (anchor, 1 worker, 2 workers, again) for ``rounds`` rounds and the medians
reported, so machine load drifts hit all alike. Goals: steady 1-worker replay ≥ 0.9× the anchor;
2 workers faster than 1 (this machine has 2 cores, shared).
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
    n, rounds = (192, 2) if quick else (768, 3)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        work = Path(tmp)
        bundle = _bundle(work)
        frames = _history(work / "history", n)
        images = [(work / "history" / "images" / f.image_sha256).read_bytes() for f in frames]
        names = ("anchor", "w1_total", "w1_steady", "w2_total", "w2_steady")
        runs: dict[str, list[float]] = {k: [] for k in names}
        for _ in range(rounds):
            runs["anchor"].append(_anchor(bundle, images))
            for w in (1, 2):
                total, steady = _replay(bundle, frames, work / "history" / "images", w)
                runs[f"w{w}_total"].append(total)
                runs[f"w{w}_steady"].append(steady)
    med = {k: statistics.median(v) for k, v in runs.items()}
    spread = {k: (min(v), max(v)) for k, v in runs.items()}
    result = {
        "frames": n,
        "rounds": rounds,
        "fps_median": med,
        "fps_range": spread,
        "replay_vs_anchor_steady_1_worker": med["w1_steady"] / med["anchor"],
        "replay_vs_anchor_total_1_worker": med["w1_total"] / med["anchor"],
        "scaling_2_vs_1_workers_steady": med["w2_steady"] / med["w1_steady"],
        "scaling_2_vs_1_workers_total": med["w2_total"] / med["w1_total"],
    }
    (out / "replay.json").write_text(json.dumps(result, indent=2))
    print(f"replay: {n} frames, {rounds} interleaved rounds (medians, frames/s)")
    for k in runs:
        lo, hi = spread[k]
        print(f"  {k:10s} {med[k]:8.1f}   [{lo:.1f} .. {hi:.1f}]")
    print(f"  replay/anchor, 1 worker: steady {result['replay_vs_anchor_steady_1_worker']:.2f}x"
          f" (goal >= 0.9), total {result['replay_vs_anchor_total_1_worker']:.2f}x")  # fmt: skip
    print(f"  2 workers / 1 worker: steady {result['scaling_2_vs_1_workers_steady']:.2f}x,"
          f" total {result['scaling_2_vs_1_workers_total']:.2f}x")  # fmt: skip
    return result
