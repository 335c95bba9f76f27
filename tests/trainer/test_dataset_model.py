"""The one dataset model: problems listed with their place, the native folder's save/load
round trip (items made in memory, files inside and outside the folder)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from trainer.datasets.model import Box, Dataset, DatasetError, Item
from trainer.datasets.native import load_dataset, save_dataset


def _png(w: int = 20, h: int = 10) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((h, w, 3), 80, np.uint8))
    assert ok
    return buf.tobytes()


def test_dataset_problems_when_annotations_are_bad_lists_every_one() -> None:
    ds = Dataset(
        task="detection",
        classes=["cat", "dog"],
        items=[
            Item(path="a.png", id="a", data=_png(), width=20, height=10, label="cow"),
            Item(
                path="b.png",
                id="a",
                data=_png(),
                width=20,
                height=10,
                boxes=[Box.of([0, 0, 30, 5, "dog"]), Box.of([5, 5, 5, 8, "eel"])],
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
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(_png(8, 4))
    ds = Dataset(
        task="classification",
        name="pets",
        version="3",
        classes=["cat", "dog"],
        items=[
            Item(path="images/x.png", id="x", data=_png(), width=20, height=10, label="dog"),
            Item(
                path="images/y.png", id="y", data=_png(), width=20, height=10,
                boxes=[Box.of([1, 1, 9, 9, "cat"])],
            ),
            Item(path="e.png", id="e", source=outside, width=8, height=4, label="cat"),
        ],
    ).check()  # fmt: skip
    save_dataset(ds, tmp_path / "d")
    back, root = load_dataset(tmp_path / "d")
    assert back.classes == ds.classes and back.version == "3" and back.task == "classification"
    assert [i.id for i in back.items] == ["x", "y", "e"] and back.items[0].data is None
    assert (root / back.items[0].path).is_file()
    assert back.items[0].load_bgr(root).shape == (10, 20, 3)
    assert back.items[2].source == outside and back.items[2].load_bgr(root).shape == (4, 8, 3)
    assert back.items[1].boxes == ds.items[1].boxes
    assert back.counts() == {"cat": 2, "dog": 1}


def test_dataset_load_when_image_missing_names_the_file(tmp_path: Path) -> None:
    ds = Dataset(
        task="detection", classes=["a"], items=[Item(path="nope.png", id="z", width=1, height=1)]
    )
    save_dataset(ds, tmp_path)
    back, root = load_dataset(tmp_path)
    with pytest.raises(DatasetError, match=r"nope\.png: image missing"):
        back.items[0].load_bgr(root)
