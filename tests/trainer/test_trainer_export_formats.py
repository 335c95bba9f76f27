"""One trained network, three formats, three engines: the same numbers and the same labels.

The shared short training run (``trained``) is exported by
:func:`trainer.source.write_bundle_source` to ONNX, OpenVINO IR and TFLite. Each file is run
through the device's own backend (``runtime.backends.load_backend``) on 200 real digits
(MNIST, ``trainer.data.load_mnist``):
fp32 outputs must agree within 1e-4 of ONNX Runtime and of torch, with 100 % top-1 agreement.
Then the bundle built from that source is loaded on each engine and must read the same digits
on held-out frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from runtime.backends import BackendOptions, load_backend
from runtime.bundle.build import build_bundle
from runtime.bundle.loader import load_bundle
from trainer.data import Frame, load_mnist
from trainer.errors import TrainerError
from trainer.export_formats import export_openvino, export_tflite, tflite_unavailable_reason
from trainer.train import TrainedModels

pytestmark = pytest.mark.skipif(
    tflite_unavailable_reason() is not None,
    reason=f"TFLite export unavailable: {tflite_unavailable_reason()}",
)

ENGINES = {"onnxruntime": "onnx", "openvino": "xml", "litert": "tflite"}
N_DIGITS = 200
TOLERANCE = 1e-4


@pytest.fixture
def source(trained_source: Path) -> Path:
    return trained_source


@pytest.fixture(scope="module")
def digit_inputs() -> dict[str, np.ndarray]:
    """200 real digits as the classifier's [N,1,28,28] and the detector's [N,1,96,96] input."""
    images = load_mnist()[0][:N_DIGITS]
    crops = images[:, None].astype(np.float32) / 255.0
    frames = np.stack([cv2.resize(im, (96, 96), interpolation=cv2.INTER_LINEAR) for im in images])
    return {"classifier": crops, "detector": frames[:, None].astype(np.float32) / 255.0}


def _run(engine: str, path: Path, x: np.ndarray) -> np.ndarray:
    be = load_backend(engine, path, BackendOptions(threads=1))
    try:
        return be.run({be.inputs[0].name: x})[0]
    finally:
        be.close()


def test_source_when_written_carries_every_format_and_notes_their_diffs(source: Path) -> None:
    models = sorted(p.name for p in (source / "models").iterdir())
    assert models == [
        "classifier.bin", "classifier.onnx", "classifier.tflite", "classifier.xml",
        "detector.bin", "detector.onnx", "detector.tflite", "detector.xml",
    ]  # fmt: skip
    notes = json.loads((source / "notes.json").read_text())
    for key in ("openvino.classifier", "openvino.detector", "tflite.classifier", "tflite.detector"):
        assert float(notes[f"max_diff.{key}"]) <= TOLERANCE


@pytest.mark.parametrize("key", ["classifier", "detector"])
def test_three_engines_agree_within_1e4_and_on_top1_when_run_on_200_digits(
    source: Path,
    trained: tuple[TrainedModels, Path],
    digit_inputs: dict[str, np.ndarray],
    key: str,
) -> None:
    x = digit_inputs[key]
    net = getattr(trained[0], key).eval()
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    outs = {eng: _run(eng, source / "models" / f"{key}.{ext}", x) for eng, ext in ENGINES.items()}
    # Top-1: the digit for the classifier, the best cell's score (row 4) for the detector.
    scores = (lambda o: o) if key == "classifier" else (lambda o: o[:, 4, :])
    ref_top1 = scores(outs["onnxruntime"]).argmax(axis=1)
    assert (ref_top1 == scores(want).argmax(axis=1)).all()
    for eng, got in outs.items():
        assert got.shape == want.shape, eng
        assert float(np.max(np.abs(got - want))) <= TOLERANCE, eng
        assert float(np.max(np.abs(got - outs["onnxruntime"]))) <= TOLERANCE, eng
        assert (scores(got).argmax(axis=1) == ref_top1).all(), eng


def test_bundle_reads_the_same_digits_when_loaded_on_each_engine(
    source: Path, lab_holdout: list[Frame], tmp_path: Path
) -> None:
    manifest = build_bundle(source, tmp_path / "bundle", "digits", 1)
    assert manifest.models["classifier"].alternates == {
        "openvino": "models/classifier.xml",
        "tflite": "models/classifier.tflite",
    }
    assert "models/classifier.bin" in manifest.files
    readings: dict[str, list[list[tuple[str | None, tuple[float, ...] | None]]]] = {}
    scores: dict[str, list[float]] = {}
    for engine in ENGINES:
        loaded = load_bundle(tmp_path / "bundle", engine, BackendOptions(threads=1))
        try:
            assert {m.name for m in loaded.pipeline.models.values()} == {engine}
            preds = [loaded.pipeline.run(f.image, str(i)) for i, f in enumerate(lab_holdout)]
        finally:
            loaded.close()
        assert all(p.error is None for p in preds)
        readings[engine] = [
            [(it.label, it.box) for it in p.stages["classifier"].items] for p in preds
        ]
        scores[engine] = [it.score for p in preds for it in p.stages["classifier"].items]
    assert sum(len(r) for r in readings["onnxruntime"]) > len(lab_holdout)  # it reads digits
    for engine in ("openvino", "litert"):
        assert [[lab for lab, _ in r] for r in readings[engine]] == [
            [lab for lab, _ in r] for r in readings["onnxruntime"]
        ], engine
        np.testing.assert_allclose(scores[engine], scores["onnxruntime"], atol=1e-4)


def test_export_raises_trainer_error_when_the_onnx_file_is_corrupt(
    trained: tuple[TrainedModels, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "classifier.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(TrainerError, match="OpenVINO IR conversion failed"):
        export_openvino(trained[0].classifier, bad, tmp_path / "classifier.xml", (1, 28, 28))


def test_export_tflite_raises_trainer_error_when_the_network_does_not_lower(
    tmp_path: Path,
) -> None:
    class Dynamic(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if float(x.sum()) > 0:  # data-dependent control flow: torch.export refuses it
                return x * 2
            return x

    with pytest.raises(TrainerError, match="TFLite export of Dynamic failed"):
        export_tflite(Dynamic(), tmp_path / "dyn.tflite", (1, 4, 4))
