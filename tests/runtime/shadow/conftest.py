"""Fixtures of the shadow tests: the torch-exported classifier, built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shadowkit / shadow_plugins
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))

from pipeline_models import export_brightness_classifier


@pytest.fixture(scope="session")
def shadow_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_brightness_classifier(
        tmp_path_factory.mktemp("shadow_clf") / "classifier.onnx", batch=None
    )
