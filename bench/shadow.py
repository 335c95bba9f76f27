"""What a shadow candidate costs production: latency and throughput with shadow on vs off.

The story of ``python -m bench --only shadow``:

1. **Bundle.** The trainer's digit detector (the benchmark's fixed-three-boxes variant) and
   digit classifier are exported and built into a real bundle; the candidate is the *same
   bundle* (so the same size and the same compute), run by a real
   :class:`~runtime.shadow.runner.ShadowRunner`: its own niced worker process, a bounded
   queue, every answer compared with production's (:func:`~runtime.shadow.compare.compare`)
   on the feeder thread, as the device does.
2. **Frame loop.** The device's hot path is replayed in-process: encoded frame bytes →
   ``decode_image`` → ``Pipeline.run`` → (shadow on) ``ShadowRunner.offer``. Production
   latency is the wall time of decode + run per frame.
3. **At 15 fps** (a paced source) the p50/p99 latency with shadow on is set against shadow off
   (target: p50 ≤ 1.10× off). **At the maximum rate** (frames back to back) production
   throughput on vs off (target ≥ 0.9× off: the candidate sheds instead of slowing
   production), with the shed fraction reported.

"Off" keeps the worker process alive but idle (it blocks on its pipe), so both arms pay the
same memory. Arms run **interleaved**, several rounds, order rotated per round, so drift on
the shared cores hits both alike; figures are medians/percentiles over all frames of an arm.
Ratios are printed, never asserted; the figures go to ``<out>/shadow.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["run_shadow"]


def _say(text: str) -> None:
    print(text, flush=True)


def _bundle(work: Path) -> Path:
    from bench.models import FixedBoxesDetector
    from runtime.bundle.build import build_bundle
    from trainer.models import DigitClassifier
    from trainer.source import write_bundle_source
    from trainer.train import TrainedModels

    boxes = [(20.0, 48.0, 18.0, 18.0), (48.0, 48.0, 18.0, 18.0), (76.0, 48.0, 18.0, 18.0)]
    det = FixedBoxesDetector(boxes).eval()
    cls = DigitClassifier().eval()
    golden = [np.zeros((96, 96, 3), np.uint8)]
    src = write_bundle_source(work / "source", TrainedModels(det, cls), golden, {}, ())
    out = work / "bundle"
    build_bundle(src, out, name="digits", version=1)
    return out


def _pct(v: list[float], q: float) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, int(q * len(s)))]


class _Compared:
    def __init__(self) -> None:
        from runtime.shadow.compare import ShadowStats

        self.stats = ShadowStats()
        self.lock = threading.Lock()

    def __call__(self, frame_id: str, data: bytes, prod: Any, cand: Any) -> None:
        from runtime.shadow.compare import compare

        cmp = compare(prod, cand)
        with self.lock:
            self.stats.add(cmp)


def _arm(
    pipeline: Any, runner: Any, frames: list[bytes], shadow: bool, fps: float | None, n: int
) -> dict[str, Any]:
    """Serve ``n`` frames (paced at ``fps`` or back to back); latencies and wall time."""
    from runtime.pipeline.preprocess import decode_image

    lat: list[float] = []
    offered0, shed0 = runner.offered, runner.shed
    t_start = time.perf_counter()
    for i in range(n):
        if fps:
            due = t_start + i / fps
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        data = frames[i % len(frames)]
        t0 = time.perf_counter()
        pred = pipeline.run(decode_image(data), f"f{i}")
        lat.append((time.perf_counter() - t0) * 1000.0)
        if shadow:
            runner.offer(f"f{i}", data, pred)
    wall = time.perf_counter() - t_start
    return {
        "lat": lat,
        "wall": wall,
        "offered": runner.offered - offered0,
        "shed": runner.shed - shed0,
    }


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [v for p in parts for v in p["lat"]]
    wall = sum(p["wall"] for p in parts)
    offered = sum(p["offered"] for p in parts)
    shed = sum(p["shed"] for p in parts)
    return {
        "frames": len(lat),
        "p50_ms": round(statistics.median(lat), 3),
        "p99_ms": round(_pct(lat, 0.99), 3),
        "fps": round(len(lat) / wall, 1) if wall else 0.0,
        "offered": offered,
        "shed": shed,
        "shed_fraction": round(shed / offered, 4) if offered else 0.0,
    }


def run_shadow(out: Path, quick: bool = False) -> dict[str, Any]:
    """Measure, print and write ``out/shadow.json``; returns the figures."""
    from runtime.backends.base import BackendOptions
    from runtime.bundle.loader import load_bundle
    from runtime.config import ShadowSettings
    from runtime.shadow.runner import ShadowRunner

    t_all = time.perf_counter()
    load_before = os.getloadavg()[0]
    rounds = 2 if quick else 4
    n_paced = 45 if quick else 150  # 3 s / 10 s at 15 fps per arm and round
    n_max = 150 if quick else 600
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as tmp:
        bundle = _bundle(Path(tmp))
        loaded = load_bundle(bundle, "onnxruntime", BackendOptions(threads=1))
        rng = np.random.default_rng(0)
        frames = []
        for _ in range(16):
            img = rng.integers(0, 256, (192, 192, 3), dtype=np.uint8)
            frames.append(cv2.imencode(".png", img)[1].tobytes())
        got = _Compared()
        cfg = ShadowSettings()  # what a device runs with by default
        runner = ShadowRunner(
            bundle,
            got,
            threads=cfg.threads,
            nice=cfg.nice,
            queue_size=cfg.queue_size,
            max_duty=cfg.max_duty,
        )
        runner.start()
        deadline = time.monotonic() + 120
        while runner.state == "starting" and time.monotonic() < deadline:
            time.sleep(0.05)
        if runner.state != "running":
            raise RuntimeError(f"shadow worker did not start: {runner.reason}")
        _arm(loaded.pipeline, runner, frames, True, None, 30)  # warm both sides
        arms: dict[str, list[dict[str, Any]]] = {
            k: [] for k in ("paced_off", "paced_on", "max_off", "max_on")
        }
        try:
            for r in range(rounds):
                order = [False, True] if r % 2 == 0 else [True, False]
                for on in order:
                    key = f"paced_{'on' if on else 'off'}"
                    arms[key].append(_arm(loaded.pipeline, runner, frames, on, 15.0, n_paced))
                    time.sleep(0.5)  # let the candidate drain between arms
                for on in order:
                    key = f"max_{'on' if on else 'off'}"
                    arms[key].append(_arm(loaded.pipeline, runner, frames, on, None, n_max))
                    time.sleep(0.5)
        finally:
            runner.stop()
            loaded.close()
    res = {k: _merge(v) for k, v in arms.items()}
    po, pn, mo, mn = res["paced_off"], res["paced_on"], res["max_off"], res["max_on"]
    results = {
        "arms": res,
        "paced_p50_ratio": round(pn["p50_ms"] / po["p50_ms"], 3),
        "paced_p99_ratio": round(pn["p99_ms"] / po["p99_ms"], 3),
        "max_throughput_ratio": round(mn["fps"] / mo["fps"], 3),
        "max_shed_fraction": mn["shed_fraction"],
        "candidate": {
            "compared": got.stats.compared,
            "agreement": got.stats.agreement,
            "errors": runner.errors,
            "state": runner.state,
        },
        "quick": quick,
        "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    _say(
        "shadow mode: production with a same-size candidate in shadow, on vs off "
        f"(load average {results['loadavg_1min'][0]} -> {results['loadavg_1min'][1]} on "
        f"{results['cpus']} CPUs: figures from a busy machine are noise)"
    )
    _say(f"{'arm':<12}{'frames':>8}{'p50 ms':>9}{'p99 ms':>9}{'fps':>8}{'shed':>8}")
    for k, v in res.items():
        _say(
            f"{k:<12}{v['frames']:>8}{v['p50_ms']:>9.2f}{v['p99_ms']:>9.2f}{v['fps']:>8.1f}"
            f"{v['shed_fraction']:>8.1%}"
        )
    _say(
        f"15 fps: p50 on/off {results['paced_p50_ratio']}x (target <= 1.10), p99 "
        f"{results['paced_p99_ratio']}x; max rate: throughput on/off "
        f"{results['max_throughput_ratio']}x (target >= 0.9), shed "
        f"{results['max_shed_fraction']:.1%}; candidate agreement "
        f"{got.stats.agreement} over {got.stats.compared} frames"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "shadow.json").write_text(json.dumps(results, indent=1) + "\n")
    _say(f"wrote {out / 'shadow.json'} ({results['seconds']:.0f} s)")
    return results
