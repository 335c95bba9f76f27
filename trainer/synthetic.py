"""Small real datasets, made locally, in the native dataset layout (nothing is downloaded):

* :func:`digits_dataset` — scikit-learn's real 8×8 handwritten digits, upscaled (classification);
* :func:`digit_frames_dataset` — the demo's lab frames: real MNIST digits composed into 96×96
  frames with tight boxes (detection, detect-then-classify);
* :func:`shapes_dataset` — filled circles and squares (and, when asked, triangles) drawn with
  OpenCV at known places on a noisy background (detection, exact boxes).

Tests, the benchmark and the presets use them;
``python -m trainer.synthetic digits|digit-frames|shapes DIR`` writes one for ``leanloop train``
(see ``trainer/presets/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from trainer.datasets.model import Box, Dataset, Item
from trainer.datasets.native import save_dataset

__all__ = ["SHAPES", "digit_frames_dataset", "digits_dataset", "main", "shapes_dataset"]

SHAPES = ["circle", "square"]
DRAWABLE = ("circle", "square", "triangle")


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def digits_dataset(folder: Path, classes: tuple[int, ...] = (0, 1, 7), per_class: int = 30) -> Path:
    """Real 8×8 digits (scikit-learn), upscaled to 32×32 BGR, a few classes."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    items = []
    for c in classes:
        for k, i in enumerate(np.flatnonzero(bunch.target == c)[:per_class]):
            img = np.clip(bunch.images[i] * 16, 0, 255).astype(np.uint8)
            img = cv2.cvtColor(
                cv2.resize(img, (32, 32), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR
            )
            items.append(
                Item(
                    path=f"images/d{c}_{k}.png",
                    id=f"d{c}_{k}",
                    data=_png(img),
                    width=32,
                    height=32,
                    label=str(c),
                )
            )
    ds = Dataset(
        task="classification",
        name="digits-small",
        version="7",
        ontology_id="digits",
        classes=[str(c) for c in classes],
        items=items,
    )
    save_dataset(ds.check(), folder)
    return folder


def shapes_dataset(
    folder: Path,
    n: int = 48,
    size: int = 64,
    seed: int = 0,
    kinds: Sequence[str] = tuple(SHAPES),
) -> Path:
    """Frames with 1–2 filled shapes of ``kinds`` (any of :data:`DRAWABLE`) on a noisy
    background; boxes known exactly."""
    unknown = sorted(set(kinds) - set(DRAWABLE))
    if unknown or not kinds:
        raise ValueError(f"cannot draw {unknown or 'no shapes'}; drawable: {list(DRAWABLE)}")
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        img = rng.normal(40, 8, (size, size, 3)).clip(0, 255).astype(np.uint8)
        boxes: list[Box] = []
        for _ in range(int(rng.integers(1, 3))):
            s = int(rng.integers(12, 22))
            for _try in range(20):
                x, y = (int(v) for v in rng.integers(1, size - s - 1, 2))
                if all(x + s < b.x1 or b.x2 < x or y + s < b.y1 or b.y2 < y for b in boxes):
                    break
            else:
                continue
            kind = kinds[int(rng.integers(0, len(kinds)))]
            colour = tuple(int(v) for v in rng.integers(150, 255, 3))
            if kind == "circle":
                cv2.circle(img, (x + s // 2, y + s // 2), s // 2, colour, -1)
            elif kind == "square":
                cv2.rectangle(img, (x, y), (x + s - 1, y + s - 1), colour, -1)
            else:  # a triangle standing on its base, filling the box
                tri = np.array([[x + s // 2, y], [x, y + s - 1], [x + s - 1, y + s - 1]])
                cv2.fillPoly(img, [tri.astype(np.int32)], colour)
            boxes.append(Box(x1=x, y1=y, x2=x + s, y2=y + s, label=kind))
        items.append(
            Item(
                path=f"images/s{k}.png",
                id=f"s{k}",
                data=_png(img),
                width=size,
                height=size,
                boxes=boxes,
            )
        )
    ds = Dataset(
        task="detection",
        name="shapes",
        version="1",
        ontology_id="shapes",
        classes=list(kinds),
        items=items,
    )
    save_dataset(ds.check(), folder)
    return folder


def digit_frames_dataset(folder: Path, n: int = 300, seed: int = 0) -> Path:
    """The demo's lab frames (real MNIST digits composed on 96×96 frames, tight boxes)."""
    from trainer.data import LAB_STYLE, compose_frame, load_mnist

    images, labels = load_mnist()
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        fr = compose_frame(rng, images, labels, LAB_STYLE)
        boxes = [
            Box(x1=b[0], y1=b[1], x2=b[2], y2=b[3], label=str(c))
            for b, c in zip(fr.boxes, fr.labels, strict=True)
        ]
        h, w = fr.image.shape[:2]
        items.append(
            Item(
                path=f"images/f{k}.png",
                id=f"f{k}",
                data=_png(fr.image),
                width=w,
                height=h,
                boxes=boxes,
            )
        )
    ds = Dataset(
        task="detection",
        name="digit-frames",
        version=f"lab-{seed}-{n}",
        ontology_id="digits",
        classes=[str(d) for d in range(10)],
        items=items,
    )
    save_dataset(ds.check(), folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    """``python -m trainer.synthetic digits|digit-frames|shapes DIR``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m trainer.synthetic")
    ap.add_argument("kind", choices=("digits", "digit-frames", "shapes"))
    ap.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    if args.kind == "digits":
        digits_dataset(args.folder, classes=tuple(range(10)), per_class=100)
    elif args.kind == "digit-frames":
        digit_frames_dataset(args.folder)
    else:
        shapes_dataset(args.folder, n=200)
    print(f"wrote {args.folder / 'dataset.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
