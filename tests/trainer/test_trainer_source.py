"""trainer.source: the bundle source folder, as ``leanloop bundle build`` reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from runtime.pipeline.graph import YoloPost, load_pipeline_spec
from trainer.errors import TrainerError
from trainer.source import write_bundle_source
from trainer.stages import CLASSIFIER_CROP, CLASSIFIER_PRE, pipeline_spec
from trainer.train import TrainedModels


@pytest.fixture
def source(trained_source: Path) -> Path:
    return trained_source


def test_write_bundle_source_when_written_has_the_documented_layout(source: Path) -> None:
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    from trainer.export_formats import tflite_unavailable_reason

    tflite = (
        []
        if tflite_unavailable_reason()
        else ["models/classifier.tflite", "models/detector.tflite"]
    )
    assert files == sorted([
        "checkpoint/README.txt", "checkpoint/classifier.pt", "checkpoint/detector.pt",
        "golden/000.png", "golden/001.png", "golden/002.png",
        "models/classifier.onnx", "models/detector.onnx",
        "models/classifier.xml", "models/classifier.bin",
        "models/detector.xml", "models/detector.bin", *tflite,
        "notes.json", "ontology.yaml", "pipeline.yaml",
    ])  # fmt: skip
    assert not [p for p in source.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_write_bundle_source_when_written_pipeline_is_the_training_config(source: Path) -> None:
    spec = load_pipeline_spec((source / "pipeline.yaml").read_text())
    assert spec == pipeline_spec()
    det, cls = spec.stages
    assert isinstance(det.post, YoloPost) and det.post.type == "yolo_v8"
    assert det.post.class_agnostic and det.post.classes == ["digit"]
    assert det.pre.resize == (96, 96) and det.pre.color == "gray"
    assert cls.for_each == "detector"
    assert cls.crop == CLASSIFIER_CROP and cls.crop.margin == 0.15 and cls.crop.square
    assert cls.pre == CLASSIFIER_PRE and cls.pre.resize == (28, 28)


def test_write_bundle_source_when_written_has_ontology_and_flat_notes(source: Path) -> None:
    onto = yaml.safe_load((source / "ontology.yaml").read_text())
    assert onto == {"id": "digits", "version": 1, "classes": [str(d) for d in range(10)]}
    notes = json.loads((source / "notes.json").read_text())
    assert notes["run"] == "test"
    assert all(isinstance(v, str) for v in notes.values())
    assert float(notes["onnx_max_diff.detector"]) <= 1e-4


def test_write_bundle_source_when_built_gives_a_bundle_without_checkpoint(
    source: Path, tmp_path: Path
) -> None:
    build = pytest.importorskip("runtime.bundle.build")
    pytest.importorskip("runtime.pipeline.pipeline")
    manifest = build.build_bundle(source, tmp_path / "bundle", name="digits", version=1)
    assert set(manifest.models) == {"detector", "classifier"}
    assert not any(path.startswith("checkpoint/") for path in manifest.files)
    assert manifest.health is not None and len(manifest.health.inputs) == 3


def test_write_bundle_source_when_export_fails_leaves_old_source_untouched(
    source: Path, trained: tuple[TrainedModels, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    models, _ = trained
    before = (source / "models" / "detector.onnx").read_bytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise TrainerError("export exploded")

    monkeypatch.setattr("trainer.source.export_models", broken)
    with pytest.raises(TrainerError, match="exploded"):
        write_bundle_source(source, models, [np.zeros((96, 96, 3), np.uint8)], {})
    assert (source / "models" / "detector.onnx").read_bytes() == before
    assert not [p for p in source.parent.iterdir() if p.name.startswith(".")]
