"""Novelty sampling: near-duplicate frames collapse onto the first one kept.

A static camera sends the same scene thousands of times; if that scene confuses the model,
pure uncertainty sampling fills the store with copies of it. Novelty compares a cheap
perceptual hash of each frame — :func:`dhash`, 64 bits: the frame in grey, shrunk to 9×8, one
bit per "is this pixel brighter than its right neighbour" — with the hashes of the last
``memory`` frames the store **kept** (the writer calls :meth:`NoveltyStrategy.kept`). With
``d`` the smallest Hamming distance to those, the score is 0 when ``d <= radius`` (a near
duplicate), rising linearly to 1 at ``distinct`` bits and beyond. With nothing kept yet the
score is 1. The hash is computed by the store writer in its own thread, never on the frame
path, and only when this strategy is configured; a frame without a hash in its context scores
0.5 (unknown), one with an error :data:`~runtime.sampling.base.ERROR_SCORE`. State is bounded:
a ring of ``memory`` 64-bit integers, scanned linearly (256 XOR+popcounts per frame by default).
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.pipeline.prediction import Prediction
from runtime.sampling.base import ERROR_SCORE, SampleContext, StrategyOptions, parse_params

__all__ = ["NAME", "NoveltyOptions", "NoveltyStrategy", "create", "dhash", "hamming"]

NAME = "novelty"

UNKNOWN_SCORE = 0.5
"""Score of a frame whose context carries no image hash."""


def dhash(frame: np.ndarray) -> int:
    """64-bit difference hash of an image (grey or BGR/BGRA, any size >= 1×1).

    A strided view first brings a large frame down to at most ~4× the 9×8 grid (no copy),
    so the colour conversion and area resize touch a few thousand pixels, not the whole
    frame: tens of microseconds, and no use of OpenCV's thread pool, which the frame path's
    own pre-processing needs.
    """
    img = np.asarray(frame)
    if img.ndim >= 2 and img.shape[0] > 0 and img.shape[1] > 0:
        sy, sx = max(1, img.shape[0] // 32), max(1, img.shape[1] // 36)
        img = np.ascontiguousarray(img[::sy, ::sx])
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    elif img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    elif img.ndim == 3:
        img = img[:, :, 0]
    small = cv2.resize(img, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Number of differing bits."""
    return (a ^ b).bit_count()


class NoveltyOptions(BaseModel):
    """``sampling.novelty``."""

    model_config = ConfigDict(extra="forbid")

    radius: int = Field(
        default=6, ge=0, le=63, description="hashes this close (bits) are the same scene"
    )
    distinct: int = Field(
        default=16, ge=1, le=64, description="distance (bits) from which a frame scores 1"
    )
    memory: int = Field(
        default=256, ge=1, le=65536, description="how many recently kept hashes are remembered"
    )

    @model_validator(mode="after")
    def _ordered(self) -> NoveltyOptions:
        if self.distinct <= self.radius:
            raise ValueError("distinct must be greater than radius")
        return self


class NoveltyStrategy:
    """Distance of the frame's hash to the nearest recently kept one."""

    name = NAME
    needs_image_hash = True

    def __init__(self, options: NoveltyOptions) -> None:
        self.options = options
        self._recent: deque[int] = deque(maxlen=options.memory)

    def score(self, prediction: Prediction, context: SampleContext | None = None) -> float:
        if prediction.error is not None:
            return ERROR_SCORE
        h = context.image_hash if context is not None else None
        if h is None:
            return UNKNOWN_SCORE
        if not self._recent:
            return 1.0
        d = min(hamming(h, k) for k in self._recent)
        r, full = self.options.radius, self.options.distinct
        if d <= r:
            return 0.0
        return min(1.0, (d - r) / (full - r))

    def kept(self, prediction: Prediction, context: SampleContext | None) -> None:
        if context is not None and context.image_hash is not None:
            self._recent.append(context.image_hash)


def create(options: StrategyOptions) -> NoveltyStrategy:
    return NoveltyStrategy(parse_params(NoveltyOptions, NAME, options))
