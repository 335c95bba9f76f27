"""Pre-processing plug-ins for shadow tests, not a test module: :func:`shadowkit.build` ships
this file in the bundle as ``plugins/shadow_plugins.py`` and names ``<that file>:<function>``.

Each computes exactly what the built-in ``pre`` spec computes (so a candidate using it agrees
with production), except on a *poison* frame — one whose pixel (25, 25) is at least 250 — where
it misbehaves: crashes the process with SIGSEGV, sleeps forever, or raises.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from runtime.pipeline.plugins import PreContext
from runtime.pipeline.preprocess import preprocess


def _poison(image: np.ndarray) -> bool:
    return bool(image[25, 25].min() >= 250)


def _normal(image: np.ndarray, ctx: PreContext) -> np.ndarray:
    return preprocess(image, ctx.spec.model_copy(update={"plugin": None}))[0]


def segv_on_poison(image: np.ndarray, ctx: PreContext) -> np.ndarray:
    if _poison(image):
        os.kill(os.getpid(), signal.SIGSEGV)
    return _normal(image, ctx)


def hang_on_poison(image: np.ndarray, ctx: PreContext) -> np.ndarray:
    while _poison(image):
        time.sleep(3600)
    return _normal(image, ctx)


def raise_on_poison(image: np.ndarray, ctx: PreContext) -> np.ndarray:
    if _poison(image):
        raise RuntimeError("poison frame")
    return _normal(image, ctx)
