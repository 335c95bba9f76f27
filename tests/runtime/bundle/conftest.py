"""Real model files for the bundle tests, built once per session (TFLite export is the slow bit)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))  # pipeline_models

from pipeline_models import (
    export_brightness_classifier,
    export_constant_detector_tflite,
    yolo_v8_preds,
)

# Two boxes in the detector's 96x96 input (cx, cy, w, h, [score]); golden frames are 96x96.
BOXES = [(25.0, 25.0, 30.0, 30.0, [0.9]), (70.0, 70.0, 40.0, 40.0, [0.8])]


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """detector.tflite (LiteRT only), classifier.onnx and classifier.xml/.bin (OpenVINO IR)."""
    from runtime.backends.litert import unavailable_reason
    from trainer.export_formats import tflite_unavailable_reason

    reason = unavailable_reason() or tflite_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    import openvino as ov

    d = tmp_path_factory.mktemp("engines")
    onnx_path = export_brightness_classifier(d / "classifier.onnx", batch=None)
    ov.save_model(ov.convert_model(str(onnx_path)), str(d / "classifier.xml"))
    return {
        "detector.tflite": export_constant_detector_tflite(
            d / "detector.tflite", yolo_v8_preds(BOXES)
        ),
        "classifier.onnx": onnx_path,
        "classifier.xml": d / "classifier.xml",
        "classifier.bin": d / "classifier.bin",
    }
