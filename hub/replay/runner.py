"""The replay runner: a bundle's own pipeline code over historical frames, in worker processes.

The history is a folder (:mod:`hub.replay.history`): ``history.jsonl`` (one
:class:`~hub.replay.frames.HistoryFrame` a line) and ``images/<sha256>``. For one bundle,
:func:`replay_bundle`:

1. loads the bundle with :func:`runtime.bundle.loader.load_bundle` in every worker (the very
   :class:`~runtime.pipeline.pipeline.Pipeline` a device runs, one engine thread per worker, so
   throughput grows with workers);
2. runs the frames not yet in its result file ``<work>/<name>-v<version>-<digest>.jsonl``, in
   frame-id order, chunk by chunk, appending each chunk's outcomes (an interrupted replay
   resumes where it stopped; a torn last line is ignored and redone);
3. returns one :class:`~hub.replay.frames.Outcome` per frame: the final items, or an error —
   ``missing image`` when the blob is absent, the pipeline's one-line reason for a frame that
   cannot be decoded or run (a corrupt frame is counted, never a crash).

:func:`prepare_frames` first brings every frame's truth into the candidate's ontology: the same
version is kept, the previous version is remapped through the manifest's
``mapping_from_previous``, anything else (or a label the mapping cannot place) is excluded; both
are counted for the report.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.replay.frames import Guess, HistoryFrame, Outcome, PredItem, TruthObject
from runtime.bundle.manifest import Manifest

__all__ = [
    "MISSING_IMAGE",
    "ReplayCounts",
    "baseline_in_candidate_ontology",
    "bundle_digest",
    "load_for_replay",
    "outcome_of",
    "prepare_frames",
    "replay_bundle",
    "run_frames",
]

MISSING_IMAGE = "missing image"
_CHUNK = 64

Progress = Callable[[int], None]


@dataclass
class ReplayCounts:
    """What happened to the history's frames on the way to the metrics."""

    frames: int = 0
    used: int = 0
    ontology_remapped: int = 0
    ontology_excluded: int = 0
    missing_image: int = 0
    corrupt: dict[str, int] = field(default_factory=dict)  # bundle label -> frames it failed on

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "used": self.used,
            "ontology_remapped": self.ontology_remapped,
            "ontology_excluded": self.ontology_excluded,
            "missing_image": self.missing_image,
            "corrupt": dict(self.corrupt),
        }


def bundle_digest(bundle_dir: Path) -> str:
    """sha256 of the bundle's ``manifest.json`` (it pins every file by hash)."""
    return hashlib.sha256((Path(bundle_dir) / "manifest.json").read_bytes()).hexdigest()


def prepare_frames(
    frames: Sequence[HistoryFrame], manifest: Manifest, counts: ReplayCounts
) -> list[HistoryFrame]:
    """Frames whose truth is in the candidate's ontology (remapped from the previous version)."""
    onto = manifest.ontology
    classes = set(onto.classes)
    kept: list[HistoryFrame] = []
    for f in frames:
        if f.ontology_version == onto.version:
            labels = [t.label for t in f.truth]
        elif f.ontology_version == onto.version - 1:
            labels = [onto.mapping_from_previous.get(t.label, t.label) for t in f.truth]
        else:
            counts.ontology_excluded += 1
            continue
        if not f.truth or any(label not in classes for label in labels):
            counts.ontology_excluded += 1
            continue
        if f.ontology_version != onto.version:
            counts.ontology_remapped += 1
            truth = tuple(TruthObject(lbl, t.box) for lbl, t in zip(labels, f.truth, strict=True))
            f = HistoryFrame(**{**f.__dict__, "truth": truth, "ontology_version": onto.version})
        kept.append(f)
    return kept


def baseline_in_candidate_ontology(
    outcomes: Sequence[Outcome], baseline: Manifest, candidate: Manifest
) -> list[Outcome]:
    """The baseline's outcomes with its labels in the candidate's ontology: when the baseline
    serves the previous version of the candidate's ontology, its labels go through the
    candidate's ``mapping_from_previous`` (a renamed class is still the same class), so both
    bundles are judged against the same truth. Unchanged otherwise."""
    b, c = baseline.ontology, candidate.ontology
    mapping = c.mapping_from_previous
    if b.id != c.id or b.version != c.version - 1 or not mapping:
        return list(outcomes)

    def item(it: PredItem) -> PredItem:
        guesses = tuple(Guess(mapping.get(g.label, g.label), g.score) for g in it.top_k)
        return PredItem(mapping.get(it.label, it.label), it.score, it.box, guesses)

    return [Outcome(tuple(item(it) for it in o.items), o.error, o.latency_ms) for o in outcomes]


