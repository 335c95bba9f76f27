"""Fixtures for the trainer tests: the real digits, small frame sets, and one short training run
shared by every test that needs trained networks (training once keeps the suite fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.data import FIELD_STYLE, LAB_STYLE, Frame, compose_frame, load_mnist, split_pools

# A short run: enough to be clearly better than chance, small enough for a 2-core CI box.
QUICK = {
    "detector_steps": 140,
    "classifier_steps": 120,
    "warm_detector_steps": 10,
    "warm_classifier_steps": 10,
    "synthetic_per_frame": 1.0,
    "views_per_digit": 10,
}


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    images, labels = load_mnist()
    return images, labels, split_pools(len(labels), seed=0)


def frames_of(digits_: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]], pool: str,
              style: object, n: int, seed: int) -> list[Frame]:
    images, labels, pools = digits_
    rng = np.random.default_rng(seed)
    idx = pools[pool]
    return [compose_frame(rng, images[idx], labels[idx], style) for _ in range(n)]  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def lab_train(digits: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]) -> list[Frame]:
    return frames_of(digits, "seed", LAB_STYLE, 80, seed=1)


@pytest.fixture(scope="session")
def lab_holdout(digits: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]) -> list[Frame]:
    return frames_of(digits, "holdout", LAB_STYLE, 40, seed=2)


@pytest.fixture(scope="session")
def field_holdout(digits: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]) -> list[Frame]:
    return frames_of(digits, "holdout", FIELD_STYLE, 40, seed=3)


@pytest.fixture(scope="session")
def trained(lab_train: list[Frame], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from trainer.train import AnnotatedFrame, TrainParams, train_models

    annotated = [AnnotatedFrame(f.image, f.boxes, f.labels) for f in lab_train]
    models = train_models(annotated, None, TrainParams(**QUICK))  # type: ignore[arg-type]
    ckpt: Path = tmp_path_factory.mktemp("ckpt")
    models.save_checkpoint(ckpt)
    return models, ckpt
