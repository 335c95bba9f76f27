"""leanloop/demo_select.py: how the demo's uncertainty arm may order the hub's queue."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from leanloop.demo_select import check_selection, frame_probs, order_queue


def _meta(sid: str, *vectors: list[float]) -> dict[str, Any]:
    items = [{"label": str(int(np.argmax(v))), "scores": v} for v in vectors]
    return {"id": sid, "prediction": {"stages": {"detector": {"items": []}, "c": {"items": items}}}}


def _vec(top: int, p: float) -> list[float]:
    v = [(1 - p) / 2 if k in (top, (top + 1) % 3) else 0.0 for k in range(3)]
    v[top] = p
    return v


def test_frame_probs_when_several_digits_takes_the_most_uncertain() -> None:
    meta = _meta("a", _vec(0, 0.9), _vec(2, 0.5), _vec(1, 0.8))
    assert frame_probs(meta, 3).tolist() == _vec(2, 0.5)
    assert frame_probs({"prediction": {"stages": {}}}, 3).tolist() == [1 / 3] * 3
    assert frame_probs(_meta("b", [0.5, 0.5]), 3).tolist() == [1 / 3] * 3  # wrong length


def test_order_queue_when_hub_keeps_the_order_else_applies_the_strategy() -> None:
    queue = [_meta("a", _vec(0, 0.9)), _meta("b", _vec(0, 0.5)), _meta("c", _vec(1, 0.6))]
    assert [m["id"] for m in order_queue(queue, "hub", [], classes=3)] == ["a", "b", "c"]
    assert [m["id"] for m in order_queue(queue, "margin", [], classes=3)] == ["b", "c", "a"]
    # class 0 already has labels: balance serves predicted class 1 first
    assert [m["id"] for m in order_queue(queue, "margin+balance", [0, 0], classes=3)] == [
        "c",
        "b",
        "a",
    ]


@pytest.mark.parametrize("name", ["kcenter", "cluster_margin", "nope", "margin+what"])
def test_check_selection_when_strategy_cannot_run_in_the_demo_raises(name: str) -> None:
    with pytest.raises(ValueError, match="demo selection"):
        check_selection(name)