def outcome_of(prediction: Any) -> Outcome:
    """A :class:`~runtime.pipeline.prediction.Prediction` reduced to what the metrics need."""
    if prediction.error is not None:
        return Outcome(error=prediction.error, latency_ms=prediction.latency_ms)
    items = []
    for it in prediction.final_items():
        guesses = tuple(Guess(lbl, s) for lbl, s in it.top_k) or (Guess(it.label, it.score),)
        items.append(PredItem(it.label, float(it.score), it.box, guesses))
    return Outcome(items=tuple(items), latency_ms=prediction.latency_ms)


# -- worker side --------------------------------------------------------------------------------


def load_for_replay(bundle_dir: Path, backend: str = "onnxruntime") -> Any:
    """The bundle loaded as a device loads it, with one engine thread (one core per worker)."""
    from runtime.backends.base import BackendOptions
    from runtime.bundle.loader import load_bundle

    return load_bundle(Path(bundle_dir), backend, BackendOptions(threads=1))


def run_frames(
    pipeline: Any, images: Path, frames: Sequence[tuple[str, str | None]]
) -> list[tuple[str, dict[str, Any]]]:
    """Run ``(frame id, image sha256)`` frames; one outcome dict each (never raises per frame)."""
    out = []
    for frame_id, sha in frames:
        try:
            data = (Path(images) / sha).read_bytes() if sha else None
        except OSError:
            data = None
        if data is None:
            outcome = Outcome(error=MISSING_IMAGE)
        else:
            outcome = outcome_of(pipeline.run_bytes(data, frame_id))
        out.append((frame_id, outcome.to_dict()))
    return out


_WORKER_BUNDLE: Any = None  # the bundle a worker process loaded (one per process)


def _init_worker(bundle_dir: str, backend: str) -> None:
    global _WORKER_BUNDLE
    _WORKER_BUNDLE = load_for_replay(Path(bundle_dir), backend)


def _run_chunk(job: tuple[str, list[tuple[str, str | None]]]) -> list[tuple[str, dict[str, Any]]]:
    return run_frames(_WORKER_BUNDLE.pipeline, Path(job[0]), job[1])


# -- parent side --------------------------------------------------------------------------------


def _read_results(path: Path) -> dict[str, Outcome]:
    done: dict[str, Outcome] = {}
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return done
    for line in lines:
        try:
            rec = json.loads(line)
            done[str(rec["id"])] = Outcome.from_dict(rec["outcome"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from an interrupted run: redone below
    return done


def _chunks(todo: list[HistoryFrame], images: Path) -> Iterator[tuple[str, list[Any]]]:
    for k in range(0, len(todo), _CHUNK):
        yield str(images), [(f.id, f.image_sha256) for f in todo[k : k + _CHUNK]]


def replay_bundle(
    bundle_dir: Path,
    frames: Sequence[HistoryFrame],
    images: Path,
    work: Path,
    workers: int = 1,
    backend: str = "onnxruntime",
    progress: Progress | None = None,
) -> list[Outcome]:
    """Run a bundle on ``frames`` (resumable via ``work``); outcomes in the frames' order."""
    from runtime.bundle.loader import verify_bundle_dir

    manifest = verify_bundle_dir(bundle_dir)
    work.mkdir(parents=True, exist_ok=True)
    digest = bundle_digest(bundle_dir)
    results = work / f"{manifest.name}-v{manifest.version}-{digest[:12]}.jsonl"
    done = _read_results(results)
    if progress:
        progress(sum(1 for f in frames if f.id in done))
    todo = sorted((f for f in frames if f.id not in done), key=lambda f: f.id)
    if todo:
        with open(results, "ab") as sink:
            sink.seek(0, os.SEEK_END)
            if sink.tell() and not results.read_bytes().endswith(b"\n"):
                sink.write(b"\n")  # close a torn line so the next record starts clean
            for chunk in _map(bundle_dir, backend, workers, _chunks(todo, images)):
                for frame_id, outcome in chunk:
                    sink.write(json.dumps({"id": frame_id, "outcome": outcome}).encode() + b"\n")
                    done[frame_id] = Outcome.from_dict(outcome)
                sink.flush()
                if progress:
                    progress(len(chunk))
    return [done[f.id] for f in frames]


def _map(
    bundle_dir: Path, backend: str, workers: int, jobs: Iterator[tuple[str, list[Any]]]
) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    if workers <= 1:  # in this process, with a bundle of its own (hub jobs run side by side)
        loaded = load_for_replay(bundle_dir, backend)
        try:
            for images, frames in jobs:
                yield run_frames(loaded.pipeline, Path(images), frames)
        finally:
            loaded.close()
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a parent with engine threads
    with ctx.Pool(workers, _init_worker, (str(bundle_dir), backend)) as pool:
        yield from pool.imap(_run_chunk, jobs)
