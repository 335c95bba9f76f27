"""Small real datasets for the converter tests: PNG files on disk, built from Hypothesis draws."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from hypothesis import strategies as st

from trainer.datasets.model import Box, Dataset, Item

CLASS_NAMES = st.text(alphabet="abcdefghij", min_size=1, max_size=5)


def write_png(path: Path, width: int, height: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", img)
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png.tobytes())
    return path


@st.composite
def box_in(draw: st.DrawFn, width: int, height: int, classes: list[str]) -> Box:
    """A box inside a width x height image, corners on thousandths of a pixel."""
    x1 = draw(st.integers(0, width * 1000 - 1))
    x2 = draw(st.integers(x1 + 1, width * 1000))
    y1 = draw(st.integers(0, height * 1000 - 1))
    y2 = draw(st.integers(y1 + 1, height * 1000))
    return Box(
        x1=x1 / 1000, y1=y1 / 1000, x2=x2 / 1000, y2=y2 / 1000, label=draw(st.sampled_from(classes))
    )


@st.composite
def dataset_specs(draw: st.DrawFn, task: str, nested: bool = True) -> Dataset:
    """A dataset without image files yet (see :func:`materialise`)."""
    classes = draw(st.lists(CLASS_NAMES, min_size=1, max_size=4, unique=True))
    n = draw(st.integers(1, 4))
    items: list[Item] = []
    for k in range(n):
        w, h = draw(st.integers(4, 40)), draw(st.integers(4, 40))
        sub = draw(st.sampled_from(["", "a/"])) if nested else ""
        if task == "classification":
            label = draw(st.sampled_from(classes))
            path = f"{label}/{sub}img{k}.png" if nested else f"img{k}.png"
            items.append(Item(path=path, width=w, height=h, label=label))
        else:
            boxes = draw(st.lists(box_in(w, h, classes), max_size=3))
            items.append(Item(path=f"{sub}img{k}.png", width=w, height=h, boxes=boxes))
    return Dataset(
        task=task,  # type: ignore[arg-type]
        classes=classes,
        ontology_id="things",
        ontology_version=draw(st.integers(1, 5)),
        items=items,
    )


def materialise(ds: Dataset, root: Path) -> Dataset:
    """Write each item's image (random pixels of its size) under ``root`` and point at it."""
    items = []
    for n, it in enumerate(ds.items):
        src = write_png(root / it.path, it.width, it.height, seed=n)
        items.append(it.model_copy(update={"source": src}))
    return ds.model_copy(update={"items": items})
