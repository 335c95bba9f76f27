"""Production history as a dataset: the frames that have ground truth, tagged for slicing.

A history frame is a sample a device uploaded (a strategy pick or its uniform random slice) or
a seed the admin imported, whose truth is known from:

1. the annotation (boxes ``[x1, y1, x2, y2, label]``; a box that covers the whole frame is a
   whole-frame label), else
2. the person's feedback on the device: a correction of the whole frame gives its label, a
   confirmation makes the production answer the truth.

Samples with neither are not history yet. :func:`frame_from_sample` is the pure conversion;
:func:`export_history` writes a history folder from the hub's storage, and
:class:`HistoryDir` reads one (``history.jsonl`` + ``images/<sha256>``), which is what the
runner consumes and what the CLI downloads from ``GET /admin/history`` (images fetched once,
so an interrupted download resumes).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.replay.frames import HistoryFrame, Outcome, TruthObject
from hub.replay.runner import outcome_of
from runtime._atomic import atomic_write_bytes
from runtime.errors import ConfigError

__all__ = ["HistoryDir", "export_history", "frame_from_sample", "write_history"]

HISTORY_NAME = "history.jsonl"
IMAGES_NAME = "images"


def _production(meta: dict[str, Any]) -> Outcome | None:
    from runtime.pipeline.prediction import Prediction

    pred = meta.get("prediction")
    if not isinstance(pred, dict) or "stages" not in pred:
        return None
    try:
        return outcome_of(Prediction.from_dict({"frame_id": meta.get("frame_id", ""), **pred}))
    except (KeyError, TypeError, ValueError):
        return None


def _whole_frame(box: Sequence[float], size: Sequence[int] | None) -> bool:
    if not size or len(size) != 2 or not size[0] or not size[1]:
        return False
    w, h = float(size[0]), float(size[1])
    return box[0] <= 1 and box[1] <= 1 and box[2] >= w - 1 and box[3] >= h - 1


def frame_from_sample(
    sample_id: str,
    meta: dict[str, Any],
    annotation: dict[str, Any] | None,
    cohort: str | None,
    image_sha256: str | None,
    feedback: dict[str, Any] | None = None,
) -> HistoryFrame | None:
    """A history frame from a stored sample, or None when its truth is unknown."""
    production = _production(meta)
    size = (meta.get("prediction") or {}).get("size")
    truth: list[TruthObject] = []
    if annotation and isinstance(annotation.get("boxes"), list):
        for b in annotation["boxes"]:
            box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
            truth.append(TruthObject(str(b[4]), None if _whole_frame(box, size) else box))
    fb = feedback or meta.get("feedback")
    if not truth and isinstance(fb, dict) and fb.get("item") is None:
        if fb.get("kind") == "correct" and fb.get("label"):
            truth = [TruthObject(str(fb["label"]))]
        elif fb.get("kind") == "confirm" and production and production.items:
            best = max(production.items, key=lambda i: i.score)
            truth = [TruthObject(best.label)]
    if not truth:
        return None
    raw_extra = meta.get("extra")
    extra: dict[str, Any] = raw_extra if isinstance(raw_extra, dict) else {}
    return HistoryFrame(
        id=sample_id,
        truth=tuple(truth),
        time=float(meta.get("created", 0.0)),
        device=str(meta.get("device_id", "")),
        cohort=cohort,
        camera=str(extra["camera"]) if extra.get("camera") else None,
        selection="random" if meta.get("random_slice") else "strategy",
        ontology_version=int(meta.get("ontology_version", 1)),
        bundle_version=int(meta.get("bundle_version", 0)),
        image_sha256=image_sha256,
        feedback=fb if isinstance(fb, dict) else None,
        production=production,
    )


def write_history(folder: Path, frames: Iterable[HistoryFrame]) -> int:
    """Write ``history.jsonl`` atomically (images are written beside it by the caller)."""
    lines = [json.dumps(f.to_dict(), sort_keys=True) for f in sorted(frames, key=lambda f: f.id)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / IMAGES_NAME).mkdir(exist_ok=True)
    atomic_write_bytes(folder / HISTORY_NAME, ("\n".join(lines) + "\n").encode() if lines else b"")
    return len(lines)


def export_history(db: Any, blobs: Any, folder: Path, bundle: str | None = None) -> int:
    """Write the hub's history (frames with truth) and their images into ``folder``."""
    frames = history_frames(db, bundle)
    for f in frames:
        if f.image_sha256 and blobs.has(f.image_sha256):
            dest = folder / IMAGES_NAME / f.image_sha256
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(dest, blobs.read(f.image_sha256))
    return write_history(folder, frames)


def history_frames(db: Any, bundle: str | None = None) -> list[HistoryFrame]:
    """Every stored sample with a known truth, as history frames (by id)."""
    cohorts = {d.id: d.cohort for d in db.devices()}
    out = []
    for s in db.samples(bundle, None, None):
        f = frame_from_sample(
            s.id, s.meta, s.annotation, cohorts.get(s.device_id), s.image_sha256, db.feedback(s.id)
        )
        if f is not None:
            out.append(f)
    return sorted(out, key=lambda f: f.id)


@dataclass
class HistoryDir:
    """A history folder on disk."""

    path: Path

    @property
    def images(self) -> Path:
        return self.path / IMAGES_NAME

    def frames(self, since: float | None = None, cohort: str | None = None) -> list[HistoryFrame]:
        """The frames, by id, optionally from ``since`` (unix time) and of one cohort.

        Raises ConfigError when the folder has no readable ``history.jsonl``.
        """
        file = self.path / HISTORY_NAME
        try:
            text = file.read_text()
        except OSError as e:
            raise ConfigError(f"{file}: cannot read the history: {e.strerror or e}") from e
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                f = HistoryFrame.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"{file}:{n}: not a history frame: {e}") from e
            if (since is None or f.time >= since) and (cohort is None or f.cohort == cohort):
                out.append(f)
        return sorted(out, key=lambda f: f.id)
