"""Real photographs cut into scenes, and the ways several cameras see one scene.

The photos ship with installed packages (scikit-learn's ``china.jpg`` and ``flower.jpg``,
matplotlib's ``grace_hopper.jpg``); a scene is a half-size crop of one of them. A *copy* of a
scene is what another camera (or the same one later) sends: recompressed, brighter, noisier or
at half the resolution; a *look-alike* is the same scene shifted by a tenth (the view moved):
not a near duplicate, yet close to it.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
import sklearn
from PIL import Image, ImageEnhance

PHOTOS = [
    Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
    Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg",
    Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg",
]
_CORNERS = [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5), (0.25, 0.25)]


def scene(k: int) -> Image.Image:
    """Scene ``k`` (0..14): one of five half-size crops of one of the three photos."""
    photo = Image.open(PHOTOS[k // 5]).convert("RGB")
    w, h = photo.size
    fx, fy = _CORNERS[k % 5]
    box = (int(fx * w), int(fy * h), int(fx * w + w / 2), int(fy * h + h / 2))
    return photo.crop(box)


def jpeg(im: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def copy_of(im: Image.Image, how: str, seed: int = 0) -> bytes:
    """A near-identical copy as another camera sends it: ``q50``, ``bright``, ``noise``,
    ``half``."""
    if how == "q50":
        return jpeg(im, 50)
    if how == "bright":
        return jpeg(ImageEnhance.Brightness(im).enhance(1.2))
    if how == "noise":
        a = np.asarray(im).astype(np.int16)
        a = a + np.random.default_rng(seed).integers(-12, 13, a.shape)
        return jpeg(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)))
    if how == "half":
        return jpeg(im.resize((im.width // 2, im.height // 2)))
    raise ValueError(how)


def look_alike(im: Image.Image) -> bytes:
    """The same scene with the view moved by a tenth of its width."""
    w, h = im.size
    return jpeg(im.crop((int(w * 0.1), 0, w, h)).resize((w, h)))
