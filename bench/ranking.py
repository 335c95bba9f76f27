"""What the hub's annotation queue costs (``python -m bench --only ranking``, issue #13 §4).

The queue (:meth:`hub.storage.HubDB.annotation_queue`) ranks the pending samples of a bundle
across devices: one entry per near-duplicate group, tiers, then repeats last / device rounds /
uncertainty × novelty × class balance (:mod:`hub.ranking`). This bench fills a real database
with a made-up fleet and times it:

1. **The fleet.** ``n`` samples (2,000 and 20,000) from ``n / 40`` devices whose volumes follow
   a Zipf law (a few chatty cameras, many quiet ones). A third of the samples are copies of an
   earlier scene sent by another camera (hash within 2 bits, tiny image within ~0.15: one
   near-duplicate group), a tenth look like an earlier scene (a repeat, not a duplicate), the
   rest are new scenes; 10 % of the scenes are annotated (seeds and earlier work, so novelty
   and class balance have references), 5 % carry a device's correction or confirmation, 2 %
   were kept at random. The signatures are synthetic (a random 64-bit hash, a random unit tiny
   image): the queue's cost does not depend on the pixels, and decoding 20,000 JPEGs would
   only time Pillow. Sample metas are shaped as devices send them (a prediction with a
   10-class score vector, scores, extra).
2. **The queue.** ``annotation_queue(bundle, 500)`` (the API's page) and the web page's
   "next" (``hub.web.annotate._next_sample``: claim the queue's top sample nobody holds),
   each the median of several calls; the anchor is a plain ``SELECT`` of the same page of
   pending samples by priority (``HubDB.samples(bundle, 'pending', 500)``), in the same run.
   On SQLite and, when the machine can start it, PostgreSQL (``hub.testservers``).
3. **Ingest.** Per sample, on 640×480 JPEGs cut from a real photo (scikit-learn's
   ``china.jpg``): the signature (:func:`hub.ranking.signature_of`) and the grouping
   (``add_signature``), against the ingest itself (the blob written to the folder store and
   the row inserted), both on SQLite.

Ratios are printed against the anchors of the same run, never asserted; figures go to
``<out>/ranking.json``.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hub.ranking import ImageSignature
from hub.storage import HubDB, open_database

BUNDLE = "scenes"
CLASSES = [f"c{i}" for i in range(10)]
PAGE = 500


@dataclass
class FleetSample:
    id: str
    device: str
    priority: float
    meta: dict[str, Any]
    signature: ImageSignature
    annotated: bool
    feedback: dict[str, Any] | None
    group: str  # the near-duplicate group ``add_signature`` puts it in (its first member)
    label: str


def _unit(v: np.ndarray) -> np.ndarray:
    v = v - v.mean()
    out: np.ndarray = (v / np.linalg.norm(v)).astype(np.float32)
    return out


def make_fleet(n: int, seed: int = 0) -> list[FleetSample]:
    """``n`` samples from ``max(20, n // 40)`` devices, as the module docstring says."""
    rng = np.random.default_rng(seed)
    devices = [f"cam-{i:04d}" for i in range(max(20, n // 40))]
    weights = 1.0 / np.arange(1, len(devices) + 1)
    weights /= weights.sum()
    scenes: list[tuple[int, np.ndarray, str, str]] = []
    out: list[FleetSample] = []
    for i in range(n):
        kind = rng.random()
        label = CLASSES[int(rng.integers(len(CLASSES)))]
        device = devices[int(rng.choice(len(devices), p=weights))]
        sid = f"{i:08d}-{device}"
        group = sid
        if scenes and kind < 0.33:  # another camera's copy of an earlier scene
            phash, feat, label, group = scenes[int(rng.integers(len(scenes)))]
            for bit in rng.choice(64, size=int(rng.integers(0, 3)), replace=False):
                phash ^= 1 << int(bit)
            feat = _unit(feat + rng.normal(0, 0.015, 64))
        elif scenes and kind < 0.43:  # the view moved: alike, not a duplicate
            _, base, label, _ = scenes[int(rng.integers(len(scenes)))]
            phash, feat = int(rng.integers(0, 2**63)) * 2 + 1, _unit(base + rng.normal(0, 0.03, 64))
        else:
            phash, feat = int(rng.integers(0, 2**63)) * 2, _unit(rng.normal(0, 1, 64))
            scenes.append((phash, feat, label, sid))
        scores = rng.dirichlet(np.full(len(CLASSES), 0.3))
        top = int(np.argmax(scores))
        margin = float(np.sort(scores)[-1] - np.sort(scores)[-2])
        priority = round(1.0 - margin, 4)
        random_slice = bool(rng.random() < 0.02)
        meta = {
            "id": sid,
            "device_id": device,
            "created": 1.7e9 + i,
            "frame_id": f"f{i}",
            "bundle": BUNDLE,
            "bundle_version": 3,
            "ontology_version": 1,
            "image_format": "jpeg",
            "image_size": 40_000,
            "prediction": {
                "stages": {
                    "classifier": {
                        "items": [{"label": CLASSES[top], "score": round(float(scores[top]), 4),
                                   "scores": [round(float(s), 4) for s in scores]}],
                        "latency_ms": 4.2,
                    }
                },
                "latency_ms": 4.9,
            },
            "shadow_prediction": None,
            "scores": {"random": 1.0} if random_slice else {"margin": priority},
            "priority": priority,
            "feedback": None,
            "upload_state": "pending",
            "extra": {},
            "random_slice": random_slice,
        }  # fmt: skip
        fb = None
        if rng.random() < 0.05:
            fb = {"kind": "correct", "label": label, "who": "op", "when": 1.7e9 + i,
                  "bundle_version": 3} if rng.random() < 0.6 else \
                 {"kind": "confirm", "label": None, "who": "op", "when": 1.7e9 + i,
                  "bundle_version": 3}  # fmt: skip
        sig = ImageSignature(phash, 640, 480, feat)
        annotated = bool(rng.random() < 0.1)
        out.append(FleetSample(sid, device, priority, meta, sig, annotated, fb, group, label))
    return out


def _sha(s: FleetSample) -> str:
    return f"{int(s.id[:8]):064x}"


def populate(db: HubDB, fleet: list[FleetSample]) -> None:
    """Ingest the fleet one sample at a time as the hub does (row, signature and grouping,
    feedback), then annotate the flagged samples (their groups inherit). Slow: ~60 samples/s."""
    for s in fleet:
        db.add_sample(s.id, BUNDLE, s.device, s.priority, s.meta, _sha(s))
        db.add_signature(s.id, BUNDLE, s.signature)
        if s.feedback is not None:
            db.set_feedback(s.id, s.device, s.feedback, "c0")
    for s in fleet:
        if s.annotated and db.sample(s.id).state == "pending":
            db.annotate(s.id, {"label": s.label, "boxes": [], "annotator": "bench"})


def load(db: HubDB, fleet: list[FleetSample]) -> None:
    """The rows :func:`populate` ends with, written in bulk (one transaction per table): each
    sample in the group the generator made it for, a group with a flagged member annotated
    (the first flagged one by the bench, the others inherited). Schemas before migration 0014
    (a "before" run on an older checkout) get the columns they have."""
    from hub.ranking import bands, encode_feature

    keyed = db._db.execute(
        "SELECT 1 FROM schema_migrations WHERE name = '0014_queue_keys'"
    ).fetchone()
    if keyed:
        from hub.storage.samples import needs_review
    seeds: dict[str, str] = {}
    for s in fleet:
        if s.annotated:
            seeds.setdefault(s.group, s.id)
    rows, sigs, band_rows, feedback = [], [], [], []
    for k, s in enumerate(fleet):
        meta_json = json.dumps(s.meta)
        annotation = None
        if s.group in seeds:
            annotation = {"label": s.label, "boxes": [], "annotator": "bench"}
            if seeds[s.group] != s.id:
                annotation["inherited_from"] = seeds[s.group]
        row = [s.id, BUNDLE, s.device, s.priority, meta_json, _sha(s),
               "pending" if annotation is None else "annotated",
               None if annotation is None else json.dumps(annotation), 1.7e9 + k]  # fmt: skip
        if keyed:
            row += [s.group, needs_review(meta_json), "done"]
        rows.append(tuple(row))
        sig = s.signature
        sigs.append((s.id, BUNDLE, f"{sig.phash:016x}", sig.width, sig.height,
                     encode_feature(sig.feature), s.group))  # fmt: skip
        band_rows += [(BUNDLE, band, value, s.id) for band, value in bands(sig.phash)]
        if s.feedback is not None:
            feedback.append((s.id, s.device, s.feedback["kind"], s.feedback.get("label"), "c0",
                             json.dumps(s.feedback), 1.7e9 + k))  # fmt: skip
    columns = "id, bundle, device_id, priority, meta_json, image_sha256, state, annotation_json"
    columns += ", created" + (", group_key, needs_review, signature_state" if keyed else "")
    marks = ", ".join("?" for _ in rows[0])
    with db._transaction():
        db._db.executemany(f"INSERT INTO samples ({columns}) VALUES ({marks})", rows)
        db._db.executemany(
            "INSERT INTO sample_signatures (sample_id, bundle, phash, width, height, feature,"
            " group_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
            sigs,
        )
        db._db.executemany(
            "INSERT INTO sample_hash_bands (bundle, band, value, sample_id) VALUES (?, ?, ?, ?)",
            band_rows,
        )
        db._db.executemany(
            "INSERT INTO sample_feedback (sample_id, device_id, kind, label, predicted,"
            " feedback_json, received) VALUES (?, ?, ?, ?, ?, ?, ?)",
            feedback,
        )


def _median_s(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float], float]:
    """Median wall seconds, every wall time, and the median CPU seconds of this process (the
    figure a loaded machine disturbs least; PostgreSQL's own CPU is not in it)."""
    fn()  # warm: caches, the page cache, prepared plans
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), times, statistics.median(cpu)


def time_queue(db: HubDB, repeat: int) -> dict[str, Any]:
    """The queue's page, the web's "next", and the anchor, on a populated database."""
    from hub.web.annotate import _next_sample

    anchor, anchor_all, anchor_cpu = _median_s(lambda: db.samples(BUNDLE, "pending", PAGE), repeat)
    page, page_all, page_cpu = _median_s(lambda: db.annotation_queue(BUNDLE, PAGE), repeat)

    def next_one() -> None:
        sid = _next_sample(db, BUNDLE, "bench", 60.0)
        assert sid is not None
        db.release(sid, "bench")

    nxt, nxt_all, nxt_cpu = _median_s(next_one, repeat)
    pending = db._db.execute(
        "SELECT COUNT(*) AS n FROM samples WHERE bundle = ? AND state = 'pending'", (BUNDLE,)
    ).fetchone()["n"]
    entries = len(db.annotation_queue(BUNDLE, None))
    return {
        "pending": int(pending),
        "queue_entries": entries,
        "anchor_select_s": anchor,
        "queue_page_s": page,
        "next_s": nxt,
        "queue_page_ratio": page / anchor,
        "next_ratio": nxt / anchor,
        "cpu_s": {"anchor": anchor_cpu, "page": page_cpu, "next": nxt_cpu},
        "spread": {"anchor": anchor_all, "page": page_all, "next": nxt_all},
    }


def _photo_frames(count: int) -> list[bytes]:
    """640×480 JPEGs cut at random places from scikit-learn's china.jpg (a real photo)."""
    import sklearn
    from PIL import Image

    path = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
    photo = Image.open(path).convert("RGB").resize((1280, 854))
    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        x, y = int(rng.integers(0, 640)), int(rng.integers(0, 374))
        buf = io.BytesIO()
        photo.crop((x, y, x + 640, y + 480)).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def time_ingest(work: Path, count: int) -> dict[str, Any]:
    """Per sample: the ingest (blob + row) vs the signature + grouping, on SQLite."""
    from hub.ranking import signature_of
    from hub.storage import BlobStore

    frames = _photo_frames(count)
    (work / "ingest").mkdir()
    db = HubDB(open_database(None, work / "ingest"))
    blobs = BlobStore(work / "ingest" / "blobs")
    t_ingest = t_sig = t_group = 0.0
    for i, image in enumerate(frames):
        t0 = time.perf_counter()
        sha, _ = blobs.put(image)
        db.add_sample(f"i{i:06d}", BUNDLE, f"cam-{i % 7}", 0.5, {"id": f"i{i:06d}"}, sha)
        t1 = time.perf_counter()
        sig = signature_of(image)
        t2 = time.perf_counter()
        assert sig is not None
        db.add_signature(f"i{i:06d}", BUNDLE, sig)
        t3 = time.perf_counter()
        t_ingest, t_sig, t_group = t_ingest + t1 - t0, t_sig + t2 - t1, t_group + t3 - t2
    db.close()
    return {
        "samples": count,
        "ingest_ms": 1000 * t_ingest / count,
        "signature_ms": 1000 * t_sig / count,
        "group_ms": 1000 * t_group / count,
        "ratio": (t_sig + t_group) / t_ingest,
    }


def _line(backend: str, n: int, r: dict[str, Any]) -> str:
    return (
        f"{backend:<10} {n:>6} samples ({r['pending']:>6} pending, {r['queue_entries']:>6}"
        f" entries): anchor SELECT {1000 * r['anchor_select_s']:7.1f} ms | queue({PAGE})"
        f" {1000 * r['queue_page_s']:7.1f} ms = {r['queue_page_ratio']:5.1f}x | next"
        f" {1000 * r['next_s']:7.1f} ms = {r['next_ratio']:5.1f}x | CPU: anchor"
        f" {1000 * r['cpu_s']['anchor']:.1f} ms, queue {1000 * r['cpu_s']['page']:.1f} ms,"
        f" next {1000 * r['cpu_s']['next']:.1f} ms"
    )


def run(out: Path, quick: bool = False, sizes: tuple[int, ...] = (2_000, 20_000)) -> dict[str, Any]:
    """Run every part; print and return the figures (also ``<out>/ranking.json``)."""
    from hub.testservers import PostgresCluster, ServerUnavailable

    out.mkdir(parents=True, exist_ok=True)
    repeat = 3 if quick else 7
    report: dict[str, Any] = {"page": PAGE, "load": os.getloadavg()[0], "queue": {}}
    with tempfile.TemporaryDirectory(prefix="leanloop-rank-") as tmp:
        work = Path(tmp)
        fleets = {n: make_fleet(n) for n in sizes}
        pg: PostgresCluster | None = None
        try:
            pg = PostgresCluster().start()
        except ServerUnavailable as e:
            print(f"postgres: skipped ({e})")
            report["postgres_skipped"] = str(e)
        try:
            for backend in ("sqlite", "postgres"):
                if backend == "postgres" and pg is None:
                    continue
                for n, fleet in fleets.items():
                    url = None if pg is None or backend == "sqlite" else pg.new_database()
                    (work / f"{backend}-{n}").mkdir()
                    db = HubDB(open_database(url, work / f"{backend}-{n}"))
                    t0 = time.perf_counter()
                    load(db, fleet)
                    fill = time.perf_counter() - t0
                    r = time_queue(db, repeat)
                    r["populate_s"] = fill
                    db.close()
                    report["queue"][f"{backend}/{n}"] = r
                    print(_line(backend, n, r), flush=True)
        finally:
            if pg is not None:
                pg.stop()
        ing = time_ingest(work, 40 if quick else 150)
        report["ingest"] = ing
        print(
            f"ingest per 640x480 JPEG: blob + row {ing['ingest_ms']:.2f} ms | signature"
            f" {ing['signature_ms']:.2f} ms + grouping {ing['group_ms']:.2f} ms ="
            f" {ing['ratio']:.2f}x the ingest",
            flush=True,
        )
    report["load_after"] = os.getloadavg()[0]
    (out / "ranking.json").write_text(json.dumps(report, indent=2))
    return report
