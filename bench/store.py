"""What the learn path's sample store costs, measured in one run (``python -m bench --only store``).

1. **Inserts with eviction active.** ~20 KB JPEGs (synthetic 320×240 scenes with sensor noise,
   encoded by OpenCV at quality 90) go into a :class:`~runtime.store.lmdb_store.SampleStore`
   already filled to its cap, so every insert evicts. The anchor is a raw LMDB ``put`` of the
   same JPEG bytes under a time-ordered key, in its own durable write transaction (the same
   ``sync`` LMDB default the store uses), into a file pre-grown so that it reuses free pages as
   the store does. Both are measured one transaction per sample and
   eight per transaction (what :meth:`~runtime.store.lmdb_store.SampleStore.put_many` does
   when the writer has a backlog), in blocks whose order is rotated each round, so drift hits
   all contenders alike. Targets: >= 2,000 samples/s and >= 0.5x the raw put.
2. **Top-1,000.** On stores of 10,000 and 100,000 samples (small 1 KB images, one page each:
   the ranking cost does not depend on the image size, and 100,000 × 20 KB would be 2 GB of
   scratch disk): ``ranked(1000)`` — ids and priorities from the priority index, the ranking
   query itself — and ``top(1000)``, which also decodes every record (JSON meta, with and
   without copying the images). Target: <= 50 ms at 100,000. The 10,000 figure shows how it
   scales (reaching the end of the index is O(log n); the walk is O(K)).
3. **Frame path, store on vs off.** The real two-stage digits pipeline (detector → classifier
   on three crops, exported to ONNX by the trainer, ONNX Runtime, 1 thread) on 640×480 frames,
   back to back (the harshest case: no gaps for the writer). *Off*: ``pipeline.run``. *On*:
   ``pipeline.run`` then ``StoreWriter.offer`` to a writer that scores (margin, novelty — so the
   perceptual hash too — and random), keeps a 2 % random slice, encodes JPEG and stores with
   eviction, in its own thread on the same two cores. The machine's speed drifts by several
   per cent over seconds, so the contenders run in short blocks (30 frames, ~0.1 s) whose order
   is shuffled every round, over ~100 rounds, and p50 is taken over all frames of a mode. A
   third contender, *off again* (A/A), is the same as off: its ratio shows the method's noise
   floor in the same run. After each block the writer's queue is drained (untimed). The writer
   runs on between blocks as it does on a device, so an open write slot may end (and write)
   during any block: the rows count the writes that landed inside on-blocks and elsewhere.

   *Target rows — the device's defaults* (``store.max_rate`` 1 frame/s: every frame is scored,
   the best of each second is encoded and written): *filling* (a store far from its cap) and
   *steady* (the cap reached, as on a device that has run for a while, so the written frame
   must also beat the store's floor). Target: p50 on / p50 off <= 1.05.

   *Informational rows — every frame written* (``max_rate`` 0, what a replay or a test does):
   back to back, each 640×480 frame costs the writer ≈1 ms of JPEG plus a transaction, about a
   third of the frame path's own time, on the second of two cores; and the same at a camera's
   30 fps, where the writer works in the gaps.

Ratios are printed against the anchors of the same run, never asserted; figures go to
``<out>/store.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import lmdb
import numpy as np

from runtime.store.lmdb_store import SampleStore
from runtime.store.record import SampleRecord, new_sample_id

__all__ = ["run_all"]


def _say(text: str) -> None:
    print(text, flush=True)


def _scene(rng: np.random.Generator, w: int, h: int, noise: float) -> np.ndarray:
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    for _ in range(4):  # a few hard edges, like objects
        x, y = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 60)), y + 40), colour, -1)
    noisy = img + np.asarray(rng.normal(0.0, noise, size=img.shape), dtype=np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _jpegs(n: int, target: int = 20_000) -> list[bytes]:
    """``n`` distinct JPEGs averaging ``target`` bytes (noise level searched once)."""
    rng = np.random.default_rng(0)
    q = [cv2.IMWRITE_JPEG_QUALITY, 90]
    lo, hi = 0.0, 60.0
    for _ in range(12):
        mid = (lo + hi) / 2
        sizes = [len(cv2.imencode(".jpg", _scene(rng, 320, 240, mid), q)[1]) for _ in range(6)]
        lo, hi = (mid, hi) if statistics.mean(sizes) < target else (lo, mid)
    noise = (lo + hi) / 2
    return [cv2.imencode(".jpg", _scene(rng, 320, 240, noise), q)[1].tobytes() for _ in range(n)]


def _prediction(rng: np.random.Generator) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for _ in range(3):
        p = rng.dirichlet(np.ones(10))
        items.append(
            {
                "class_id": int(p.argmax()),
                "label": str(int(p.argmax())),
                "score": float(p.max()),
                "scores": [float(v) for v in p],
                "parent": len(items),
            }
        )
    box = {"class_id": 0, "label": "digit", "score": 0.9, "box": [1.0, 2.0, 30.0, 40.0]}
    return {
        "frame_id": "cam/000123.jpg",
        "bundle": "digits",
        "bundle_version": 7,
        "ontology_version": 1,
        "latency_ms": 2.5,
        "size": [320, 240],
        "stages": {
            "detector": {"kind": "detection", "items": [box] * 3, "latency_ms": 1.0},
            "classifier": {"kind": "classification", "items": items, "latency_ms": 1.0},
        },
    }


def _record(image: bytes, priority: float, pred: dict[str, Any]) -> SampleRecord:
    return SampleRecord(
        id=new_sample_id(),
        device_id="bench",
        created=time.time(),
        frame_id="cam/000123.jpg",
        bundle="digits",
        bundle_version=7,
        ontology_version=1,
        image=image,
        image_format="jpeg",
        prediction=pred,
        scores={"margin": priority, "entropy": priority},
        priority=priority,
    )


# ---- 1. inserts -----------------------------------------------------------------------------


def _inserts(work: Path, quick: bool) -> dict[str, Any]:
    jpegs = _jpegs(64)
    mean_kb = statistics.mean(len(j) for j in jpegs) / 1000
    rng = np.random.default_rng(1)
    preds = [_prediction(rng) for _ in range(32)]
    cap = 16 << 20
    store = SampleStore(work / "store", max_bytes=cap)
    env = lmdb.open(str(work / "raw"), map_size=4 << 30, subdir=True)
    # The same pair with one disk sync per commit (store.sync: data / LMDB NOMETASYNC).
    store1 = SampleStore(work / "store1", max_bytes=cap, metasync=False)
    env1 = lmdb.open(str(work / "raw1"), map_size=4 << 30, subdir=True, metasync=False)
    counter = iter(range(1 << 62))

    def records(k: int) -> list[SampleRecord]:
        return [
            _record(jpegs[next(counter) % 64], float(rng.random()), preds[i % 32]) for i in range(k)
        ]

    # Fill to the cap first (untimed) so that every timed insert evicts.
    for s_ in (store, store1):
        while s_.stats()["evicted"] < 50:
            s_.put_many(records(16))

    block = 100 if quick else 250
    rounds = 3 if quick else 6
    # Pre-grow the raw file (put as much as the timed part will, then delete it all, untimed)
    # so its timed puts reuse free pages like the store's do, instead of also paying for
    # growing the file on every commit.
    for e in (env, env1):
        with e.begin(write=True) as txn:
            for i in range(rounds * block * 2):
                txn.put(b"pre%08d" % i, jpegs[i % 64])
        with e.begin(write=True) as txn:
            for i in range(rounds * block * 2):
                txn.delete(b"pre%08d" % i)

    def store_block(per_txn: int, st: SampleStore = store) -> Callable[[], float]:
        def run() -> float:
            batches = [records(per_txn) for _ in range(block // per_txn)]  # built untimed
            t0 = time.perf_counter()
            for b in batches:
                if per_txn == 1:
                    st.put(b[0])
                else:
                    st.put_many(b)
            return block / (time.perf_counter() - t0)

        return run

    def raw_block(per_txn: int, e: Any = env) -> Callable[[], float]:
        def run() -> float:
            batches = [
                [(new_sample_id().encode(), jpegs[next(counter) % 64]) for _ in range(per_txn)]
                for _ in range(block // per_txn)
            ]
            t0 = time.perf_counter()
            for b in batches:
                with e.begin(write=True) as txn:
                    for k, v in b:
                        txn.put(k, v)
            return block / (time.perf_counter() - t0)

        return run

    contenders = {
        "store_put": store_block(1),
        "raw_put": raw_block(1),
        "store_put_many8": store_block(8),
        "raw_put8": raw_block(8),
        "store_put_datasync": store_block(1, store1),
        "raw_put_datasync": raw_block(1, env1),
    }
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    evicted0 = store.stats()["evicted"]
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            rates[name].append(contenders[name]())
    st = store.stats()
    env.close()
    env1.close()
    store1.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    out = {
        "jpeg_kb_mean": mean_kb,
        "cap_bytes": cap,
        "samples_per_s": med,
        "ratio_single": med["store_put"] / med["raw_put"],
        "ratio_batch8": med["store_put_many8"] / med["raw_put8"],
        "ratio_datasync": med["store_put_datasync"] / med["raw_put_datasync"],
        "evicted_during_timing": st["evicted"] - evicted0,
        "timed_inserts": rounds * block * 2,
        "disk_bytes": st["disk_bytes"],
        "disk_over_cap": st["disk_bytes"] / cap,
        "payload_over_cap": st["bytes"] / cap,
    }
    store.close()
    _say(
        f"(1) inserts of {mean_kb:.1f} KB JPEGs, every one evicting "
        f"({out['evicted_during_timing']} evictions while timed):"
    )
    _say(
        f"    one per transaction: store {med['store_put']:,.0f}/s vs raw LMDB put "
        f"{med['raw_put']:,.0f}/s = {out['ratio_single']:.2f}x (target >= 2,000/s, >= 0.5x)"
    )
    _say(
        f"    8 per transaction:   store {med['store_put_many8']:,.0f}/s vs raw "
        f"{med['raw_put8']:,.0f}/s = {out['ratio_batch8']:.2f}x"
    )
    _say(
        f"    one sync per commit: store {med['store_put_datasync']:,.0f}/s vs raw "
        f"{med['raw_put_datasync']:,.0f}/s = {out['ratio_datasync']:.2f}x (store.sync: data)"
    )
    _say(
        f"    data file {st['disk_bytes'] / 2**20:.2f} MiB = {out['disk_over_cap']:.4f}x the "
        f"{cap >> 20} MiB cap (target <= 1.01x); records' footprints {out['payload_over_cap']:.3f}x"
    )
    return out


# ---- 2. top-K -------------------------------------------------------------------------------


def _topk(work: Path, quick: bool) -> dict[str, Any]:
    sizes = (2_000, 20_000) if quick else (10_000, 100_000)
    rng = np.random.default_rng(2)
    preds = [_prediction(rng) for _ in range(32)]
    image = bytes(rng.integers(0, 256, 1000, dtype=np.uint8))
    store = SampleStore(work / "topk", max_bytes=sizes[-1] * 6000, map_size=sizes[-1] * 13000)
    rows = []
    have = 0
    t_build = time.perf_counter()
    for n in sizes:
        while have < n:
            k = min(2000, n - have)
            store.put_many([_record(image, float(rng.random()), preds[i % 32]) for i in range(k)])
            have += k
        calls: dict[str, Callable[[], list[Any]]] = {
            "ranked": lambda: store.ranked(1000),
            "records_without_image": lambda: store.top(1000, with_image=False),
            "records_with_image": lambda: store.top(1000),
        }
        times: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(7):
            for key, call in calls.items():
                t0 = time.perf_counter()
                got = call()
                times[key].append((time.perf_counter() - t0) * 1000)
                assert len(got) == 1000
        row = {"n": n, **{f"{k}_ms": statistics.median(v) for k, v in times.items()}}
        rows.append(row)
        _say(
            f"(2) top-1,000 of {n:,}: ranking (index only, ids + priorities) "
            f"{row['ranked_ms']:.1f} ms (target <= 50 ms at 100,000); whole records "
            f"{row['records_without_image_ms']:.1f} ms without images, "
            f"{row['records_with_image_ms']:.1f} ms with"
        )
    build_s = time.perf_counter() - t_build
    assert store.stats()["count"] == sizes[-1]
    store.close()
    shutil.rmtree(work / "topk", ignore_errors=True)
    return {"rows": rows, "build_s": build_s}


# ---- 3. frame path --------------------------------------------------------------------------


def _bench_scorer() -> Any:
    from runtime.sampling import make_scorer

    return make_scorer({"margin": 1.0, "novelty": 0.5, "random": 0.1})


def _frame_path(work: Path, quick: bool) -> dict[str, Any]:
    from bench.models import FixedBoxesDetector
    from runtime.backends import BackendOptions
    from runtime.backends.onnxruntime import load as load_ort
    from runtime.config import DeviceConfig
    from runtime.pipeline.pipeline import Pipeline
    from runtime.store.writer import StoreWriter
    from trainer.export import CLASSIFIER_IO, DETECTOR_IO, export_onnx
    from trainer.models import DigitClassifier
    from trainer.stages import CLASSES, pipeline_spec

    boxes = [(20.0, 48.0, 18.0, 18.0), (48.0, 48.0, 18.0, 18.0), (76.0, 48.0, 18.0, 18.0)]
    files = {"detector": work / "detector.onnx", "classifier": work / "classifier.onnx"}
    export_onnx(FixedBoxesDetector(boxes).eval(), files["detector"], *DETECTOR_IO)
    export_onnx(DigitClassifier().eval(), files["classifier"], *CLASSIFIER_IO)
    models = {k: load_ort(p, BackendOptions(threads=1)) for k, p in files.items()}
    pipe = Pipeline(pipeline_spec(), dict(models), classes=CLASSES)
    rng = np.random.default_rng(3)
    frames = [_scene(rng, 640, 480, 6.0) for _ in range(16)]
    for _ in range(5):  # warm-up
        pipe.run(frames[0])
    clock = time.perf_counter
    default_rate = DeviceConfig().store.max_rate
    results: dict[str, Any] = {"device_max_rate": default_rate}
    # (name, store cap, fps, max_rate, target row). "filling": a cap far above what the run
    # stores. "steady": the cap already reached (filled untimed first), as on a device running
    # for days: most frames fall below the store's floor and are refused before encoding.
    phases = (
        ("filling, device defaults", 1 << 30, 0.0, default_rate, True),
        ("steady, device defaults", 8 << 20, 0.0, default_rate, True),
        ("filling, every frame written", 1 << 30, 0.0, 0.0, False),
        ("filling at 30 fps, every frame written", 1 << 30, 30.0, 0.0, False),
    )
    for phase, cap, fps, rate, target in phases:
        path = work / f"frames-{len(results)}"
        store = SampleStore(path, max_bytes=cap, random_share=0.05)
        if phase.startswith("steady"):
            filler = StoreWriter(store, _bench_scorer(), "bench", random_slice=0.02)
            while store.floor() is None:
                for f in frames:
                    filler.offer(f, pipe.run(f, "fill"))
                    time.sleep(0.002)
            filler.close(timeout=60)
        writer = StoreWriter(
            store, _bench_scorer(), "bench", random_slice=0.02, queue_size=64, max_rate=rate
        )
        rounds, block = (30, 30) if quick else (100, 30)
        if fps:  # a camera's pace: fewer, shorter rounds (each frame takes 1/fps)
            rounds, block = (6, 10) if quick else (16, 15)
        modes = ("off", "off again", "on")
        order_rng = np.random.default_rng(11)
        i = 0
        samples: dict[str, list[float]] = {m: [] for m in modes}
        writes = {m: 0 for m in (*modes, "between")}
        period = 1.0 / fps if fps else 0.0
        before = writer.stats()
        t0 = clock()
        for _ in range(rounds):
            for mode in order_rng.permutation(modes):
                stored0 = writer.stats()["stored"]
                for _ in range(block):
                    f = frames[i % len(frames)]
                    i += 1
                    if period:  # the writer works in the gaps (untimed)
                        time.sleep(max(0.0, period - (clock() - t0)))
                    t0 = clock()
                    pred = pipe.run(f, "frame")
                    if mode == "on":
                        writer.offer(f, pred)
                    samples[mode].append((clock() - t0) * 1000)
                stored1 = writer.stats()["stored"]
                writes[mode] += stored1 - stored0
                deadline = time.monotonic() + 30
                while writer.stats()["queued"] and time.monotonic() < deadline:
                    time.sleep(0.001)  # untimed: the next block starts with an empty queue
                writes["between"] += writer.stats()["stored"] - stored1
        writer.close(timeout=30)
        ws = {k: v - before.get(k, 0) for k, v in writer.stats().items() if k != "queued"}
        store.close()
        shutil.rmtree(path, ignore_errors=True)
        p50 = {k: statistics.median(v) for k, v in samples.items()}
        p90 = {k: float(np.percentile(v, 90)) for k, v in samples.items()}
        row = {
            "cap_bytes": cap,
            "fps": fps or "back to back",
            "max_rate": rate,
            "target_row": target,
            "p50_ms": p50,
            "p90_ms": p90,
            "ratio_p50": p50["on"] / p50["off"],
            "ratio_p90": p90["on"] / p90["off"],
            "aa_ratio_p50": p50["off again"] / p50["off"],
            "frames_per_mode": len(samples["on"]),
            "writes_by_block": writes,
            "writer": ws,
        }
        results[phase] = row
        rate_txt = f"max_rate {rate:g}/s" if rate else "max_rate 0"
        _say(
            f"(3) frame path [{phase}: {rate_txt}], two-stage digits pipeline, 640x480, ORT 1 "
            f"thread: p50 off {p50['off']:.2f} ms, on {p50['on']:.2f} ms = "
            f"{row['ratio_p50']:.3f}x ({'target <= 1.05x' if target else 'informational'}); "
            f"p90 {row['ratio_p90']:.3f}x; A/A (off again / off) {row['aa_ratio_p50']:.3f}x"
        )
        _say(
            f"    writer: offered {ws['offered']}, stored {ws['stored']} (during on-blocks "
            f"{writes['on']}, off-blocks {writes['off'] + writes['off again']}, between "
            f"{writes['between']}; random slice {ws['stored_random']}), outranked "
            f"{ws['outranked']}, refused {ws['rejected']}, dropped {ws['dropped']}"
        )
    for m in models.values():
        m.close()
    return results


def run_all(out: Path, quick: bool = False) -> dict[str, Any]:
    """Run (1)–(3), print the figures and write ``out/store.json``; returns the figures."""
    t0 = time.perf_counter()
    results: dict[str, Any] = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="leanloop-bench-store-") as tmp:
        work = Path(tmp)
        results["inserts"] = _inserts(work, quick)
        results["topk"] = _topk(work, quick)
        results["frame_path"] = _frame_path(work, quick)
    results["seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "store.json").write_text(json.dumps(results, indent=2))
    _say(f"store bench done in {results['seconds']:.0f} s -> {out / 'store.json'}")
    return results
