"""Each strategy ranks constructed frames in the order its definition promises."""

from __future__ import annotations

import math

import pytest

from runtime.pipeline.prediction import Item, Prediction, StageResult
from runtime.sampling import NO_ITEMS_SCORE, REGISTRY, StrategyOptions
from runtime.sampling.entropy import EntropyStrategy
from runtime.sampling.least_confidence import LeastConfidenceStrategy
from runtime.sampling.margin import MarginStrategy
from runtime.sampling.random import RandomStrategy

UNCERTAINTY = ["margin", "entropy", "least_confidence"]


def item(vector: list[float] | None, score: float | None = None) -> Item:
    s = score if score is not None else (max(vector) if vector else 0.0)
    return Item(class_id=0, label="0", score=s, scores=vector)


def frame(*vectors: list[float] | None, error: str | None = None) -> Prediction:
    items = [item(v) for v in vectors]
    return Prediction(
        frame_id="f",
        stages={"digits": StageResult("digits", "classification", items, 1.0)},
        error=error,
    )


def ranked(strategy_name: str, frames: dict[str, Prediction]) -> list[str]:
    s = REGISTRY[strategy_name](StrategyOptions())
    return sorted(frames, key=lambda k: s.score(frames[k]), reverse=True)


def test_margin_ranks_frames_when_top_two_classes_are_closer() -> None:
    frames = {
        "confident": frame([0.98, 0.01, 0.01]),
        "medium": frame([0.6, 0.3, 0.1]),
        "tie": frame([0.45, 0.45, 0.10]),
    }
    assert ranked("margin", frames) == ["tie", "medium", "confident"]
    assert MarginStrategy().score(frames["tie"]) == pytest.approx(1.0)
    assert MarginStrategy().score(frames["confident"]) == pytest.approx(0.03)


def test_entropy_ranks_frames_when_mass_is_spread_over_more_classes() -> None:
    frames = {
        "one_hot": frame([1.0, 0.0, 0.0, 0.0]),
        "two_way": frame([0.5, 0.5, 0.0, 0.0]),
        "uniform": frame([0.25, 0.25, 0.25, 0.25]),
    }
    assert ranked("entropy", frames) == ["uniform", "two_way", "one_hot"]
    assert EntropyStrategy().score(frames["uniform"]) == pytest.approx(1.0)
    assert EntropyStrategy().score(frames["one_hot"]) == pytest.approx(0.0)
    assert EntropyStrategy().score(frames["two_way"]) == pytest.approx(0.5)


def test_margin_and_entropy_disagree_when_a_tie_meets_a_long_tail() -> None:
    frames = {"tie": frame([0.5, 0.5, 0.0, 0.0]), "tail": frame([0.4, 0.2, 0.2, 0.2])}
    assert ranked("margin", frames) == ["tie", "tail"]
    assert ranked("entropy", frames) == ["tail", "tie"]


def test_least_confidence_ranks_frames_when_top_class_is_weaker() -> None:
    frames = {
        "sure": frame([0.9, 0.1]),
        "unsure": frame([0.6, 0.4]),
        "lost": frame([0.34, 0.33, 0.33]),
    }
    assert ranked("least_confidence", frames) == ["lost", "unsure", "sure"]
    assert LeastConfidenceStrategy().score(frames["sure"]) == pytest.approx(0.1)


@pytest.mark.parametrize("name", UNCERTAINTY)
def test_uncertainty_scores_half_when_frame_has_no_items(name: str) -> None:
    s = REGISTRY[name](StrategyOptions())
    assert s.score(frame()) == NO_ITEMS_SCORE == 0.5
    assert s.score(Prediction(frame_id="empty")) == 0.5  # no stages at all


@pytest.mark.parametrize("name", [*UNCERTAINTY, "random"])
def test_strategy_scores_zero_when_frame_has_an_error(name: str) -> None:
    s = REGISTRY[name](StrategyOptions())
    assert s.score(frame([0.5, 0.5], error="cannot decode")) == 0.0


@pytest.mark.parametrize(
    ("reducer", "expected"),
    [("max", 1.0), ("min", 0.02), ("mean", 0.51)],
)
def test_margin_combines_items_when_reducer_is(reducer: str, expected: float) -> None:
    f = frame([0.99, 0.01], [0.5, 0.5])  # one certain digit, one coin flip
    s = REGISTRY["margin"](StrategyOptions(reducer=reducer))  # type: ignore[arg-type]
    assert s.score(f) == pytest.approx(expected)


def test_margin_reads_final_stage_when_pipeline_has_several_stages() -> None:
    box = (0.0, 0.0, 10.0, 10.0)
    det = StageResult("det", "detection", [Item(0, "digit", 0.99, box=box)], 1.0)
    cls = StageResult("cls", "classification", [item([0.5, 0.5])], 1.0)
    p = Prediction(frame_id="f", stages={"det": det, "cls": cls})
    assert MarginStrategy().score(p) == pytest.approx(1.0)


def test_margin_reads_binary_decision_when_item_has_no_score_vector() -> None:
    sure = frame(None)
    sure.stages["digits"].items = [item(None, score=0.95)]
    flip = frame(None)
    flip.stages["digits"].items = [item(None, score=0.5)]
    assert MarginStrategy().score(flip) == pytest.approx(1.0)
    assert MarginStrategy().score(sure) == pytest.approx(0.1)


@pytest.mark.parametrize("name", UNCERTAINTY)
@pytest.mark.parametrize(
    "vector",
    [[math.nan, 0.2], [-1.0, 2.0], [0.0, 0.0, 0.0], [1.0], [], [1e300, 1e300]],
)
def test_uncertainty_stays_in_unit_range_when_vector_is_odd(name: str, vector: list[float]) -> None:
    v = REGISTRY[name](StrategyOptions()).score(frame(vector))
    assert 0.0 <= v <= 1.0


def test_random_repeats_sequence_when_seed_is_the_same() -> None:
    a, b, c = RandomStrategy(7), RandomStrategy(7), RandomStrategy(8)
    f = frame([0.9, 0.1])
    seq_a = [a.score(f) for _ in range(20)]
    assert seq_a == [b.score(f) for _ in range(20)]
    assert seq_a != [c.score(f) for _ in range(20)]
    assert all(0.0 <= v < 1.0 for v in seq_a)
    assert len(set(seq_a)) == 20


def test_random_scores_empty_frames_like_any_when_no_items() -> None:
    r = RandomStrategy(1)
    values = [r.score(frame()) for _ in range(200)]
    assert 0.3 < sum(values) / len(values) < 0.7
