"""A training job: annotated frames in, bundle source folder out (train → export → write).

The hub runs this in a subprocess, one job at a time::

    python -m trainer.job --annotations FILE.jsonl --images DIR --out DIR [--init-from DIR]
        [--ontology FILE.json]

Each line of the annotations file is ``{"id": "...", "boxes": [[x1, y1, x2, y2, "label"], ...]}``
where ``label`` is an ontology class name (``"0"`` … ``"9"``, or the names of ``--ontology``:
``{"id", "version", "classes"}``, ten classes in the classifier's output order, e.g. after the
hub renamed one); the frame is ``DIR/<id>.jpg``.
A frame with no boxes is a valid negative (nothing to detect). ``--init-from`` names the
``checkpoint/`` folder of an earlier job's source (or that source folder itself) to warm-start.

Progress and timings go to stdout (the hub keeps them as the job log). Exit codes: 0 done,
2 bad input (unreadable annotations, unknown label, missing image), 1 training/export failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2

from runtime.errors import LeanloopError
from trainer.errors import TrainerError
from trainer.export import ALTERNATE_FORMATS
from trainer.source import CHECKPOINT_DIR, write_bundle_source
from trainer.stages import CLASSES
from trainer.train import AnnotatedFrame, TrainParams, train_models

__all__ = ["GOLDEN_FRAMES", "load_annotations", "load_ontology", "main", "run_training_job"]

GOLDEN_FRAMES = 4
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _resolve_init(init_from: Path | None) -> Path | None:
    if init_from is None:
        return None
    init_from = Path(init_from)
    if (init_from / CHECKPOINT_DIR).is_dir():  # the source folder rather than its checkpoint
        return init_from / CHECKPOINT_DIR
    return init_from


def run_training_job(
    annotated: list[AnnotatedFrame],
    out_dir: Path,
    init_from: Path | None = None,
    params: TrainParams | None = None,
    notes: dict[str, Any] | None = None,
    formats: tuple[str, ...] = ALTERNATE_FORMATS,
    ontology: dict[str, Any] | None = None,
) -> Path:
    """Train on ``annotated`` (warm-started from ``init_from`` if given), export, and write the
    bundle source to ``out_dir`` (its ``ontology.yaml``: ``ontology``, default digits v1).
    Returns ``out_dir``. Raises TrainerError or OSError."""
    params = params or TrainParams()
    if not annotated:
        raise TrainerError("no annotated frames to train on")
    t0 = time.perf_counter()
    models = train_models(annotated, _resolve_init(init_from), params)
    step = max(1, len(annotated) // GOLDEN_FRAMES)
    golden = [fr.image for fr in annotated[::step][:GOLDEN_FRAMES]]
    all_notes: dict[str, Any] = {
        "trainer": "leanloop.trainer/1",
        "init_from": str(init_from) if init_from else "",
        "seed": params.seed,
    }
    all_notes.update(notes or {})
    t_export = time.perf_counter()
    out = write_bundle_source(out_dir, models, golden, all_notes, formats, ontology)
    print(f"export_s = {time.perf_counter() - t_export:.1f} (onnx + {list(formats)})", flush=True)
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def _load_image(images: Path, sample_id: str) -> Any:
    if "/" in sample_id or "\\" in sample_id or sample_id in ("", ".", ".."):
        raise TrainerError(f"sample id {sample_id!r} is not a plain file name")
    for suffix in _IMAGE_SUFFIXES:
        path = images / f"{sample_id}{suffix}"
        if path.is_file():
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise TrainerError(f"{path}: not a decodable image")
            return img
    raise TrainerError(f"{images}/{sample_id}.jpg: missing")


def load_annotations(
    annotations: Path, images: Path, classes: list[str] = CLASSES
) -> list[AnnotatedFrame]:
    """Read the hub's ``annotations.jsonl`` and the images it names; a label's class id is its
    index in ``classes``. Raises TrainerError."""
    frames: list[AnnotatedFrame] = []
    try:
        lines = Path(annotations).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise TrainerError(f"{annotations}: cannot read: {e.strerror or e}") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{annotations}:{n}"
        try:
            row = json.loads(line)
            sample_id = str(row["id"])
            raw_boxes = row.get("boxes") or []
            boxes = [tuple(float(v) for v in b[:4]) for b in raw_boxes]
            names = [str(b[4]) for b in raw_boxes]
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise TrainerError(f"{where}: not an annotation line ({type(e).__name__}: {e})") from e
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise TrainerError(f"{where}: label(s) {unknown} are not ontology classes {classes}")
        if any(x2 <= x1 or y2 <= y1 for x1, y1, x2, y2 in boxes):
            raise TrainerError(f"{where}: a box has x2 <= x1 or y2 <= y1")
        image = _load_image(Path(images), sample_id)
        frames.append(
            AnnotatedFrame(image, boxes, [classes.index(name) for name in names])  # type: ignore[arg-type]
        )
    return frames


def _formats(value: Any) -> tuple[str, ...]:
    """The ``formats`` job parameter: a list of alternate formats. Raises TrainerError."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TrainerError("training parameter formats: a list of format names")
    unknown = sorted(set(value) - set(ALTERNATE_FORMATS))
    if unknown:
        raise TrainerError(f"training parameter formats: unknown {unknown}; {ALTERNATE_FORMATS}")
    return tuple(value)


