"""The pure comparison: top-1 agreement, IoU box matching, flip matrix, histograms."""

from __future__ import annotations

import pytest

from runtime.pipeline.prediction import Item, Prediction, StageResult
from runtime.shadow.compare import (
    CONFIDENCE_EDGES,
    NONE_LABEL,
    Histogram,
    ShadowStats,
    compare,
    iou,
    match_boxes,
)

Box = tuple[float, float, float, float]


def _pred(items: list[tuple[str, float, Box | None]], kind: str = "detection") -> Prediction:
    its = [Item(class_id=0, label=lbl, score=s, box=b) for lbl, s, b in items]
    return Prediction(
        frame_id="f",
        stages={"det": StageResult("det", kind, its, 3.0)},
        latency_ms=4.0,
    )


A: Box = (0.0, 0.0, 10.0, 10.0)
A2: Box = (1.0, 0.0, 11.0, 10.0)  # IoU with A = 90/110
B: Box = (50.0, 50.0, 70.0, 70.0)
C: Box = (100.0, 100.0, 120.0, 120.0)


def test_iou_when_boxes_overlap_partly_or_not_at_all() -> None:
    assert iou(A, A) == 1.0
    assert iou(A, A2) == pytest.approx(90 / 110)
    assert iou(A, B) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_match_boxes_when_greedy_takes_highest_iou_first() -> None:
    prod = [Item(0, "x", 1.0, A), Item(0, "y", 1.0, B)]
    cand = [Item(0, "y", 1.0, B), Item(0, "x", 1.0, A2), Item(0, "z", 1.0, C)]
    pairs, missed, extra = match_boxes(prod, cand, 0.5)
    assert pairs == [(0, 1), (1, 0)]
    assert missed == [] and extra == [2]


@pytest.mark.parametrize(
    ("prod", "cand", "agree", "disagreement", "flips", "counts"),
    [
        # identical boxes and labels
        ([("2", 0.9, A), ("7", 0.8, B)], [("2", 0.9, A), ("7", 0.8, B)], True, 0.0,
         [("2", "2"), ("7", "7")], (2, 2, 0, 0)),
        # two labels swapped
        ([("2", 0.9, A), ("7", 0.8, B)], [("7", 0.9, A), ("2", 0.8, B)], False, 1.0,
         [("2", "7"), ("7", "2")], (2, 0, 0, 0)),
        # one box missed by the candidate, one extra
        ([("2", 0.9, A), ("7", 0.8, B)], [("2", 0.9, A2), ("1", 0.5, C)], False, 2 / 3,
         [("2", "2"), ("7", NONE_LABEL), (NONE_LABEL, "1")], (1, 1, 1, 1)),
        # below the IoU threshold: missed + extra, not a match
        ([("2", 0.9, A)], [("2", 0.9, (5.0, 5.0, 15.0, 15.0))], False, 1.0,
         [("2", NONE_LABEL), (NONE_LABEL, "2")], (0, 0, 1, 1)),
        # nothing on either side agrees
        ([], [], True, 0.0, [], (0, 0, 0, 0)),
    ],
)  # fmt: skip
def test_compare_boxes_when_candidate_differs(
    prod: list[tuple[str, float, Box]],
    cand: list[tuple[str, float, Box]],
    agree: bool,
    disagreement: float,
    flips: list[tuple[str, str]],
    counts: tuple[int, int, int, int],
) -> None:
    cmp = compare(_pred(prod), _pred(cand), 0.5)  # type: ignore[arg-type]
    assert cmp.agree is agree
    assert cmp.disagreement == pytest.approx(disagreement)
    assert sorted(cmp.flips) == sorted(flips)
    assert (cmp.matched, cmp.label_agree, cmp.missed, cmp.extra) == counts
    assert 0.0 <= cmp.disagreement <= 1.0


@pytest.mark.parametrize(
    ("prod", "cand", "agree"),
    [("cat", "cat", True), ("cat", "dog", False)],
)
def test_compare_top1_when_whole_frame_classifier(prod: str, cand: str, agree: bool) -> None:
    p = _pred([(prod, 0.9, None)], "classification")
    c = _pred([(cand, 0.6, None)], "classification")
    cmp = compare(p, c)
    assert cmp.kind == "classification" and cmp.agree is agree
    assert cmp.flips == [(prod, cand)]
    assert cmp.confidence_deltas == [pytest.approx(-0.3)]
    assert cmp.candidate_labels == [cand]
    assert cmp.shadow_field("digits", 2)["disagreement"] == (0.0 if agree else 1.0)


def test_stats_add_when_frames_accumulate_counts_matrix_and_histograms() -> None:
    s = ShadowStats()
    same = compare(_pred([("2", 0.9, A)]), _pred([("2", 0.95, A)]))
    flip = compare(_pred([("2", 0.9, A)]), _pred([("7", 0.5, A)]))
    for cmp in (same, same, flip):
        s.add(cmp)
    assert (s.compared, s.agreed) == (3, 2)
    assert s.agreement == pytest.approx(2 / 3)
    assert s.flip_matrix == {"2": {"2": 2, "7": 1}}
    assert s.flips_only() == {"2": {"7": 1}}
    assert s.confidence_delta.n == 3 and sum(s.confidence_delta.counts) == 3
    assert s.latency_ms["production"]["det"].n == 3
    assert s.latency_ms["candidate"]["total"].n == 3
    merged = ShadowStats()
    merged.merge(s)
    merged.merge(ShadowStats.model_validate_json(s.model_dump_json()))
    assert merged.compared == 6 and merged.flip_matrix == {"2": {"2": 4, "7": 2}}
    assert merged.latency_ms["production"]["det"].n == 6


def test_histogram_when_values_hit_edges_and_quantiles() -> None:
    h = Histogram.empty(CONFIDENCE_EDGES)
    for v in (-1.0, -0.5, 0.0, 0.0, 0.7):
        h.add(v)
    assert h.counts[0] == 1  # below the first edge
    assert h.counts[1] == 1  # [-0.5, -0.2)
    assert h.counts[-1] == 1  # >= 0.5
    assert h.quantile(0.5) == 0.01
    assert h.mean == pytest.approx(-0.16)
    with pytest.raises(ValueError):
        h.merge(Histogram.empty([0.0]))
