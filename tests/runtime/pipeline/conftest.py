"""Session-scoped tiny models for the pipeline tests (built once: torch export is the slow bit)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # pipeline_models / pipeline_plugins

from pipeline_models import (
    export_brightness_classifier,
    export_brightness_tflite,
    make_constant_detector,
    yolo_v8_preds,
)

# Boxes in the detector's 96x96 input pixels (cx, cy, w, h, [score class 0, score class 1]).
DETECTIONS = [
    (12.0, 12.0, 16.0, 16.0, [0.9, 0.0]),  # A -> source x 8..40,   y 4..20
    (48.0, 48.0, 20.0, 20.0, [0.0, 0.8]),  # B -> source x 76..116, y 38..58
    (80.0, 70.0, 12.0, 12.0, [0.7, 0.0]),  # C -> source x 148..172, y 64..76
    (13.0, 12.0, 16.0, 16.0, [0.6, 0.0]),  # D: same class as A, IoU ~0.88 -> suppressed
    (60.0, 20.0, 10.0, 10.0, [0.1, 0.05]),  # E: below the score threshold
]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipeline_models")


@pytest.fixture(scope="session")
def classifier_dynamic(model_dir: Path) -> Path:
    return export_brightness_classifier(model_dir / "cls_dynamic.onnx", batch=None)


@pytest.fixture(scope="session")
def classifier_batch1(model_dir: Path) -> Path:
    return export_brightness_classifier(model_dir / "cls_b1.onnx", batch=1)


@pytest.fixture(scope="session")
def classifier_batch4(model_dir: Path) -> Path:
    return export_brightness_classifier(model_dir / "cls_b4.onnx", batch=4)


@pytest.fixture(scope="session")
def detector(model_dir: Path) -> Path:
    return make_constant_detector(model_dir / "det.onnx", yolo_v8_preds(DETECTIONS))


@pytest.fixture(scope="session")
def classifier_tflite(model_dir: Path) -> Path:
    """The brightness classifier as TFLite; skipped without litert-torch or ai-edge-litert."""
    from runtime.backends.litert import unavailable_reason
    from trainer.export_formats import tflite_unavailable_reason

    reason = unavailable_reason() or tflite_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    return export_brightness_tflite(model_dir / "cls.tflite")