def load_ontology(path: Path | None) -> dict[str, Any] | None:
    """The ``--ontology`` file: ``{"id", "version", "classes"}`` with ten distinct class names
    (the digit reader has ten outputs: a rename keeps them, a merge, split, create or delete
    needs another head). None without a file. Raises TrainerError."""
    if path is None:
        return None
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        onto = {"id": str(raw["id"]), "version": int(raw["version"]), "classes": raw["classes"]}
    except OSError as e:
        raise TrainerError(f"{path}: cannot read: {e.strerror or e}") from e
    except (ValueError, KeyError, TypeError) as e:
        raise TrainerError(f"{path}: not an ontology ({{id, version, classes}}): {e}") from e
    classes = onto["classes"]
    if (
        not isinstance(classes, list)
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(CLASSES)
        or len(classes) != len(CLASSES)
    ):
        raise TrainerError(
            f"{path}: the digit reader needs {len(CLASSES)} distinct class names in its output "
            f"order, got {classes!r}"
        )
    return onto


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m trainer.job``); returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m trainer.job", description=__doc__.splitlines()[0])
    ap.add_argument("--annotations", type=Path, required=True, help="annotations.jsonl")
    ap.add_argument("--images", type=Path, required=True, help="folder of <id>.jpg")
    ap.add_argument("--out", type=Path, required=True, help="bundle source folder to write")
    ap.add_argument("--init-from", type=Path, default=None, help="checkpoint folder")
    ap.add_argument(
        "--ontology",
        type=Path,
        default=None,
        help='JSON {"id", "version", "classes"}: the ten class names labels are read in '
        "(default: digits v1, 0..9)",
    )
    ap.add_argument(
        "--params",
        default="{}",
        help='JSON object of TrainParams overrides; "formats": the model formats exported '
        f"beside ONNX (a subset of {list(ALTERNATE_FORMATS)}; default all)",
    )
    args = ap.parse_args(argv)
    try:
        raw = json.loads(args.params)
        if not isinstance(raw, dict):
            raise TrainerError("--params: not a JSON object")
        formats = _formats(raw.pop("formats", list(ALTERNATE_FORMATS)))
        params = TrainParams.from_dict(raw)
        t0 = time.perf_counter()
        ontology = load_ontology(args.ontology)
        classes = ontology["classes"] if ontology else CLASSES
        frames = load_annotations(args.annotations, args.images, classes)
        digits = sum(len(f.labels) for f in frames)
        print(
            f"loaded {len(frames)} frames, {digits} digits in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        if args.init_from is not None and not _resolve_init(args.init_from).is_dir():  # type: ignore[union-attr]
            raise TrainerError(f"{args.init_from}: no checkpoint folder to warm-start from")
    except (TrainerError, ValueError, AttributeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        models_out = run_training_job(
            frames, args.out, args.init_from, params, formats=formats, ontology=ontology
        )
        metrics = json.loads((models_out / "notes.json").read_text())
        for key in ("train.train_s", "train.detector_train_s", "train.classifier_train_s"):
            print(f"{key} = {metrics.get(key)}", flush=True)
    except (LeanloopError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
