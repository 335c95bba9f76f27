"""Plug-ins the pipeline tests load as a file (``pipeline_plugins.py:<name>``); not a test."""

from __future__ import annotations

import cv2
import numpy as np

from runtime.pipeline.plugins import PreContext
from runtime.pipeline.postprocess import PostContext
from runtime.pipeline.prediction import Item


def gray_pre(image: np.ndarray, ctx: PreContext) -> np.ndarray:
    """Gray, resized, scaled to [0, 1]; returned *without* the batch axis (the pipeline adds it)."""
    tw, th = ctx.input_size
    gray = cv2.cvtColor(cv2.resize(image, (tw, th)), cv2.COLOR_BGR2GRAY)
    return (gray.astype(np.float32) / 255.0)[None]


def left_half(outputs: list[np.ndarray], ctx: PostContext) -> list[Item]:
    """One detection: the left half of the image, score from params."""
    w, h = ctx.image_size
    return [
        Item(
            class_id=0,
            label=ctx.classes[0],
            score=float(ctx.params.get("score", 1.0)),
            box=(0.0, 0.0, w / 2, float(h)),
        )
    ]


def not_a_list(outputs: list[np.ndarray], ctx: PostContext) -> object:
    return {"oops": True}
