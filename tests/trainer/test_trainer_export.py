"""trainer.export: ONNX files that onnxruntime runs exactly like torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from trainer.errors import TrainerError
from trainer.export import CLASSIFIER_IO, export_models, verify_onnx
from trainer.models import DigitClassifier
from trainer.train import TrainedModels


def test_export_when_models_are_trained_onnx_matches_torch_within_1e4(
    trained: tuple[TrainedModels, Path], tmp_path: Path
) -> None:
    models, _ = trained
    diffs = export_models(models, tmp_path)
    assert max(diffs.values()) <= 1e-4
    rng = np.random.default_rng(1)
    for key, net, batch, shape in (
        ("detector", models.detector, 2, (1, 96, 96)),
        ("classifier", models.classifier, 5, (1, 28, 28)),
    ):
        sess = ort.InferenceSession(
            str(tmp_path / f"{key}.onnx"), providers=["CPUExecutionProvider"]
        )
        inp = sess.get_inputs()[0]
        assert inp.shape[0] == "batch"  # dynamic batch axis
        x = rng.random((batch, *shape), dtype=np.float32)
        got = sess.run(None, {inp.name: x})[0]
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
        assert np.abs(got - want).max() <= 1e-4
    det = ort.InferenceSession(str(tmp_path / "detector.onnx"), providers=["CPUExecutionProvider"])
    assert det.get_outputs()[0].shape == ["batch", 5, 144]


def test_verify_onnx_when_file_is_another_model_raises(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a, b = DigitClassifier().eval(), DigitClassifier().eval()
    export_models_path = tmp_path / "a.onnx"
    from trainer.export import export_onnx

    export_onnx(a, export_models_path, *CLASSIFIER_IO)
    with pytest.raises(TrainerError, match="differs from torch"):
        verify_onnx(b, export_models_path, CLASSIFIER_IO[2])
