"""Training tasks: one module per task, each with ``train(spec, dataset, root, device, init,
on_epoch) -> TaskResult``, registered by name in :data:`TASKS`.

* :mod:`trainer.tasks.classify` — whole-image classifier
* :mod:`trainer.tasks.detect` — FCOS-style detector, device-decoded as ``yolo_v8``
* :mod:`trainer.tasks.detect_then_classify` — class-agnostic detector, then a classifier on
  each detection's crop (the digit reader's shape)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainer.tasks import classify, detect, detect_then_classify

__all__ = ["TASKS"]

TASKS: dict[str, Callable[..., Any]] = {
    "classify": classify.train,
    "detect": detect.train,
    "detect_then_classify": detect_then_classify.train,
}
