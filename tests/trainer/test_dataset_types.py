"""The in-memory dataset contract: problems listed with their place, save/load round trip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from trainer.dataset_types import (
    BoxLabel,
    Dataset,
    DatasetError,
    DatasetItem,
    load_dataset,
    save_dataset,
)


def _png(w: int = 20, h: int = 10) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((h, w, 3), 80, np.uint8))
    assert ok
    return buf.tobytes()


def test_dataset_problems_when_annotations_are_bad_lists_every_one() -> None:
    ds = Dataset(
        classes=["cat", "dog"],
        items=[
            DatasetItem(id="a", image=_png(), width=20, height=10, label="cow"),
            DatasetItem(
                id="a",
                image=_png(),
                width=20,
                height=10,
                boxes=[BoxLabel.of([0, 0, 30, 5, "dog"]), BoxLabel.of([5, 5, 5, 8, "eel"])],
            ),
        ],
    )
    problems = ds.problems()
    assert any("unknown class 'cow'" in p for p in problems)
    assert any("duplicate id" in p for p in problems)
    assert any("outside the 20×10 image" in p for p in problems)
    assert any("empty box" in p for p in problems)
    assert any("unknown class 'eel'" in p for p in problems)
    with pytest.raises(DatasetError) as e:
        ds.check()
    assert len(e.value.problems) == 5


def test_dataset_save_load_when_images_are_bytes_round_trips(tmp_path: Path) -> None:
    ds = Dataset(
        name="pets",
        version="3",
        classes=["cat", "dog"],
        items=[
            DatasetItem(id="x", image=_png(), width=20, height=10, label="dog"),
            DatasetItem(
                id="y", image=_png(), width=20, height=10, boxes=[BoxLabel.of([1, 1, 9, 9, "cat"])]
            ),
        ],
    ).check()
    save_dataset(ds, tmp_path / "d")
    back, root = load_dataset(tmp_path / "d")
    assert back.classes == ds.classes and back.version == "3"
    assert isinstance(back.items[0].image, Path)
    assert back.items[0].load_bgr(root).shape == (10, 20, 3)
    assert back.items[1].boxes == ds.items[1].boxes
    assert back.counts_per_class() == {"cat": 1, "dog": 1}


def test_dataset_load_when_image_missing_names_the_file(tmp_path: Path) -> None:
    ds = Dataset(
        classes=["a"], items=[DatasetItem(id="z", image=Path("nope.png"), width=1, height=1)]
    )
    save_dataset(ds, tmp_path)
    back, root = load_dataset(tmp_path)
    with pytest.raises(DatasetError, match=r"nope\.png: image missing"):
        back.items[0].load_bgr(root)
