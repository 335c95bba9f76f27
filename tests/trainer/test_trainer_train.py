"""trainer.train: device-path inputs, copy-paste data, and what a short training achieves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.pipeline.graph import load_pipeline_spec
from runtime.pipeline.preprocess import crop_box, preprocess
from trainer.data import LAB_STYLE, Frame, Style
from trainer.errors import TrainerError
from trainer.models import DigitDetector
from trainer.source import pipeline_yaml
from trainer.train import (
    AnnotatedFrame,
    TrainedModels,
    TrainParams,
    classifier_input,
    load_checkpoint,
    synthesize_frames,
    train_models,
)

MakeFrames = Callable[[str, Style, int, int], list[Frame]]
TINY = TrainParams(
    detector_steps=3,
    classifier_steps=3,
    synthetic_per_frame=0.5,
    views_per_digit=2,
    detector_batch=4,
    classifier_batch=8,
)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def _decode(out: np.ndarray, threshold: float = 0.35, nms: float = 0.3) -> list[tuple[float, ...]]:
    """Decode one YOLOv8-layout [5, 144] output: threshold, then greedy NMS."""
    cx, cy, w, h, score = out
    kept: list[tuple[float, ...]] = []
    for i in np.argsort(-score):
        if score[i] < threshold:
            break
        box = (cx[i] - w[i] / 2, cy[i] - h[i] / 2, cx[i] + w[i] / 2, cy[i] + h[i] / 2)
        if all(_iou(box, k) <= nms for k in kept):
            kept.append(box)
    return kept


def _annotated(frames: list[Frame]) -> list[AnnotatedFrame]:
    return [AnnotatedFrame(f.image, f.boxes, f.labels) for f in frames]


def test_classifier_input_when_built_is_exactly_the_device_pipeline_input(
    lab_holdout: list[Frame],
) -> None:
    stage = load_pipeline_spec(pipeline_yaml()).stages[1]
    fr = lab_holdout[0]
    crop = crop_box(fr.image, fr.boxes[0], stage.crop)
    assert crop is not None
    device, _ = preprocess(crop, stage.pre)
    mine = classifier_input(fr.image, fr.boxes[0])
    assert mine is not None and mine.shape == (1, 28, 28)
    assert np.array_equal(device[0], mine)


def test_classifier_when_briefly_trained_is_clearly_above_chance_on_held_out_crops(
    trained: tuple[TrainedModels, Path], lab_holdout: list[Frame]
) -> None:
    models, _ = trained
    xs, ys = [], []
    for fr in lab_holdout:
        for box, label in zip(fr.boxes, fr.labels, strict=True):
            x = classifier_input(fr.image, box)
            assert x is not None
            xs.append(x)
            ys.append(label)
    with torch.no_grad():
        pred = models.classifier(torch.from_numpy(np.stack(xs))).argmax(1).numpy()
    accuracy = float((pred == np.asarray(ys)).mean())
    assert accuracy > 0.6, accuracy  # chance is 0.1


def test_detector_when_briefly_trained_finds_most_digits_at_iou_half(
    trained: tuple[TrainedModels, Path], lab_holdout: list[Frame]
) -> None:
    models, _ = trained
    hits = total = extra = 0
    for fr in lab_holdout:
        x = torch.from_numpy(
            preprocess(fr.image, load_pipeline_spec(pipeline_yaml()).stages[0].pre)[0]
        )
        with torch.no_grad():
            out = models.detector(x).numpy()
        assert out.shape == (1, 5, 144)
        found = _decode(out[0])  # frames are 96×96: input pixels are frame pixels
        total += len(fr.boxes)
        hits += sum(any(_iou(b, f) > 0.5 for f in found) for b in fr.boxes)
        extra += max(0, len(found) - len(fr.boxes))
    assert hits / total > 0.8, (hits, total)
    assert extra < total * 0.3


def test_train_models_when_same_seed_gives_identical_weights(make_frames: MakeFrames) -> None:
    frames = _annotated(make_frames("seed", LAB_STYLE, 6, 21))
    a = train_models(frames, None, TINY)
    b = train_models(frames, None, TINY)
    for key, value in a.detector.state_dict().items():
        assert torch.equal(value, b.detector.state_dict()[key]), key
    for key, value in a.classifier.state_dict().items():
        assert torch.equal(value, b.classifier.state_dict()[key]), key


def test_train_models_when_warm_started_begins_from_the_checkpoint(
    trained: tuple[TrainedModels, Path], make_frames: MakeFrames
) -> None:
    models, ckpt = trained
    frames = _annotated(make_frames("seed", LAB_STYLE, 6, 22))
    still = TrainParams(
        warm_detector_steps=2,
        warm_classifier_steps=2,
        warm_lr=1e-9,
        synthetic_per_frame=0.5,
        views_per_digit=2,
    )
    warm = train_models(frames, ckpt, still)
    assert warm.metrics["warm_start"] == 1.0
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        # BatchNorm running stats move a little even at lr≈0; the weights do not.
        w0 = models.classifier.state_dict()["classifier.5.weight"]
        w1 = warm.classifier.state_dict()["classifier.5.weight"]
        assert torch.allclose(w0, w1, atol=1e-6)
        h0 = models.detector.state_dict()["head.weight"]
        assert torch.allclose(h0, warm.detector.state_dict()["head.weight"], atol=1e-6)
        assert not torch.allclose(h0, DigitDetector().head.weight, atol=1e-3)
        assert warm.classifier(x).shape == (2, 10)


def test_train_models_when_no_digit_is_labelled_raises() -> None:
    empty = AnnotatedFrame(np.zeros((96, 96, 3), np.uint8), [], [])
    with pytest.raises(TrainerError, match="no labelled digits"):
        train_models([empty], None, TINY)


def test_load_checkpoint_when_folder_is_empty_raises(tmp_path: Path) -> None:
    with pytest.raises(TrainerError, match="checkpoint missing"):
        load_checkpoint(tmp_path)


def test_load_checkpoint_when_file_is_not_a_state_dict_raises(tmp_path: Path) -> None:
    (tmp_path / "detector.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "classifier.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainerError, match="not a detector checkpoint"):
        load_checkpoint(tmp_path)


def test_synthesize_frames_when_pasting_keeps_boxes_inside_disjoint_and_labelled(
    make_frames: MakeFrames,
) -> None:
    source = _annotated(make_frames("seed", LAB_STYLE, 10, 23))
    made = synthesize_frames(source, np.random.default_rng(0), 30)
    assert len(made) == 30
    known = {lbl for f in source for lbl in f.labels}
    for fr in made:
        assert fr.image.shape == (96, 96, 3) and len(fr.boxes) == len(fr.labels)
        assert set(fr.labels) <= known
        for i, (x1, y1, x2, y2) in enumerate(fr.boxes):
            assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
            assert all(_iou(fr.boxes[i], b) == 0 for b in fr.boxes[i + 1 :])


def test_train_params_when_unknown_key_is_given_raises() -> None:
    assert TrainParams.from_dict({"detector_steps": "5"}).detector_steps == 5
    with pytest.raises(TrainerError, match="unknown training parameter"):
        TrainParams.from_dict({"epochs": 3})
