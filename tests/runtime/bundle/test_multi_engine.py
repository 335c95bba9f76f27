"""One pipeline, several engines, on real engines and real files: a TFLite detector followed
by an ONNX classifier runs; golden outputs are computed on each model's own engine, so
TFLite-only and OpenVINO-only bundles keep their install-time health check."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from leanloop.cli import app
from runtime.bundle.build import build_bundle
from runtime.bundle.health import run_health_check
from runtime.bundle.loader import load_bundle
from runtime.errors import BundleError

DETECTOR = {
    "name": "detector",
    "model": "detector",
    "pre": {"resize": [96, 96], "color": "gray", "scale": 1 / 255},
    "post": {"type": "yolo_v8", "score_threshold": 0.3, "classes": ["digit"]},
}
CLASSIFIER = {
    "name": "classifier",
    "model": "classifier",
    "for_each": "detector",
    "crop": {"margin": 0.0},
    "pre": {"resize": [28, 28], "color": "gray", "scale": 1 / 255},
    "post": {"type": "softmax", "top_k": 3},
}
WHOLE_FRAME_CLASSIFIER = {k: v for k, v in CLASSIFIER.items() if k not in ("for_each", "crop")}


def _frame() -> np.ndarray:
    img = np.zeros((96, 96, 3), np.uint8)
    img[10:40, 10:40] = 60  # the first box: brightness 60/255 -> class 2
    img[50:90, 50:90] = 200  # the second: 200/255 -> class 7
    return img


def _source(
    root: Path, files: dict[str, Path], models: list[str], stages: list[dict[str, Any]]
) -> Path:
    src = root / "src"
    (src / "models").mkdir(parents=True)
    (src / "golden").mkdir()
    for name in models:
        shutil.copyfile(files[name], src / "models" / name)
    (src / "pipeline.yaml").write_text(yaml.safe_dump({"stages": stages}))
    onto = {"id": "digits", "version": 1, "classes": [str(i) for i in range(10)]}
    (src / "ontology.yaml").write_text(yaml.safe_dump(onto))
    cv2.imwrite(str(src / "golden" / "000.png"), _frame())
    return src


def _labels(loaded: Any) -> list[str]:
    pred = loaded.pipeline.run(_frame(), "f")
    assert pred.error is None, pred.error
    return [i.label for i in pred.final_items()]


def test_a_tflite_detector_followed_by_an_onnx_classifier_runs_when_engines_are_preferred(
    model_files: dict[str, Path], tmp_path: Path
) -> None:
    src = _source(
        tmp_path, model_files, ["detector.tflite", "classifier.onnx"], [DETECTOR, CLASSIFIER]
    )
    manifest = build_bundle(src, tmp_path / "b", name="digits", version=1)
    assert manifest.health is not None
    expected = json.loads((tmp_path / "b" / "golden" / "expected.json").read_text())
    assert [i["label"] for i in expected["golden/000.png"]["classifier"]["items"]] == ["2", "7"]

    loaded = load_bundle(tmp_path / "b", ["onnxruntime", "litert"])
    try:
        assert loaded.engines == {"detector": "litert", "classifier": "onnxruntime"}
        assert {k: m.name for k, m in loaded.pipeline.models.items()} == loaded.engines
        assert _labels(loaded) == ["2", "7"]
        run_health_check(loaded)
    finally:
        loaded.close()
    # OpenVINO reads the TFLite and the ONNX file directly.
    loaded = load_bundle(tmp_path / "b", "openvino")
    try:
        assert loaded.engines == {"detector": "openvino", "classifier": "openvino"}
        run_health_check(loaded)
    finally:
        loaded.close()
    with pytest.raises(BundleError, match="model 'detector' \\(tflite\\) cannot run"):
        load_bundle(tmp_path / "b", "onnxruntime")


def test_a_stage_pin_decides_the_engine_when_the_device_prefers_another(
    model_files: dict[str, Path], tmp_path: Path
) -> None:
    pinned = {**CLASSIFIER, "engine": "openvino"}
    src = _source(
        tmp_path,
        model_files,
        ["detector.tflite", "classifier.onnx", "classifier.xml", "classifier.bin"],
        [DETECTOR, pinned],
    )
    manifest = build_bundle(src, tmp_path / "b", name="digits", version=1)
    assert manifest.models["classifier"].engine == "openvino"  # the fetcher plans from it
    loaded = load_bundle(tmp_path / "b", ["litert", "onnxruntime"])
    try:
        assert loaded.engines == {"detector": "litert", "classifier": "openvino"}
        assert _labels(loaded) == ["2", "7"]
        run_health_check(loaded)
    finally:
        loaded.close()


@pytest.mark.parametrize(
    ("models", "stages", "engine"),
    [
        (["detector.tflite"], [DETECTOR], "litert"),
        (["classifier.xml", "classifier.bin"], [WHOLE_FRAME_CLASSIFIER], "openvino"),
    ],
    ids=["tflite-only", "openvino-only"],
)
def test_bundle_keeps_its_health_check_when_it_has_no_onnx_file(
    model_files: dict[str, Path],
    tmp_path: Path,
    models: list[str],
    stages: list[dict[str, Any]],
    engine: str,
) -> None:
    src = _source(tmp_path, model_files, models, stages)
    manifest = build_bundle(src, tmp_path / "b", name="digits", version=1)
    assert manifest.health is not None and manifest.health.inputs == ["golden/000.png"]
    expected = json.loads((tmp_path / "b" / "golden" / "expected.json").read_text())
    assert expected["golden/000.png"][stages[0]["name"]]["items"]
    loaded = load_bundle(tmp_path / "b")  # the device default preference
    try:
        assert set(loaded.engines.values()) == {engine}
        run_health_check(loaded)
    finally:
        loaded.close()
    # A device whose engine computes something else fails the health check.
    want = json.loads((tmp_path / "b" / "golden" / "expected.json").read_text())
    item = want["golden/000.png"][stages[0]["name"]]["items"][0]
    item["score"] = item["score"] / 2
    (tmp_path / "b" / "golden" / "expected.json").write_text(json.dumps(want))
    loaded = load_bundle(tmp_path / "b", verify=False)
    try:
        with pytest.raises(BundleError, match=r"health check failed on golden/000\.png"):
            run_health_check(loaded)
    finally:
        loaded.close()


def test_cli_builds_with_backend_and_infer_shows_engines_when_a_bundle_mixes_formats(
    model_files: dict[str, Path], tmp_path: Path
) -> None:
    src = _source(
        tmp_path, model_files, ["detector.tflite", "classifier.onnx"], [DETECTOR, CLASSIFIER]
    )
    runner = CliRunner()
    r = runner.invoke(app, ["bundle", "build", str(src), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--name" in r.output  # no silent default name
    assert not (tmp_path / "x").exists()
    out = tmp_path / "b"
    r = runner.invoke(
        app,
        [
            "bundle",
            "build",
            str(src),
            "--out",
            str(out),
            "--name",
            "mixed",
            "--backend",
            "openvino",
        ],
    )
    assert r.exit_code == 0, r.output
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), _frame())
    cmd = [sys.executable, "-m", "leanloop.cli", "infer", "--bundle", str(out)]
    cmd += ["--backend", "litert,onnxruntime", str(frame), str(tmp_path / "gone.png")]
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r2.returncode == 2, r2.stderr
    lines = r2.stdout.splitlines()
    assert lines[0] == "engines: detector=litert, classifier=onnxruntime"
    assert lines[1].startswith(f"{frame}: 2 ") and " 7 " in lines[1]
    # One line for the missing file, and no engine chatter (LiteRT's XNNPACK INFO line).
    assert r2.stderr == f"error: {tmp_path / 'gone.png'}: no such file\n"
    verbose = subprocess.run([*cmd, "--verbose"], capture_output=True, text=True, timeout=120)
    assert "INFO: Created TensorFlow Lite XNNPACK delegate" in verbose.stderr
