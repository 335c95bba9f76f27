"""Fixtures for the trainer tests: the real digits, small frame sets, and one short training run
shared by every test that needs trained networks (training once keeps the suite fast)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from trainer.data import (
    FIELD_STYLE,
    LAB_STYLE,
    Frame,
    Style,
    compose_frame,
    load_mnist,
    split_pools,
)
from trainer.source import write_bundle_source
from trainer.train import AnnotatedFrame, TrainedModels, TrainParams, train_models

Digits = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]

# A short run: enough to be clearly better than chance, small enough for a 2-core CI box.
QUICK = TrainParams(
    detector_steps=140,
    classifier_steps=120,
    warm_detector_steps=10,
    warm_classifier_steps=10,
    synthetic_per_frame=1.0,
    views_per_digit=10,
)


def frames_of(digits: Digits, pool: str, style: Style, n: int, seed: int) -> list[Frame]:
    images, labels, pools = digits
    rng = np.random.default_rng(seed)
    idx = pools[pool]
    return [compose_frame(rng, images[idx], labels[idx], style) for _ in range(n)]


def annotated(frames: list[Frame]) -> list[AnnotatedFrame]:
    return [AnnotatedFrame(f.image, f.boxes, f.labels) for f in frames]


MakeFrames = Callable[[str, Style, int, int], list[Frame]]


@pytest.fixture(scope="session")
def make_frames(digits: Digits) -> MakeFrames:
    """``make_frames(pool, style, n, seed)``: n composed frames from one digit pool."""
    return lambda pool, style, n, seed: frames_of(digits, pool, style, n, seed)


@pytest.fixture(scope="session")
def quick() -> TrainParams:
    return QUICK


@pytest.fixture(scope="session")
def digits() -> Digits:
    images, labels = load_mnist()
    return images, labels, split_pools(len(labels), seed=0)


@pytest.fixture(scope="session")
def lab_train(digits: Digits) -> list[Frame]:
    return frames_of(digits, "seed", LAB_STYLE, 80, seed=1)


@pytest.fixture(scope="session")
def lab_holdout(digits: Digits) -> list[Frame]:
    return frames_of(digits, "holdout", LAB_STYLE, 40, seed=2)


@pytest.fixture(scope="session")
def field_holdout(digits: Digits) -> list[Frame]:
    return frames_of(digits, "holdout", FIELD_STYLE, 40, seed=3)


@pytest.fixture(scope="session")
def trained(
    lab_train: list[Frame], tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainedModels, Path]:
    """One short cold-start training on 80 lab frames, and its checkpoint folder."""
    models = train_models(annotated(lab_train), None, QUICK)
    ckpt = tmp_path_factory.mktemp("ckpt")
    models.save_checkpoint(ckpt)
    return models, ckpt


@pytest.fixture(scope="session")
def trained_source(
    trained: tuple[TrainedModels, Path],
    lab_holdout: list[Frame],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """``trained`` written once as a bundle source folder (every format; tests only read it)."""
    models, _ = trained
    out = tmp_path_factory.mktemp("src") / "source"
    return write_bundle_source(out, models, [f.image for f in lab_holdout[:3]], {"run": "test"})
