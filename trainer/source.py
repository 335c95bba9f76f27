"""Write a bundle *source* folder: what ``leanloop bundle build`` turns into a signed bundle.

Layout (see ``docs/architecture.md``)::

    pipeline.yaml          the two-stage graph, written from trainer.stages (validated)
    ontology.yaml          id: digits, version: 1, classes "0".."9"
    models/detector.onnx   [batch,1,96,96] -> [batch,5,144] (YOLOv8 layout, one class)
    models/classifier.onnx [batch,1,28,28] -> [batch,10] logits
    models/<key>.xml/.bin  the same networks as OpenVINO IR (fp32, dynamic batch)
    models/<key>.tflite    the same networks as TFLite (fp32, batch 1, NCHW); written only when
                           litert-torch (``leanloop[export]``) is installed, else noted as skipped
    golden/000.png …       frames for the install-time health check
    notes.json             flat string map: training metrics and the caller's notes
    checkpoint/            torch state dicts for the next warm start; NOT part of the bundle
                           (bundle build skips it, see runtime.bundle.build.IGNORED_SOURCE_DIRS)

The folder is assembled next to ``out_dir`` under a temporary name and renamed into place at the
end, so a crashed or failed run never leaves a half-written source that a build could pick up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from runtime.errors import PipelineError
from runtime.pipeline.graph import PIPELINE_FORMAT, load_pipeline_spec
from trainer._folder import replaced_folder, write_golden
from trainer.errors import TrainerError
from trainer.export import ALTERNATE_FORMATS, export_alternates, export_models
from trainer.stages import CLASSES, ONTOLOGY_ID, ONTOLOGY_VERSION, pipeline_spec
from trainer.train import TrainedModels

__all__ = ["CHECKPOINT_DIR", "pipeline_yaml", "write_bundle_source"]

CHECKPOINT_DIR = "checkpoint"
_CHECKPOINT_README = (
    "Training state (torch state dicts) for warm-starting the next run with --init-from.\n"
    "Not part of the bundle: leanloop bundle build ignores this folder.\n"
)


def pipeline_yaml() -> str:
    """The ``pipeline.yaml`` text for :func:`trainer.stages.pipeline_spec`, validated by the
    device's own parser. Raises TrainerError if the two ever disagree."""
    spec = pipeline_spec()
    body = spec.model_dump(mode="json", exclude_defaults=True)
    data = {"format": PIPELINE_FORMAT, "stages": body["stages"]}
    text = "# written by the leanloop trainer (trainer/stages.py)\n" + yaml.safe_dump(
        data, sort_keys=False
    )
    try:
        parsed = load_pipeline_spec(text)
    except PipelineError as e:
        raise TrainerError(f"the trainer wrote an invalid pipeline.yaml: {e}") from e
    if parsed != spec:
        raise TrainerError("pipeline.yaml does not read back as the trainer's stage specs")
    return text


def _flat_notes(notes: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in notes.items():
        if isinstance(value, float):
            out[str(key)] = f"{value:.6g}"
        elif isinstance(value, str):
            out[str(key)] = value
        else:
            out[str(key)] = json.dumps(value, sort_keys=True)
    return out


def write_bundle_source(
    out_dir: Path,
    models: TrainedModels,
    golden_frames: list[np.ndarray],
    notes: dict[str, Any],
    formats: tuple[str, ...] = ALTERNATE_FORMATS,
    ontology: dict[str, Any] | None = None,
) -> Path:
    """Write the bundle source folder ``out_dir`` (replacing it) and return it.

    ``golden_frames`` are BGR uint8 frames saved as ``golden/000.png`` …; ``notes`` are merged
    with the training metrics into ``notes.json`` (values turned into strings). ``formats``
    are the model formats written beside ONNX (``openvino``, ``tflite``; ``()`` for ONNX only);
    bundle build records them as each model's ``alternates``. ``ontology`` (``id``, ``version``,
    ``classes`` in the classifier's output order) is written as ``ontology.yaml``; default:
    digits version 1, "0".."9".
    Raises TrainerError (export or validation failed) or OSError (disk).
    """
    out_dir = Path(out_dir)
    with replaced_folder(out_dir) as tmp:
        (tmp / "pipeline.yaml").write_text(pipeline_yaml())
        ontology = ontology or {"id": ONTOLOGY_ID, "version": ONTOLOGY_VERSION, "classes": CLASSES}
        (tmp / "ontology.yaml").write_text(yaml.safe_dump(ontology, sort_keys=False))
        diffs = export_models(models, tmp / "models")
        alt_diffs, skipped = export_alternates(models, tmp / "models", formats)
        write_golden(tmp / "golden", golden_frames)
        all_notes: dict[str, Any] = {f"train.{k}": v for k, v in models.metrics.items()}
        all_notes.update({f"onnx_max_diff.{k}": v for k, v in diffs.items()})
        all_notes.update({f"max_diff.{k}": v for k, v in alt_diffs.items()})
        all_notes.update({f"export_skipped.{k}": v for k, v in skipped.items()})
        all_notes.update(notes)
        (tmp / "notes.json").write_text(json.dumps(_flat_notes(all_notes), indent=1) + "\n")
        models.save_checkpoint(tmp / CHECKPOINT_DIR)
        (tmp / CHECKPOINT_DIR / "README.txt").write_text(_CHECKPOINT_README)
    return out_dir
