"""How the demo's uncertainty arm may order the hub's annotation queue before the oracle labels.

By default (``selection="hub"``) the oracle takes the hub's queue as it comes: ranked across
devices by the devices' margin priority. ``DemoSettings.selection`` may name a strategy of
:mod:`trainer.selection` instead (``margin``, ``entropy``, ``least_confidence``, ``random``,
each optionally ``+balance``), applied to the queue's candidates: each frame is read as the
class vector of its most uncertain digit (the device's ``max`` reducer), and class balance deals
the picks over predicted digits, the digit with the fewest labels in the arm so far first.
The diversity strategies need embeddings, which the samples do not carry, so they are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trainer.selection import DIVERSITY, STRATEGIES, Pool, margin_scores, select

__all__ = ["DEFAULT", "check_selection", "frame_probs", "order_queue"]

DEFAULT = "hub"
"""Take the hub's queue order as it comes."""


def check_selection(name: str) -> None:
    """ValueError when ``name`` is not ``hub`` or a non-diversity strategy (``+balance``)."""
    base, _, extra = name.partition("+")
    if name == DEFAULT:
        return
    if base not in STRATEGIES or base in DIVERSITY or extra not in ("", "balance"):
        known = [s for s in STRATEGIES if s not in DIVERSITY]
        raise ValueError(
            f"demo selection {name!r}: expected hub or one of {', '.join(known)} (+balance)"
        )


def frame_probs(meta: dict[str, Any], classes: int) -> np.ndarray:
    """The class vector of the frame's most uncertain digit (uniform when it has none)."""
    stages = (meta.get("prediction") or {}).get("stages") or {}
    items = list(stages.values())[-1].get("items") or [] if stages else []
    vectors = [
        np.asarray(it["scores"], dtype=np.float64)
        for it in items
        if isinstance(it, dict)
        and isinstance(it.get("scores"), list)
        and len(it["scores"]) == classes
    ]
    if not vectors:
        return np.full(classes, 1.0 / classes)
    stacked = np.stack(vectors)
    return stacked[int(np.argmax(margin_scores(stacked)))]


def order_queue(
    queue: Sequence[dict[str, Any]],
    selection: str,
    labelled_classes: Sequence[int],
    classes: int = 10,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The queue's samples in the order ``selection`` prefers them (all of them)."""
    check_selection(selection)
    if selection == DEFAULT or not queue:
        return list(queue)
    base, _, extra = selection.partition("+")
    pool = Pool(
        np.stack([frame_probs(m, classes) for m in queue]),
        labelled_classes=np.asarray(labelled_classes, dtype=np.int64),
    )
    order = select(base, pool, len(queue), seed=seed, balance=extra == "balance")
    return [queue[int(i)] for i in order]
